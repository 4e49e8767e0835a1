"""The store on Redis Cluster: one request's keys in one slot, events split into per-slot steps
that survive a failure between the steps (injected on every back end, and a real primary
killed on the cluster), and publish seen atomically by readers."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis_fixtures import *  # noqa: F403
from test_store import HALF_LIFE, World, _new_events, assert_global_equal, assert_user_equal, world  # noqa: F401

from homepage.domain import Event
from homepage.settings import Settings, SettingsError, get_settings
from homepage.store import Keyspace, RedisStore, StoreError, StoreUnavailable, cluster_nodes, cluster_options
from homepage.store.cluster import LazyCluster


# ---------------------------------------------------------------- keys and slots
def _slots(client: Any, keys: list[str]) -> set[int]:
    """The slots the server computes for ``keys`` (CLUSTER KEYSLOT)."""
    return {int(client.cluster_keyslot(k)) for k in keys}


def test_one_requests_keys_share_one_slot(cluster_client: Any) -> None:
    k = Keyspace("hp")
    for u in (0, 1, 42, 10**12):
        user = [k.hist("v1", u), k.profile("v1", u), k.api_profile(u), k.page("v1", u), k.hist("v2", u)]
        user += [k.idempotency(u, "abc12345"), k.outbox(u), k.seq(u), k.attempt(u, "t")]
        assert len(_slots(cluster_client, user)) == 1, u
    control = [k.active, k.versions, k.all_versions, k.retired_at, k.meta("v1"), k.lease("v1"), k.meta("v2")]
    assert len(_slots(cluster_client, control)) == 1
    world_keys = [k.glob("v1", n) for n in ("counts", "decayed", "rating_sum", "rating_count")]
    world_keys += [k.region("v1", "EU", "counts"), k.region("v1", "US", "decayed"), k.regions("v1"), k.users("v1")]
    world_keys += [k.glob("v2", "counts"), k.events, k.applied]
    assert len(_slots(cluster_client, world_keys)) == 1
    # users spread over the slots; another prefix's control and global data live elsewhere
    assert len(_slots(cluster_client, [k.hist("v1", u) for u in range(200)])) > 150
    assert _slots(cluster_client, [Keyspace("other").active]) != _slots(cluster_client, [k.active])


def test_a_cross_slot_transaction_is_refused(cluster_client: Any) -> None:
    """Why the steps exist: the cluster refuses one MULTI/EXEC over a user's and the world's keys."""
    import redis

    k = Keyspace("tcross")
    pipe = cluster_client.pipeline(transaction=True)
    pipe.append(k.hist("v", 1), b"x")
    pipe.hincrby(k.glob("v", "counts"), "10", 1)
    with pytest.raises((redis.exceptions.RedisClusterException, redis.ResponseError), match="slot"):
        pipe.execute()


def test_cluster_urls() -> None:
    assert cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001") == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert cluster_nodes("redis+cluster://h:1/") == [("h", 1)]
    for bad in ("redis+cluster://", "redis+cluster://host", "redis+cluster://h:x"):
        with pytest.raises(StoreError, match="host:port"):
            cluster_nodes(bad)
    assert Settings(redis_url="redis+cluster://h:1").redis_cluster
    assert not Settings(redis_url="redis://h:1").redis_cluster
    with pytest.raises(ValueError, match="REDIS_URL 'http://h:1'"):
        Settings(redis_url="http://h:1")


def test_a_cluster_urls_user_password_and_tls_options_reach_the_client() -> None:
    """Managed clusters ask for a password and TLS: the user info is not part of the first host (it was, so no
    password was sent and the connection error printed it), options read as redis-py reads a one-server URL's."""
    url = "rediss+cluster://app:p%40ss@h1:7000,h2:7001/?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false"
    assert cluster_nodes(url) == [("h1", 7000), ("h2", 7001)]
    assert cluster_options(url) == {"username": "app", "password": "p@ss", "ssl": True, "ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False}
    assert cluster_options("redis+cluster://:pw@h:1") == {"password": "pw"} and cluster_options("redis+cluster://h:1") == {}
    assert Settings(redis_url=url).redis_cluster


def test_a_cluster_urls_ipv6_hosts_and_timeouts_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bracketed IPv6 host is given to the resolver bare (with its brackets no node was ever reachable), and a
    timeout in the URL's options wins over the settings' one, as in a one-server URL (it was a TypeError at the first command)."""
    import redis.cluster

    assert cluster_nodes("redis+cluster://[::1]:7000,[fd00::2]:7001") == [("::1", 7000), ("fd00::2", 7001)]
    made: dict[str, Any] = {}
    monkeypatch.setattr(redis.cluster, "RedisCluster", lambda **kw: made.update(kw))
    url = "redis+cluster://:pw@[::1]:7000/?socket_timeout=7&socket_connect_timeout=3"
    LazyCluster(url, Settings(redis_url=url))._get()
    assert [(n.host, n.port) for n in made.pop("startup_nodes")] == [("::1", 7000)]
    assert made == {"socket_timeout": 7.0, "socket_connect_timeout": 3.0, "password": "pw"}


@pytest.mark.parametrize("url", ["redis+cluster://h:1/3", "redis+cluster://:s3cret@h:1,h:2/3", "redis+cluster://h:1/?db=2"])
def test_a_cluster_url_naming_another_database_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster has database 0 only: a database in the URL was ignored, so deployments told apart by it shared one keyspace."""
    monkeypatch.setenv("REDIS_URL", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="database 0 only; keep deployments apart with HOMEPAGE_KEY_PREFIX") as e:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert "s3cret" not in str(e.value)
    assert Settings(redis_url="redis+cluster://h:1/0").redis_cluster and Settings(redis_url="redis+cluster://h:1/").redis_cluster


def test_a_password_protected_cluster_is_reached_and_a_wrong_password_never_shown(tmp_path: Path) -> None:
    """A one-node cluster with ``requirepass``, as a managed cluster has: the URL's password is sent, and a wrong one
    is refused without appearing in the error (the connection error named it as part of a host before)."""
    from redis_cluster import REDIS_SERVER, _free_ports

    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"no {REDIS_SERVER}")
    (port,) = _free_ports(1)
    secret = "cl-" + uuid.uuid4().hex
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--cluster-enabled", "yes",
         "--cluster-config-file", "nodes.conf", "--requirepass", secret, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        admin = redis.Redis(port=port, password=secret)
        deadline = time.monotonic() + 20
        while True:
            try:
                admin.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO") and time.monotonic() < deadline:
            time.sleep(0.05)
        admin.close()
        store = RedisStore.from_url(f"redis+cluster://:{secret}@127.0.0.1:{port}", "tpw")
        assert store.ping() and store.active_version() is None
        store.close()
        wrong = RedisStore.from_url(f"redis+cluster://:wrong-{secret}@127.0.0.1:{port}", "tpw")
        with pytest.raises(StoreError) as e:
            wrong.ping()
        assert secret not in str(e.value)
        wrong.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_store_unavailable_when_no_cluster_node_answers(world: World) -> None:
    down = RedisStore.from_url("redis+cluster://127.0.0.1:1", "x")  # built lazily: no error yet
    with pytest.raises(StoreUnavailable, match="redis unavailable"):
        down.read_user_state(1, 0, world.catalog, version="v1")
    with pytest.raises(StoreUnavailable):
        down.append_events([Event(user_id=1, title_id=10, kind="play", ts=1)], world.catalog)


# ---------------------------------------------------------------- a failure between the steps
class FailingStore(RedisStore):
    """A store whose event step ``fail_step`` (2: global slot, 3: outbox trim) fails once, after
    the earlier steps have committed: what a node dying between the steps does."""

    fail_step = 0

    def _step_global_slot(self, outboxes: Any, token: str, active: str | None = None) -> dict[int, int]:
        if self.fail_step == 2:
            self.fail_step = 0
            raise StoreUnavailable("injected: the global slot's node is down")
        return super()._step_global_slot(outboxes, token, active)

    def _step_trim_outboxes(self, marks: Any) -> None:
        if self.fail_step == 3:
            self.fail_step = 0
            raise StoreUnavailable("injected: the user's node went down after the global step")
        super()._step_trim_outboxes(marks)


def _failing(store: RedisStore, step: int) -> FailingStore:
    s = FailingStore(store.client, store.keys.prefix, settings=store.settings)
    s.fail_step = step
    return s


def _assert_applied_once(store: RedisStore, world: World, events: list[Event]) -> None:
    log2 = world.with_events(events)
    now = world.t + 100
    for u in {e.user_id for e in events} | {1, 2, 3}:
        assert_user_equal(store.read_user_state(u, now, world.catalog), log2.user_state(u, now))
    assert_global_equal(store.read_global_state(now, world.catalog), log2.global_state(now, HALF_LIFE))
    assert [Event.model_validate_json(e) for _, _, e in store.event_entries()] == events
    assert not list(store.client.scan_iter(match=store.keys.outbox_pattern))


@pytest.mark.parametrize("step", [2, 3])
def test_a_retry_finishes_an_interrupted_batch_exactly_once(store: RedisStore, world: World, step: int) -> None:
    world.publish(store, "v1")
    events = _new_events(world)
    keys = [f"key-{i:05d}" for i in range(len(events))]
    flaky = _failing(store, step)
    with pytest.raises(StoreUnavailable, match="injected"):
        flaky.append_events(events, world.catalog, keys)
    # step 1 committed: the users' histories have the events already
    assert len(store.read_user_state(1, world.t + 100, world.catalog)) == len(world.log.user_state(1, world.t)) + 2
    if step == 2:  # ... but not the world counters nor the stream
        assert store.event_entries() == []
    assert flaky.append_events(events, world.catalog, keys) == 0  # all duplicates, and the rest is finished
    _assert_applied_once(store, world, events)
    assert flaky.append_events(events, world.catalog, keys) == 0  # and a third try changes nothing
    _assert_applied_once(store, world, events)


def test_an_abandoned_batch_is_finished_by_the_next_event_or_gc(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    events = _new_events(world)
    with pytest.raises(StoreUnavailable):
        _failing(store, 2).append_events(events[:2], world.catalog)  # user 1, keyless, never retried
    assert store.append_events(events[2:3], world.catalog) == 1  # user 2's event does not touch user 1's outbox
    assert len(store.event_entries()) == 1
    assert store.drain_outboxes() == 1  # what gc runs
    assert store.drain_outboxes() == 0
    entries = [Event.model_validate_json(e) for _, _, e in store.event_entries()]
    assert sorted(entries, key=lambda e: e.ts) == sorted(events[:3], key=lambda e: e.ts)
    log2 = world.with_events(events[:3])
    assert_global_equal(store.read_global_state(world.t + 100, world.catalog), log2.global_state(world.t + 100, HALF_LIFE))


def test_a_leftover_for_a_deleted_version_recreates_none_of_its_keys(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    with pytest.raises(StoreUnavailable):
        _failing(store, 2).append_events(_new_events(world)[:2], world.catalog)
    world.publish(store, "v2")
    store._delete_pattern(store.keys.version_pattern("v1"))  # as gc does, had the outbox not been drained first
    store.client.srem(store.keys.all_versions, "v1")
    assert store.drain_outboxes() == 1
    assert not list(store.client.scan_iter(match=store.keys.version_pattern("v1")))
    assert len(store.event_entries()) == 2  # the stream still records the events


def test_a_resent_user_step_applies_once(store: RedisStore, world: World) -> None:
    """A client-side resend of step 1 (its reply was lost) returns the first result and writes nothing."""
    world.publish(store, "v1")
    events = _new_events(world)[:2]  # user 1, no idempotency keys
    payloads = [p for p in _payloads(store, world, events, "tok")]
    by_user = {1: [0, 1]}
    first = store._step_user_slots("v1", events, [None, None], ["", ""], payloads, by_user, "tok")
    again = store._step_user_slots("v1", events, [None, None], ["", ""], payloads, by_user, "tok")
    assert first[0] == again[0] == 2 and [e.seq for e in again[1][1]] == [e.seq for e in first[1][1]]
    marks = store._step_global_slot(again[1], "tok")
    assert store._step_global_slot(again[1], "tok") == marks  # resent step 2: nothing counted twice
    store._step_trim_outboxes(marks)
    store._step_trim_outboxes(marks)
    _assert_applied_once(store, world, events)


def _payloads(store: RedisStore, world: World, events: list[Event], token: str) -> list[str]:
    from homepage.store.records import event_payloads

    return event_payloads(events, world.catalog, "v1", store.meta("v1"), token)


def test_concurrent_retries_of_one_batch_apply_it_once(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    events = [Event(user_id=u, title_id=10 * (1 + i % 30), kind="play", ts=world.t + i, progress=0.5) for i in range(40) for u in (1, 2)]
    keys = [f"batch-{i:05d}" for i in range(len(events))]
    flaky = _failing(store, 2)
    with pytest.raises(StoreUnavailable):
        flaky.append_events(events, world.catalog, keys)
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(store.append_events(events, world.catalog, keys))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == [0, 0, 0, 0]
    log2 = world.with_events(events)
    assert_global_equal(store.read_global_state(world.t + 100, world.catalog), log2.global_state(world.t + 100, HALF_LIFE))
    assert len(store.event_entries()) == len(events)


# ---------------------------------------------------------------- the real cluster
def _cluster_store(redis_cluster: Any, cluster_client: Any, prefix: str) -> RedisStore:
    return RedisStore(cluster_client, prefix, settings=Settings(redis_url=redis_cluster.url, key_prefix=prefix))


def test_publish_is_atomic_for_readers_on_the_cluster(redis_cluster: Any, cluster_client: Any, world: World) -> None:
    """Readers polling while versions are published see one whole version at a time."""
    import uuid

    store = _cluster_store(redis_cluster, cluster_client, f"t{uuid.uuid4().hex[:10]}")
    t_old = int(np.quantile(world.log.u_ts, 0.4))
    try:
        world.publish(store, "old", t=t_old)
        expect = {
            "old": {int(u): len(world.log.user_state(int(u), t_old)) for u in world.log.user_ids},
            "new": {int(u): len(world.log.user_state(int(u), world.t)) for u in world.log.user_ids},
        }
        seen: list[tuple[str, int, int]] = []
        stop = threading.Event()

        def read() -> None:
            reader = _cluster_store(redis_cluster, cluster_client, store.keys.prefix)
            while not stop.is_set():
                v = reader.active_version()
                for u in world.log.user_ids[:5]:
                    seen.append((v, int(u), len(reader.read_user_state(int(u), world.t + 10, world.catalog, version=v))))

        th = threading.Thread(target=read)
        th.start()
        time.sleep(0.05)
        world.publish(store, "new")
        time.sleep(0.05)
        stop.set()
        th.join()
        assert {v for v, _, _ in seen} == {"old", "new"}
        assert all(n == expect[v][u] for v, u, n in seen)
    finally:
        for key in list(cluster_client.scan_iter(match=f"{store.keys.prefix}:*", count=1000)):
            cluster_client.unlink(key)


def test_events_survive_a_primary_killed_between_the_steps(redis_cluster: Any, world: World) -> None:
    """Kill the primary of the world counters' slot: step 1 commits on another node, step 2 fails;
    after the replica takes over, the client's retry finishes the batch exactly once."""
    import uuid

    def primary(store: RedisStore, key: str) -> Any:
        return redis_cluster.primary_of_slot(int(store.client.cluster_keyslot(key)))

    while True:  # a prefix whose control slot (the version pointer) is not on the node we kill
        prefix = f"t{uuid.uuid4().hex[:10]}"
        store = RedisStore.from_url(redis_cluster.url, prefix)
        global_primary = primary(store, store.keys.applied)
        if primary(store, store.keys.active) is not global_primary:
            break
        store.close()
    try:
        world.publish(store, "v1")
        users = [u for u in world.log.user_ids.tolist() if primary(store, store.keys.hist("v1", u)) is not global_primary]
        u = int(users[0])
        events = [Event(user_id=u, title_id=20, kind="play", ts=world.t + 10, progress=0.4), Event(user_id=u, title_id=30, kind="rating", ts=world.t + 11, stars=4.0)]
        keys = ["kill-00001", "kill-00002"]
        redis_cluster.wait_replicated(global_primary)  # the published counters are on its replica
        global_primary.kill()
        outcome = "acknowledged"
        try:
            store.append_events(events, world.catalog, keys)
        except StoreUnavailable:
            outcome = "refused"
            # the user's half is in (their slot lives on a live node), the world's is not
            assert len(store.read_user_state(u, world.t + 100, world.catalog)) == len(world.log.user_state(u, world.t)) + 2
        redis_cluster.wait_ok()  # the replica took over the global slot
        deadline = time.monotonic() + 30
        while True:
            try:
                n = store.append_events(events, world.catalog, keys)
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert n == 0 if outcome == "refused" else n in (0, 2)
        log2 = world.with_events(events)
        now = world.t + 100
        assert_user_equal(store.read_user_state(u, now, world.catalog), log2.user_state(u, now))
        assert_global_equal(store.read_global_state(now, world.catalog), log2.global_state(now, HALF_LIFE))
        assert [Event.model_validate_json(e) for _, _, e in store.event_entries()] == events
    finally:
        for node in redis_cluster.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.start()  # it rejoins as a replica of its successor
        redis_cluster.wait_ok()
        for key in list(store.client.scan_iter(match=f"{prefix}:*", count=1000)):
            store.client.unlink(key)
        store.close()


def test_the_api_serves_and_ingests_on_the_cluster(
    redis_cluster: Any, cluster_client: Any, serving_bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``homepage serve`` with ``REDIS_URL=redis+cluster://...``: pages, events (retried), profile, readiness."""
    import uuid

    import httpx
    import pandas as pd

    from homepage.api.app import create_app
    from homepage.api.settings import ServeSettings
    from homepage.publish import publish_dataset

    key = "test-key-" + uuid.uuid4().hex
    settings = Settings(redis_url=redis_cluster.url, key_prefix=f"t{uuid.uuid4().hex[:10]}")
    store = RedisStore.from_url(redis_cluster.url, settings.key_prefix, settings=settings)
    serve = ServeSettings(api_key=key, deadline_ms=2000, refresh_seconds=0.3, models_dir=tmp_path_factory.mktemp("unpacked"))
    try:
        version = publish_dataset(store, WORLD_SMALL, models=serving_bundle).meta.version
        u = int(pd.read_parquet(WORLD_SMALL / "users.parquet")["user_id"].iloc[3]) + 1
        with LiveServer(create_app(serve, settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
            assert http.get("/health/ready").status_code == 200
            page = http.get(f"/homepage/{u}").json()
            assert page["degraded"] is False and page["store_version"] == version and page["rows"]
            title = [t["title_id"] for row in page["rows"] for t in row["titles"]][-1]
            catalog = _catalog(store)
            ti = int(catalog.index_of(np.array([title]))[0])
            before = int(store.read_global_state(int(time.time()), catalog).counts[ti])
            ev = {"user_id": u, "title_id": title, "kind": "play", "progress": 0.4, "idempotency_key": "cluster-play-0001"}
            first = http.post("/events", json=ev, headers={"X-API-Key": key})
            retry = http.post("/events", json=ev, headers={"X-API-Key": key})
            assert first.status_code == retry.status_code == 202
            assert (first.json(), retry.json()) == ({"accepted": 1, "duplicates": 0}, {"accepted": 0, "duplicates": 1})
            again = http.get(f"/homepage/{u}")
            cw = [row for row in again.json()["rows"] if row["ranker"] == "continue_watching"]
            assert cw and title in [t["title_id"] for t in cw[0]["titles"]]
            after = int(store.read_global_state(int(time.time()), catalog).counts[ti])
            assert after == before + 1
            r = http.put(f"/users/{u}", json={"region": "EU", "favourite_genres": []}, headers={"X-API-Key": key})
            assert r.status_code == 200
            assert store.read_user_state(u, int(time.time()), catalog).region == "EU"
    finally:
        for k in list(cluster_client.scan_iter(match=f"{settings.key_prefix}:*", count=1000)):
            cluster_client.unlink(k)
        store.close()


def _catalog(store: RedisStore) -> Any:
    """The committed small world's catalog."""
    from homepage.catalog import Catalog
    from homepage.dataset import load_dataset

    ds = load_dataset(WORLD_SMALL)
    return Catalog.from_frames(ds.titles, ds.variants)


def test_events_follow_a_failover_of_the_users_node(redis_cluster: Any, world: World) -> None:
    """The client's slot map is stale after a failover: events and reads still reach the new primary."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:10]}"
    store = RedisStore.from_url(redis_cluster.url, prefix)
    try:
        world.publish(store, "v1")
        u = 1
        victim = redis_cluster.primary_of_slot(int(store.client.cluster_keyslot(store.keys.hist("v1", u))))
        assert store.append_events([Event(user_id=u, title_id=20, kind="play", ts=world.t + 1)], world.catalog, ["fo-000001"]) == 1
        redis_cluster.wait_replicated(victim)  # (the store does not WAIT: see the module docstring)
        victim.kill()
        redis_cluster.wait_ok()
        events = [Event(user_id=u, title_id=20, kind="play", ts=world.t + 1), Event(user_id=u, title_id=30, kind="play", ts=world.t + 2)]
        deadline = time.monotonic() + 30
        while True:
            try:
                n = store.append_events(events, world.catalog, ["fo-000001", "fo-000002"])
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert n == 1  # the first was applied, and replicated, before the failover
        log2 = world.with_events(events)
        now = world.t + 100
        assert_user_equal(store.read_user_state(u, now, world.catalog), log2.user_state(u, now))
        assert_global_equal(store.read_global_state(now, world.catalog), log2.global_state(now, HALF_LIFE))
    finally:
        for node in redis_cluster.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.start()
        redis_cluster.wait_ok()
        for key in list(store.client.scan_iter(match=f"{prefix}:*", count=1000)):
            store.client.unlink(key)
        store.close()
