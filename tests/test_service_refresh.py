"""The service's background refresh: the active version every time, the world state only when due (real Redis)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from homepage.publish import publish_dataset
from homepage.service import PageService, ServiceConfig
from homepage.store import RedisStore
from redis_fixtures import WORLD_SMALL


def test_world_state_is_reread_when_due_forced_or_on_a_new_version(store: RedisStore, serving_bundle: Path, tmp_path: Path) -> None:
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    svc = PageService(store, ServiceConfig(models_dir=tmp_path, world_refresh_seconds=3600))
    try:
        assert svc.refresh()
        first = svc.loaded
        assert first is not None
        # the throw-away page filled the new world's caches, so no client request pays for them
        assert (id(first.world), first.world.as_of) in first.models._stats
        assert svc.refresh() and svc.loaded is first  # not due: same world, nothing rebuilt
        assert svc.refresh(force=True) and svc.loaded.world is not first.world
        forced = svc.loaded
        svc.config = dataclasses.replace(svc.config, world_refresh_seconds=1e-6)
        assert svc.refresh() and svc.loaded.world is not forced.world and svc.loaded.models is forced.models
        svc.config = dataclasses.replace(svc.config, world_refresh_seconds=3600)
        due = svc.loaded
        publish_dataset(store, WORLD_SMALL, models=serving_bundle)  # a new version: re-read at once
        assert svc.refresh() and svc.loaded.store_version != due.store_version and svc.loaded.world is not due.world
    finally:
        svc.close()
