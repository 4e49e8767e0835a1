"""The one code path (STYLE habit 8): a page served over HTTP equals the page rebuilt offline.

Online: state read from Redis, world counters decayed to the refresh time. Offline: the
event log as of the request time and the world as of the same refresh time, through the
same ``build_page`` with the policy the API reported. On the data clock (``HOMEPAGE_CLOCK=data``)
the request time is the published state's time plus the seconds since the publish, so the
committed world (ending 2026-11-01) is served as replay sees it at its end.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_fixtures import WORLD_SMALL, LiveServer

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings
from homepage.bundle import load_bundle, train_bundle
from homepage.catalog import Catalog
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.domain import RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page
from homepage.publish import publish_dataset
from homepage.settings import Settings
from homepage.store import RedisStore


@pytest.fixture(scope="module")
def world() -> tuple[Any, EventLog]:
    ds = load_dataset(WORLD_SMALL)
    return ds, EventLog.from_frame(ds.events, Catalog.from_frames(ds.titles, ds.variants), ds.users)


@pytest.fixture(scope="module")
def stagewise_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a (tiny) stage-wise page model."""
    cfg = PipelineConfig(page=PageConfig(max_requests=20, num_rounds=3))
    return train_bundle(load_dataset(WORLD_SMALL), tmp_path_factory.mktemp("sw-models"), cfg).path


def serve_and_compare(
    bundle: Path, request: pytest.FixtureRequest, tmp_path: Path, world: tuple[Any, EventLog], expect_policy: str, clock: str = "wall"
) -> None:
    ds, log = world
    emb = request.getfixturevalue("embedded_redis")
    client = request.getfixturevalue("embedded_client")
    settings = Settings(redis_url=None, key_prefix=f"t{uuid.uuid4().hex[:10]}", embedded_dir=emb.data_dir)
    store = RedisStore(client, settings.key_prefix, settings=settings)
    meta = publish_dataset(store, WORLD_SMALL, models=bundle).meta
    models = PageModels.from_bundle(load_bundle(bundle))
    users = ds.users.set_index("user_id")
    active = [int(u) for u in log.user_ids[[0, 17, 400, len(log.user_ids) - 1]]]
    cold = [int(u) for u in users.index if int(u) not in set(log.user_ids.tolist())][:1] + [123_456_789]
    serve = ServeSettings(deadline_ms=5000, models_dir=tmp_path, refresh_seconds=60, clock=clock)
    try:
        with LiveServer(create_app(serve, settings)) as srv:
            for u in active + cold:
                for params in ({}, {"rows": 4, "cols": 6, "device": "mobile"}):
                    page = httpx.get(f"{srv.url}/homepage/{u}", params=params, timeout=30).json()
                    assert page["degraded"] is False and page["policy"] == expect_policy
                    rq = page["request"]
                    if clock == "data":  # the state's time plus the seconds since the publish started
                        assert meta.as_of <= page["world_as_of"] <= rq["now"] <= meta.as_of + time.time() - meta.created + 1
                    else:
                        assert meta.created - 1 <= rq["now"] <= time.time() + 1
                    genres: tuple[str, ...] = ()
                    if "favourite_genres" in users.columns and u in users.index and users.loc[u, "favourite_genres"] is not None:
                        genres = tuple(users.loc[u, "favourite_genres"])
                    user = log.user_state(u, rq["now"], favourite_genres=genres)
                    w = log.global_state(page["world_as_of"], meta.half_life)
                    ctx = RequestContext(u, rq["now"], rq["rows"], rq["cols"], rq["device"], rq["hour"], rq["region"])
                    offline = build_page(user, w, models, ctx, policy=page["policy"])
                    served = [(r["row_id"], r["ranker"], [t["title_id"] for t in r["titles"]]) for r in page["rows"]]
                    rebuilt = [(r.row_id, r.ranker, list(r.title_ids)) for r in offline.rows]
                    assert served == rebuilt, f"user {u} {params}"
                    assert served, f"user {u}: empty page"
    finally:
        keys = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)


def test_served_page_equals_offline_rebuild_row_ranking(serving_bundle: Path, request: pytest.FixtureRequest, tmp_path: Path, world: tuple[Any, EventLog]) -> None:
    serve_and_compare(serving_bundle, request, tmp_path, world, "row-ranking")


def test_served_page_equals_offline_rebuild_stage_wise(stagewise_bundle: Path, request: pytest.FixtureRequest, tmp_path: Path, world: tuple[Any, EventLog]) -> None:
    serve_and_compare(stagewise_bundle, request, tmp_path, world, "stage-wise")


def test_served_page_equals_offline_rebuild_on_the_data_clock(serving_bundle: Path, request: pytest.FixtureRequest, tmp_path: Path, world: tuple[Any, EventLog]) -> None:
    serve_and_compare(serving_bundle, request, tmp_path, world, "row-ranking", clock="data")
