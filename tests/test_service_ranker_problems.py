"""A ranker failing in serving: the page is still personalised, and /metrics counts the pages it was missing from."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import ClassVar

from redis_fixtures import WORLD_SMALL

from homepage.domain import CandidateRow
from homepage.publish import publish_dataset
from homepage.service import PageParams, PageService, ServiceConfig
from homepage.store import RedisStore
from rankers.base import Ranker, RankRequest


class Exploding(Ranker):
    name: ClassVar[str] = "exploding"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        raise RuntimeError("boom")


def _count(text: str, ranker: str, kind: str) -> float:
    m = re.search(rf'^homepage_ranker_problems_total\{{kind="{kind}",ranker="{ranker}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_failing_ranker_is_counted_per_page_built(store: RedisStore, serving_bundle: Path, tmp_path: Path) -> None:
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    svc = PageService(store, ServiceConfig(models_dir=tmp_path))
    try:
        assert svc.refresh() and svc.loaded is not None
        cur = svc.loaded
        broken = dataclasses.replace(cur.models, rankers=(*cur.models.rankers, Exploding()), _stats={})
        svc.loaded = dataclasses.replace(cur, models=broken)
        users = [3, 5, 8]

        async def pages() -> list[object]:
            return [await svc.page(u, PageParams()) for u in users] + [await svc.page(users[0], PageParams())]

        results = asyncio.run(pages())
        assert all(not r.degraded for r in results)  # type: ignore[attr-defined]
        assert results[-1].cache_hit  # type: ignore[attr-defined]  # a cached page was not built again: not counted again
        text = svc.metrics.render().decode()
        assert _count(text, "exploding", "failed") == len(users)
        assert _count(text, "top_n", "failed") == 0
    finally:
        svc.close()
