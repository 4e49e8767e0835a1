"""The degraded page says what the personalised one would: a region without data is noted on both."""

from __future__ import annotations

import json
from pathlib import Path

from redis_fixtures import WORLD_SMALL

from homepage.publish import publish_dataset
from homepage.service import PageParams, PageService, ServiceConfig
from homepage.store import RedisStore


def test_a_degraded_page_notes_a_region_without_data(store: RedisStore, serving_bundle: Path, tmp_path: Path) -> None:
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    svc = PageService(store, ServiceConfig(models_dir=tmp_path))
    try:
        assert svc.refresh() and svc.loaded is not None
        known = next(iter(svc.loaded.world.region_counts))
        page = json.loads(svc.fallback(7, PageParams(region="ZZ"), svc.now(svc.loaded), "deadline").body)
        assert page["degraded"] and "region 'ZZ': no regional data here, so no regional rows" in page["notes"]
        page = json.loads(svc.fallback(7, PageParams(region=known), svc.now(svc.loaded), "deadline").body)
        assert not any("region" in n for n in page["notes"])
    finally:
        svc.close()
