"""Artwork on built pages: every title gets one of its variants with a propensity, stable across visits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import load_bundle, train_bundle
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.domain import RequestContext
from homepage.eventlog import DAY, EventLog
from homepage.page import PageModels, build_page


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[EventLog, PageModels, int]:
    root: Path = tmp_path_factory.mktemp("art")
    write_world(generate_world(WorldParams(n_users=150, n_titles=120, seed=4)), root / "w")
    ds = load_dataset(root / "w")
    cfg = PipelineConfig(page=PageConfig(train_model=False))
    bundle = train_bundle(ds, root / "m", cfg)
    models = PageModels.from_bundle(load_bundle(root / "m"))
    return EventLog.from_frame(ds.events, models.catalog, ds.users), models, bundle.until


def test_every_title_gets_one_of_its_variants(setup: tuple[EventLog, PageModels, int]) -> None:
    log, models, t = setup
    assert models.artwork is not None
    u = int(log.user_ids[0])
    page = build_page(log.user_state(u, t), log.global_state(t), models, RequestContext(user_id=u, now=t), policy="template")
    assert page.rows
    for row in page.rows:
        assert len(row.variant_ids) == len(row.title_ids) == len(row.propensities)
        for tid, vid, p in zip(row.title_ids, row.variant_ids, row.propensities):
            own = {v.variant_id for v in models.catalog.variants[int(models.catalog.index_of([tid])[0])]}
            assert vid in own
            assert 0.0 < p <= 1.0


def test_choice_is_stable_across_visits_within_the_period(setup: tuple[EventLog, PageModels, int]) -> None:
    log, models, t = setup
    period = models.artwork.selector.stable_period
    start = (t // period) * period
    changed_any = False
    for u in log.user_ids[:30].tolist():
        def art(now: int) -> dict[int, str]:
            page = build_page(log.user_state(u, t), log.global_state(t), models, RequestContext(user_id=u, now=now), policy="template")
            return {tid: vid for r in page.rows for tid, vid in zip(r.title_ids, r.variant_ids)}

        first, later = art(start + 10), art(start + period - 10)
        assert first == later  # same period: same artwork for every title shown in both
        nxt = art(start + period + 10)
        changed_any |= any(nxt[k] != first[k] for k in first.keys() & nxt.keys())
    assert changed_any  # a new period re-draws exploration, so the choice can change (the test can fail)
