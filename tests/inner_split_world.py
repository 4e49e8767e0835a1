"""The committed small world with the default rankers fitted at an inner split, as page-model training sees it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.dataset import load_dataset
from homepage.eventlog import EventLog
from homepage.page import PageModels
from rankers.base import FitInput
from rankers.registry import build_rankers

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


@dataclass(frozen=True, eq=False)
class InnerSplitWorld:
    """Rankers fitted up to ``inner``; training requests come from (inner, until]."""

    log: EventLog
    models: PageModels
    inner: int
    until: int
    half_life: float


@cache
def inner_split_world() -> InnerSplitWorld:
    """World-small, rankers fitted at its 0.6 quantile, requests up to its 0.8 quantile (built once per process)."""
    ds = load_dataset(WORLD, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    cfg = PipelineConfig()
    inner, until = log.quantile_time(0.6), log.quantile_time(0.8)
    rankers = build_rankers(list(cfg.rankers))
    fit_in = FitInput(log, catalog, inner, log.global_state(inner, cfg.half_life_seconds))
    for r in rankers:
        r.fit(fit_in)
    models = PageModels("inner", cfg.config_hash(), catalog, tuple(rankers), rules=cfg.page.rules)
    return InnerSplitWorld(log, models, inner, until, cfg.half_life_seconds)
