"""The service's background refresh: the active version every time, the world state only when due (real Redis)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from redis_fixtures import WORLD_SMALL

from homepage.publish import publish_dataset
from homepage.service import PageService, ServiceConfig
from homepage.store import RedisStore


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


def test_a_world_that_fails_to_swap_in_is_retried_and_reported(
    store: RedisStore, serving_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that read the world but failed to put it in keeps the service's error up and retries at once."""
    import homepage.service as service_module

    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    svc = PageService(store, ServiceConfig(models_dir=tmp_path, world_refresh_seconds=1e-6))
    try:
        assert svc.refresh()
        first = svc.loaded
        real = service_module.FallbackPages.from_world

        def broken(*args: object, **kwargs: object) -> object:
            raise RuntimeError("bad world")

        monkeypatch.setattr(service_module.FallbackPages, "from_world", broken)
        assert not svc.refresh() and "bad world" in (svc.last_error or "") and svc.loaded is first
        svc.config = dataclasses.replace(svc.config, world_refresh_seconds=3600)
        # not due by the clock, but the failed world was never put in: it is read again, still failing
        assert not svc.refresh() and "bad world" in (svc.last_error or "") and not svc.ready
        monkeypatch.setattr(service_module.FallbackPages, "from_world", real)
        assert svc.refresh() and svc.ready and svc.loaded.world is not first.world
    finally:
        svc.close()
