"""Page-model training data built in forked worker processes equals the data built in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.dataset import load_dataset
from homepage.eventlog import EventLog
from homepage.page import PageModels
from homepage.pagebuilder.training import StageData, stage_data
from homepage.replay.protocol import ReplayProtocol, sample_requests
from rankers.base import FitInput
from rankers.registry import build_rankers

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


def test_stage_data_in_two_workers_equals_one_process() -> None:
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
    requests = sample_requests(log, ReplayProtocol(split_time=inner, requests_per_user=2, max_requests=80, seed=5), until=until)
    seen: list[int] = []
    one = stage_data(log, models, requests, cfg.half_life_seconds, 10, 10)
    two = stage_data(log, models, requests, cfg.half_life_seconds, 10, 10, progress=seen.append, workers=2)
    assert one.groups.size > 20
    assert sum(seen) == len(requests)
    assert np.all(np.diff(two.request_of_group) >= 0)  # groups in request order
    assert np.array_equal(two.groups, one.groups)
    assert np.array_equal(two.request_of_group, one.request_of_group)
    assert np.array_equal(two.y, one.y)
    assert np.array_equal(two.X, one.X, equal_nan=True)  # NaN: features undefined at that stage


def test_chunks_are_put_back_in_request_order() -> None:
    def part(owners: list[int], sizes: list[int]) -> StageData:
        n = sum(sizes)
        X = np.arange(n * 2, dtype=np.float64).reshape(n, 2) + 100 * owners[0]
        return StageData(X, np.arange(n, dtype=np.int32), np.array(sizes, np.int64), np.array(owners, np.int64))

    late, early = part([7, 7, 9], [2, 1, 3]), part([2, 4], [1, 2])
    got = StageData.in_request_order([late, early])
    assert got.request_of_group.tolist() == [2, 4, 7, 7, 9]
    assert got.groups.tolist() == [1, 2, 2, 1, 3]
    assert np.array_equal(got.X, np.concatenate([early.X, late.X]))
    assert got.y.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5]
