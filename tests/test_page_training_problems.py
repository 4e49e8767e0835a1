"""Page-model training counts the rankers that raised or broke the row contract, and refuses one that always raises."""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from inner_split_world import inner_split_world

from homepage.config import DEFAULT_RANKERS, PageConfig, PipelineConfig
from homepage.domain import CandidateRow
from homepage.eventlog import EventLog
from homepage.page import PageModels
from homepage.pagebuilder.training import StageData, page_training_requests, stage_data, train_page_model
from homepage.replay.protocol import ReplayProtocol, sample_requests
from rankers import registry
from rankers.base import Ranker, RankRequest
from rankers.registry import RankerSpec

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


class Exploding(Ranker):
    """Raises on every request."""

    name: ClassVar[str] = "exploding"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        raise RuntimeError("boom")


class OddUsersFail(Ranker):
    """Raises for users with an odd id, returns no rows for the others."""

    name: ClassVar[str] = "odd_users_fail"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        if request.user.user_id % 2:
            raise RuntimeError("odd")
        return []


@pytest.fixture(scope="module")
def inner() -> tuple[EventLog, PageModels, int, int, float]:
    """World-small with the default rankers fitted at an inner split: (log, models, inner, until, half-life)."""
    w = inner_split_world()
    return w.log, w.models, w.inner, w.until, w.half_life


def _with(models: PageModels, ranker: Ranker) -> PageModels:
    return PageModels(models.version, models.config_hash, models.catalog, (*models.rankers, ranker), rules=models.rules)


def test_training_counts_the_requests_a_ranker_failed_on(inner) -> None:  # type: ignore[no-untyped-def]
    log, models, t_inner, until, half_life = inner
    flaky = _with(models, OddUsersFail())
    model, report = train_page_model(log, flaky, t_inner, until, half_life, max_requests=120, requests_per_user=2, num_rounds=20)
    requests = page_training_requests(log, ReplayProtocol(split_time=t_inner, requests_per_user=2, max_requests=120, seed=0), until)
    odd = int(np.count_nonzero(requests.user_ids % 2))
    assert 0 < odd < len(requests)
    assert report.ranker_problems == {"odd_users_fail": {"failed": odd, "rows dropped": 0}}
    assert model.manifest["training"]["ranker_problems"] == report.ranker_problems
    _, clean = train_page_model(log, models, t_inner, until, half_life, max_requests=120, requests_per_user=2, num_rounds=20)
    assert clean.ranker_problems == {}


def test_forked_workers_report_the_same_problems(inner) -> None:  # type: ignore[no-untyped-def]
    log, models, t_inner, until, half_life = inner
    flaky = _with(models, OddUsersFail())
    requests = sample_requests(log, ReplayProtocol(split_time=t_inner, requests_per_user=2, max_requests=80, seed=5), until=until)
    one = stage_data(log, flaky, requests, half_life, 10, 10)
    two = stage_data(log, flaky, requests, half_life, 10, 10, workers=2)
    assert one.problems and two.problems == one.problems
    assert {i for i, _, _ in one.problems} == set(np.flatnonzero(requests.user_ids % 2).tolist())
    # splits keep the problems of the requests they keep
    half = np.arange(len(requests) // 2)
    assert one.subset(half).problems == {p for p in one.problems if p[0] in set(half.tolist())}


def test_a_ranker_raising_on_every_request_fails_training(inner) -> None:  # type: ignore[no-untyped-def]
    log, models, t_inner, until, half_life = inner
    with pytest.raises(ValueError, match=r"ranker exploding raised on all [\d,]+ training requests"):
        train_page_model(log, _with(models, Exploding()), t_inner, until, half_life, max_requests=60, requests_per_user=2, num_rounds=5)


def test_renamed_parts_keep_their_problems() -> None:
    part = StageData.empty(frozenset({(0, "a", "failed"), (1, "b", "rows dropped")}))
    got = StageData.in_request_order([part.with_requests(np.array([7, 3]))])
    assert got.problems == {(7, "a", "failed"), (3, "b", "rows dropped")}
    assert got.ranker_problems() == {"a": {"failed": 1, "rows dropped": 0}, "b": {"failed": 0, "rows dropped": 1}}
    assert got.groups.size == 0


# ---------------------------------------------------------------- the command line
@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module's rankers registered, as an installed plug-in would be."""
    installed = registry.registered()
    mine = {c.name: EntryPoint(name=c.name, value=f"{__name__}:{c.__name__}", group=registry.GROUP) for c in (Exploding, OddUsersFail)}
    monkeypatch.setattr(registry, "registered", lambda: {**installed, **mine})


def _train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: str) -> tuple[int, str]:
    from homepage.cli import main

    cfg = PipelineConfig(rankers=(*DEFAULT_RANKERS, RankerSpec(name=extra)), page=PageConfig(max_requests=80, num_rounds=20))
    path = tmp_path / "config.json"
    path.write_text(cfg.model_dump_json())
    monkeypatch.setattr(sys, "argv", ["homepage", "train", str(WORLD), "--out", str(tmp_path / "models"), "--config", str(path), "--workers", "1"])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_train_command_warns_about_a_flaky_ranker(plugins: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, err = _train(tmp_path, monkeypatch, capsys, "odd_users_fail")
    assert code == 0, err
    flat = " ".join(err.split())
    assert "warning: ranker odd_users_fail failed on" in flat and "page-model training requests" in flat, err
    manifest = json.loads(next((tmp_path / "models").glob("v*/manifest.json")).read_text())
    problems = manifest["components"]["page_model"]["training"]["ranker_problems"]
    assert set(problems) == {"odd_users_fail"} and problems["odd_users_fail"]["failed"] > 0


def test_train_command_refuses_a_ranker_that_always_raises(plugins: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    code, err = _train(tmp_path, monkeypatch, capsys, "exploding")
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "ranker exploding raised on all" in last, err
    assert not list((tmp_path / "models").glob("v*"))  # no bundle written
