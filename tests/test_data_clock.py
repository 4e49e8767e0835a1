"""Events on the data clock (``HOMEPAGE_CLOCK=data``), over real HTTP against real Redis.

A historical dataset (the committed world-small ends 2026-11-01) is served at its own time:
an event without a timestamp is stamped on that clock, so the user's next page counts it
(continue watching), and an event stamped on the wall clock, far after the data's time, is
refused with a message naming ``ts`` rather than stored in the data's future.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from redis_fixtures import BACKENDS, WORLD_SMALL, LiveServer, make_store
from test_api import backend_settings, drop_prefix

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings
from homepage.bundle import load_bundle
from homepage.publish import publish_dataset

API_KEY = "test-key-" + uuid.uuid4().hex


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_are_stamped_and_checked_on_the_data_clock(backend: str, request: pytest.FixtureRequest, serving_bundle: Path, tmp_path: Path) -> None:
    settings, client = backend_settings(backend, request)
    store = make_store(client, settings)
    meta = publish_dataset(store, WORLD_SMALL, models=serving_bundle).meta
    catalog = load_bundle(serving_bundle).catalog
    serve = ServeSettings(api_key=API_KEY, deadline_ms=2000, refresh_seconds=60, models_dir=tmp_path, clock="data")
    user = int(pd.read_parquet(WORLD_SMALL / "users.parquet")["user_id"].iloc[5])
    key = {"X-API-Key": API_KEY}
    try:
        with LiveServer(create_app(serve, settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
            first = http.get(f"/homepage/{user}").json()
            assert first["degraded"] is False
            title = [t["title_id"] for row in first["rows"] for t in row["titles"]][-1]

            r = http.post("/events", json={"user_id": user, "title_id": title, "kind": "play", "progress": 0.4}, headers=key)
            assert r.status_code == 202, r.text
            latest = meta.as_of + time.time() - meta.created + 1  # the service's time now, at the latest
            state = store.read_user_state(user, int(latest), catalog, meta.version)
            assert int(state.title_ids[-1]) == title
            assert meta.as_of <= int(state.ts[-1]) <= latest < meta.created  # the data's time, not the wall clock's

            after = http.get(f"/homepage/{user}").json()
            cw = [row for row in after["rows"] if row["ranker"] == "continue_watching"]
            assert cw and title in [t["title_id"] for t in cw[0]["titles"]]

            wall = http.post("/events", json={"user_id": user, "title_id": title, "kind": "play", "progress": 0.9, "ts": int(time.time())}, headers=key)
            assert wall.status_code == 422 and "ts" in wall.text and "after the server's time" in wall.text
            assert len(store.read_user_state(user, int(time.time()) + 86_400, catalog, meta.version)) == len(state)

            # a republish this worker has not followed yet runs on another clock: events wait (503) until it has
            older = publish_dataset(store, WORLD_SMALL, models=serving_bundle, at=meta.as_of - 10 * 86_400).meta
            refused = http.post("/events", json={"user_id": user, "title_id": title, "kind": "play", "progress": 0.6}, headers=key)
            assert refused.status_code == 503 and "retry-after" in refused.headers
            assert http.post("/admin/reload", headers=key).json()["store_version"] == older.version
            assert http.post("/events", json={"user_id": user, "title_id": title, "kind": "play", "progress": 0.6}, headers=key).status_code == 202
            moved = store.read_user_state(user, int(time.time()) + 86_400, catalog, older.version)
            assert older.as_of <= int(moved.ts[-1]) <= older.as_of + time.time() - older.created + 1  # the new version's clock
    finally:
        drop_prefix(client, settings.key_prefix)
