"""Backtest: folds cut at quantiles of event time, a bundle per fold, the folds pooled with intervals over users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import load_bundle
from homepage.catalog import Catalog
from homepage.cli import _register, app
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.replay.backtest import parse_quantiles, plan_folds

POLICIES = ("stage-wise", "template")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backtest")
    write_world(generate_world(WorldParams(n_users=250, n_titles=180, seed=12)), root / "world")
    cfg = PipelineConfig(page=PageConfig(max_requests=150, requests_per_user=2, num_rounds=30))
    (root / "config.json").write_text(cfg.model_dump_json())
    return root


def test_fold_quantiles_are_checked() -> None:
    assert parse_quantiles("0.5, 0.7,0.8") == (0.5, 0.7, 0.8)
    for bad in ("", "0.8,0.7", "0.5,0.5", "0,0.5", "0.5,1", "half"):
        with pytest.raises(HomepageError, match="--folds"):
            parse_quantiles(bad)


def test_backtest_trains_each_fold_at_its_cut_and_pools_the_folds(world: Path, tmp_path: Path) -> None:
    _register()
    out = tmp_path / "bt.json"
    args = ["backtest", str(world / "world"), "--out", str(tmp_path / "models"), "--folds", "0.6,0.8", "--config", str(world / "config.json"),
            "--policies", ",".join(POLICIES), "--max-requests", "60", "--bootstrap", "200", "--workers", "1", "--json", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    ds = load_dataset(world / "world")
    log = EventLog.from_frame(ds.events, Catalog.from_frames(ds.titles, ds.variants), ds.users)
    cuts = [log.quantile_time(0.6), log.quantile_time(0.8)]
    folds = report["folds"]
    assert [f["split_time"] for f in folds] == cuts and [f["until"] for f in folds] == [cuts[1], None]
    # each fold replays its own window only: after its cut, before the next one
    assert cuts[0] <= folds[0]["request_times"][0] and folds[0]["request_times"][1] < cuts[1] <= folds[1]["request_times"][0]
    for k, cut in enumerate(cuts):  # each fold's bundle saw nothing after its cut
        bundle = load_bundle(tmp_path / "models" / f"fold-{k}")
        assert bundle.until == cut and folds[k]["model_version"] == bundle.version
    pooled = report["pooled"]
    n = [f["warm_requests"] for f in folds]
    assert pooled["protocol"]["warm_requests"] == sum(n) and min(n) > 0
    assert pooled["protocol"]["folds"] == [0.6, 0.8] and pooled["protocol"]["split_time"] == cuts
    for name in POLICIES:  # the pooled mean is the folds' means weighted by their requests
        want = np.average([f["policies"][name]["ndcg_2d"] for f in folds], weights=n)
        assert pooled["policies"][name]["ndcg_2d"]["mean"] == pytest.approx(want)
    assert "stage-wise - template" in pooled["paired"]
    assert "ndcg_2d per fold" in res.output
    from homepage.provenance import dataset_sha256

    assert report["provenance"]["dataset_sha256"] == dataset_sha256(world / "world") and report["provenance"]["environment"]["blas"]


def test_folds_that_share_a_cut_are_refused(world: Path) -> None:
    ds = load_dataset(world / "world")
    log = EventLog.from_frame(ds.events, Catalog.from_frames(ds.titles, ds.variants), ds.users)
    assert [f.cut for f in plan_folds(log, (0.5, 0.8))] == [log.quantile_time(0.5), log.quantile_time(0.8)]
    with pytest.raises(HomepageError, match="share a window"):
        plan_folds(log, (0.8, 0.8000001))


def test_pooled_folds_add_up_their_ranker_problems() -> None:
    """A plug-in failing in some folds is reported over all of them, not lost in the pooling."""
    from homepage.replay.backtest import pool
    from homepage.replay.protocol import ReplayProtocol, Requests
    from homepage.replay.run import PolicyRun, ReplayResult

    def fold(problems: dict[str, dict[str, int]]) -> ReplayResult:
        requests = Requests(np.array([1], np.int64), np.array([10], np.int64), (np.array([0]),), np.array([False]))
        return ReplayResult(ReplayProtocol(split_time=0), 0, requests, {"template": PolicyRun("template")}, 5, "v", ranker_problems=problems)

    got = pool([fold({"a": {"failed": 2, "rows dropped": 0}}), fold({}), fold({"a": {"failed": 1, "rows dropped": 3}, "b": {"failed": 0, "rows dropped": 1}})])
    assert got.ranker_problems == {"a": {"failed": 3, "rows dropped": 3}, "b": {"failed": 0, "rows dropped": 1}}
