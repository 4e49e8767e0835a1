"""Replay: page metrics on hand-made pages, the temporal protocol, no leakage, and the CLI's guards."""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import train_bundle
from homepage.catalog import Catalog
from homepage.cli import _register, app
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import Dataset, load_dataset
from homepage.domain import EVENT_CODES, EventKind, RequestContext
from homepage.eventlog import DAY, EventLog
from homepage.page import PageModels, build_page
from homepage.pagebuilder.features import FEATURE_NAMES
from homepage.replay.metrics import (
    bootstrap_coverage,
    bootstrap_mean,
    discounts,
    resample_weights,
    score_page,
)
from homepage.replay.protocol import ReplayProtocol, sample_requests
from homepage.replay.run import CheckpointedWorlds

POLICIES = ("stage-wise", "row-ranking", "template", "single-list")


# ------------------------------------------------------------------ metrics
def test_ndcg_2d_and_recalls_on_a_hand_made_page() -> None:
    grid = np.array([[10, 11, 12], [13, 14, -1]])
    targets = np.array([11, 14, 99])
    genre = np.zeros((100, 3), dtype=bool)
    genre[10, 0] = genre[11, 1] = genre[13, 2] = True
    s = score_page(grid, ["a", "b"], targets, genre, np.ones(100), viewport=(1, 2))
    d = discounts(2, 3)
    # hits at (0, 1) and (1, 1); ideal: the 3 targets in the 3 best-discounted slots
    ideal = np.sort(d.ravel())[::-1][:3].sum()
    assert s.values["ndcg_2d"] == pytest.approx((d[0, 1] + d[1, 1]) / ideal)
    assert s.values["page_recall"] == pytest.approx(2 / 3)
    assert s.values["viewport_recall"] == pytest.approx(1 / 2)  # 1 hit in a 1 x 2 viewport holding 2 slots
    assert s.values["duplicates"] == 0
    assert s.values["viewport_genres"] == 2  # titles 10 and 11
    assert s.hit_rankers == ("a", "b")


def test_duplicates_are_counted() -> None:
    grid = np.array([[1, 2, 3], [3, 1, 4]])
    s = score_page(grid, ["a", "b"], np.array([7]), np.zeros((10, 1), bool), np.ones(10), viewport=(1, 1))
    assert s.values["duplicates"] == 2
    assert s.values["ndcg_2d"] == 0.0


def test_a_target_shown_twice_counts_once() -> None:
    """A policy cannot score by repeating a title: the page scores as if it showed it once, at its best slot."""
    genre, info = np.zeros((10, 1), bool), np.ones(10)
    twice = score_page(np.array([[5, 1, 5], [5, 2, 3]]), ["a", "b"], np.array([5, 9]), genre, info, viewport=(2, 2))
    once = score_page(np.array([[5, 1, -1], [-1, 2, 3]]), ["a", "b"], np.array([5, 9]), genre, info, viewport=(2, 2))
    for name in ("ndcg_2d", "viewport_recall", "page_recall"):
        assert twice.values[name] == pytest.approx(once.values[name]), name
    assert twice.values["viewport_recall"] == pytest.approx(1 / 2) and twice.values["duplicates"] == 2
    assert twice.hits_grid.sum() == 1 and twice.hits_grid[0, 0] and twice.hit_rankers == ("a",)
    # the best-discounted copy may lie outside the viewport: the viewport still holds the title once
    wide = score_page(np.array([[1, 2, 3, 5], [4, 5, 6, 7]]), ["a", "b"], np.array([5]), genre, info, viewport=(2, 2))
    assert wide.values["viewport_recall"] == pytest.approx(1.0) and wide.values["page_recall"] == pytest.approx(1.0)


def test_perfect_page_has_ndcg_one() -> None:
    grid = np.array([[5, 6], [7, 8]])
    s = score_page(grid, ["a", "a"], np.array([5, 6]), np.zeros((10, 1), bool), np.ones(10), viewport=(1, 2))
    assert s.values["ndcg_2d"] == pytest.approx(1.0)
    assert s.values["viewport_recall"] == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 50)
    big = rng.normal(1.0, 1.0, 5000)
    m, lo, hi = bootstrap_mean(small)
    assert lo < m < hi
    m2, lo2, hi2 = bootstrap_mean(big)
    assert (hi2 - lo2) < (hi - lo) / 3
    assert lo2 < 1.0 < hi2


def test_bootstrap_over_users_resamples_whole_users() -> None:
    # 100 users with 3 requests each, their requests alike (as replay's are: one rating session):
    # the sample holds 100 independent values, not 300
    rng = np.random.default_rng(2)
    per_user = rng.normal(0.0, 1.0, 100)
    values = np.repeat(per_user, 3)
    users = np.repeat(np.arange(100) * 7 + 3, 3)
    _, lo_u, hi_u = bootstrap_mean(per_user)
    m, lo_g, hi_g = bootstrap_mean(values, groups=users)
    _, lo_r, hi_r = bootstrap_mean(values)
    assert m == pytest.approx(per_user.mean())
    assert hi_g - lo_g == pytest.approx(hi_u - lo_u, rel=0.15)  # the interval of the 100 users' values
    assert hi_r - lo_r < (hi_g - lo_g) / 1.4  # request by request: about sqrt(3) too narrow
    # one request per user: the same resamples as request by request
    assert bootstrap_mean(per_user, groups=np.arange(100)) == pytest.approx(bootstrap_mean(per_user), abs=1e-12)
    # a resample keeps or drops a user's requests together
    w = resample_weights(300, 50, 0, users)
    assert (w.reshape(50, 100, 3) == w.reshape(50, 100, 3)[:, :, :1]).all()
    assert (w.sum(axis=1) % 3 == 0).all() and w.shape == (50, 300)


def test_coverage_over_no_requests_is_null_in_the_json_like_every_other_metric(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from homepage.strict_json import write_json

    p, lo, hi = bootstrap_coverage([], 1000)
    write_json(tmp_path / "r.json", {"coverage": {"mean": p, "ci": [lo, hi]}}, "--json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"coverage": {"mean": None, "ci": [None, None]}}


def test_coverage_interval_contains_the_point() -> None:
    rng = np.random.default_rng(1)
    shown = [rng.choice(1000, 20, replace=False) for _ in range(200)]
    p, lo, hi = bootstrap_coverage(shown, 1000)
    assert lo <= p <= hi
    assert p == pytest.approx(np.unique(np.concatenate(shown)).size / 1000)
    # each user shown the same titles at all 4 of their requests: resampling users widens the interval
    users = np.repeat(np.arange(50), 4)
    same = [shown[u] for u in users]
    pg, lo_g, hi_g = bootstrap_coverage(same, 1000, groups=users)
    pr, lo_r, hi_r = bootstrap_coverage(same, 1000)
    assert pg == pr and lo_g <= pg <= hi_g
    assert hi_g - lo_g > 1.3 * (hi_r - lo_r)


def test_ndcg_2d_discounts_rows_and_columns_by_log2_of_position_plus_two() -> None:
    """One target alone at row r, column c scores 1 / (log2(r + 2) * log2(c + 2)): its ideal page has it at (0, 0), worth 1."""
    genre, info = np.zeros((10, 1), bool), np.ones(10)
    for r, c in [(0, 2), (2, 0), (1, 1), (2, 2)]:
        grid = np.full((3, 3), -1)
        grid[r, c] = 7
        s = score_page(grid, ["a", "b", "c"], np.array([7]), genre, info, viewport=(3, 3))
        assert s.values["ndcg_2d"] == pytest.approx(1 / (math.log2(r + 2) * math.log2(c + 2))), (r, c)


def test_recalls_count_only_their_slots_and_title_zero_is_a_title() -> None:
    """Viewport recall: hits inside the viewport over min(|targets|, its slots); page recall: over min(|targets|, the page's)."""
    grid = np.array([[0, 1, 2], [3, 4, 5]])  # catalog index 0 is a title like any other (-1 is the empty slot)
    targets = np.array([0, 2, 5, 8, 9, 10, 11, 12])  # more targets than the page has slots
    s = score_page(grid, ["a", "b"], targets, np.zeros((20, 1), bool), np.ones(20), viewport=(1, 2))
    assert s.values["viewport_recall"] == pytest.approx(1 / 2)  # title 0 in the 1 x 2 viewport; 2 is just right of it
    assert s.values["page_recall"] == pytest.approx(3 / 6)  # 3 hits; the page could hold 6 at most
    assert s.hits_grid.tolist() == [[True, False, True], [False, False, True]]


def test_bootstrap_interval_is_the_central_95_percent() -> None:
    """The interval of a mean of n normal values is about mean +- 1.96 sd / sqrt(n), resampling values or groups."""
    v = np.random.default_rng(4).normal(0.0, 1.0, 2000)
    se = v.std() / math.sqrt(v.size)
    for groups in (None, np.arange(v.size)):
        m, lo, hi = bootstrap_mean(v, n_boot=2000, groups=groups)
        assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.08)
        assert (m - lo) == pytest.approx(hi - m, rel=0.2)


def test_bootstrap_over_groups_of_unequal_size_averages_each_resample() -> None:
    """A resample's mean is over the requests it holds: equal values give that value, whatever the groups' sizes."""
    groups = np.repeat(np.arange(6), [1, 5, 2, 9, 1, 3])
    assert bootstrap_mean(np.full(groups.size, 0.3), n_boot=200, groups=groups) == pytest.approx((0.3, 0.3, 0.3))


def test_resampling_groups_keeps_a_users_requests_together_wherever_they_are() -> None:
    users = np.tile(np.array([5, 3, 9, 1]), 4)  # each user's requests spread over the sample, users unsorted
    w = resample_weights(users.size, 50, 0, users)
    for u in np.unique(users):
        cols = w[:, users == u]
        assert (cols == cols[:, :1]).all(), u
    assert not (w == w[:, :1]).all()  # users are drawn differently: the test can fail



def test_resample_weights_are_drawn_once_per_key_and_equal_a_fresh_draw() -> None:
    """Kept weights are the draw a fresh generator makes (one resample after another), read-only, and keyed by every input."""

    def fresh(n: int, n_boot: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if groups is None:
            return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
        _, codes = np.unique(groups, return_inverse=True)
        g = int(codes.max()) + 1
        return np.stack([np.bincount(rng.integers(0, g, g), minlength=g) for _ in range(n_boot)])[:, codes]

    rng = np.random.default_rng(8)
    for _ in range(20):
        n, n_boot, seed = int(rng.integers(1, 60)), int(rng.integers(1, 40)), int(rng.integers(0, 3))
        groups = None if rng.random() < 0.3 else rng.integers(0, max(1, n // 2), n).astype(rng.choice([np.int32, np.int64]))
        w = resample_weights(n, n_boot, seed, groups)
        assert np.array_equal(w, fresh(n, n_boot, seed, groups))
        assert resample_weights(n, n_boot, seed, None if groups is None else groups.copy()) is w  # drawn once
        assert not w.flags.writeable
    labels = np.array(["b", "a", "b", "c"])
    assert np.array_equal(resample_weights(4, 30, 1, labels), fresh(4, 30, 1, labels))  # labels that are not numbers: drawn each time
    other = np.array([1, 0, 1, 2])
    assert np.array_equal(resample_weights(4, 30, 1, other), fresh(4, 30, 1, other))
    assert not np.array_equal(resample_weights(4, 30, 1, other), resample_weights(4, 30, 2, other))  # the seed is in the key

# ------------------------------------------------------------------ a tiny world, fitted
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("replay")
    write_world(generate_world(WorldParams(n_users=250, n_titles=180, seed=11)), root / "world")
    ds = load_dataset(root / "world")
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    split = log.quantile_time(0.8)
    page = PageConfig(max_requests=150, requests_per_user=2, num_rounds=30)
    bundle = train_bundle(ds, root / "models", PipelineConfig(page=page), until=split)
    return {"root": root, "ds": ds, "log": log, "split": split, "bundle": bundle, "models": PageModels.from_bundle(bundle)}


def test_requests_follow_the_protocol(world: dict[str, object]) -> None:
    log: EventLog = world["log"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    proto = ReplayProtocol(split_time=split, horizon_days=10, requests_per_user=2, seed=3)
    req = sample_requests(log, proto)
    assert len(req) > 20
    assert (req.times >= split).all()
    again = sample_requests(log, proto)
    assert np.array_equal(req.user_ids, again.user_ids) and np.array_equal(req.times, again.times)
    for u, t, tgt in zip(req.user_ids, req.times, req.targets):
        seen = set(log.user_state(int(u), int(t)).title_idx.tolist())
        later = set(log.after(int(u), int(t), horizon=10 * DAY).tolist())
        assert set(tgt.tolist()) == later - seen and tgt.size > 0


def _pages(log: EventLog, models: PageModels, user: int, t: int) -> list[list[list[int]]]:
    world_state = log.global_state(t)
    state = log.user_state(user, t)
    ctx = RequestContext(user_id=user, now=t, rows=8, cols=8)
    return [build_page(state, world_state, models, ctx, policy=p).grid() for p in POLICIES]


def test_events_after_t_change_no_page(world: dict[str, object]) -> None:
    """No leakage: adding or changing any event after t leaves every policy's page as it was."""
    log: EventLog = world["log"]  # type: ignore[assignment]
    ds = world["ds"]
    models: PageModels = world["models"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    events: pd.DataFrame = ds.events  # type: ignore[attr-defined]
    catalog = models.catalog
    req = sample_requests(log, ReplayProtocol(split_time=split, requests_per_user=1, max_requests=6, seed=5))
    rng = np.random.default_rng(0)
    for u, t in zip(req.user_ids.tolist(), req.times.tolist()):
        before = _pages(log, models, u, t)
        later = events["ts"] > t
        changed = events.copy()
        # rewrite every later event: other titles, other kinds, other users' too
        changed.loc[later, "title_id"] = rng.choice(catalog.title_ids, int(later.sum()))
        changed.loc[later, "kind"] = EVENT_CODES[EventKind.PLAY]
        changed.loc[later, "progress"] = 0.5
        extra = pd.DataFrame(
            {
                "user_id": np.full(50, u),
                "title_id": rng.choice(catalog.title_ids, 50),
                "kind": EVENT_CODES[EventKind.PLAY],
                "ts": t + 1 + rng.integers(0, 30 * DAY, 50),
                "progress": 0.4,
                "stars": np.nan,
            }
        )
        perturbed = pd.concat([changed, extra], ignore_index=True).sort_values("ts", kind="stable")
        log2 = EventLog.from_frame(perturbed, catalog, ds.users)  # type: ignore[attr-defined]
        assert _pages(log2, models, u, t) == before
        # and the perturbation does change pages when it is visible (the test can fail)
        assert _pages(log2, models, u, t + 31 * DAY) != _pages(log, models, u, t + 31 * DAY)


def test_every_policy_page_has_no_duplicates(world: dict[str, object]) -> None:
    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    req = sample_requests(log, ReplayProtocol(split_time=world["split"], requests_per_user=1, max_requests=20, seed=2))  # type: ignore[arg-type]
    for u, t in zip(req.user_ids.tolist(), req.times.tolist()):
        for grid in _pages(log, models, u, t):
            flat = [x for row in grid for x in row]
            assert len(flat) == len(set(flat)) and len(flat) > 0


def test_replay_cli_writes_json_and_report(world: dict[str, object], tmp_path: Path) -> None:
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        ["replay", str(root / "world"), "--models", str(root / "models"), "--json", str(out), "--report", str(tmp_path / "rep"),
         "--max-requests", "60", "--bootstrap", "200", "--rows", "6", "--cols", "6"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report["policies"]) == set(POLICIES)
    for name, metrics in report["policies"].items():
        assert metrics["duplicates"]["mean"] == 0, name
        lo, hi = metrics["ndcg_2d"]["ci"]
        assert lo <= metrics["ndcg_2d"]["mean"] <= hi
    assert "stage-wise - template" in report["paired"]
    assert (tmp_path / "rep" / "README.md").is_file() and (tmp_path / "rep" / "hit_heatmaps.png").stat().st_size > 1000
    # where each ranker's rows land: a 6-row page has 6 rows in all, each first row within it
    for name, metrics in report["policies"].items():
        placed = metrics["ranker_rows"]
        assert sum(v["rows_per_page"] for v in placed.values()) == pytest.approx(6.0), name
        assert all(0 < v["page_share"] <= 1 and 1 <= v["mean_first_row"] <= 6 for v in placed.values()), name
    assert "Where each ranker's rows are placed" in (tmp_path / "rep" / "README.md").read_text()
    # every ranker with rows has a hit share, 0.0 when none of its titles was a target ("Continue watching":
    # targets leave out titles seen by t)
    for name, metrics in report["policies"].items():
        share = metrics["ranker_hit_share"]
        assert set(metrics["ranker_rows"]) <= set(share) and sum(share.values()) == pytest.approx(1.0), name
    assert report["policies"]["template"]["ranker_hit_share"]["continue_watching"] == 0.0
    # resumed titles: the template pins "Continue watching" first; the single list has no such row
    resumes = {name: m["resume_recall"] for name, m in report["policies"].items()}
    assert resumes["template"]["requests"] > 0 and resumes["template"]["mean"] > 0.3
    assert resumes["single-list"]["mean"] == 0.0
    assert report["paired"]["template - single-list"]["resume_recall"]["ci"][0] > 0
    assert "Resumed titles shown on the page" in (tmp_path / "rep" / "README.md").read_text()


def test_replay_says_when_the_bundle_stops_long_before_the_split(world: dict[str, object]) -> None:
    """A bundle trained months before the split gave figures with no word that the events between were never used."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    later = split + 35 * DAY
    args = ["replay", str(root / "world"), "--models", str(root / "models"), "--policies", "template", "--max-requests", "30", "--bootstrap", "100"]
    res = CliRunner().invoke(app, [*args, "--split-time", str(later)])
    assert res.exit_code == 0, res.output
    assert re.search(r"warning: --models: bundle \S+ was trained up to \d{4}-\d\d-\d\d, 35 days before the split \d{4}-\d\d-\d\d: the [\d,]+ events between are neither trained on nor replayed", res.output), res.output
    res = CliRunner().invoke(app, [*args, "--split-time", str(split + 3 * DAY)])  # within the horizon: no warning
    assert res.exit_code == 0 and "neither trained on nor replayed" not in res.output, res.output


def test_replay_names_a_ranker_that_put_no_row_on_any_page(world: dict[str, object], tmp_path: Path) -> None:
    """On implicit-feedback data video_to_video proposed nothing and replay showed it as contributing nothing, silently."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    ds: Dataset = world["ds"]  # type: ignore[assignment]
    rankers = PipelineConfig().model_dump()["rankers"]
    for r in rankers:
        if r["name"] == "video_to_video":
            r["config"]["max_rows"] = 0  # as a ranker whose data gives it nothing to propose
    config = PipelineConfig.model_validate({"rankers": rankers, "page": {"train_model": False}})
    train_bundle(ds, tmp_path / "models", config, until=split)
    args = ["replay", str(root / "world"), "--models", str(tmp_path / "models"), "--policies", "template", "--max-requests", "30", "--bootstrap", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "warning: ranker video_to_video put no row on any replayed page: it proposed none, or none won a place" in res.output, res.output
    assert "ranker personalized put no row" not in res.output and "ranker continue_watching put no row" not in res.output
    # the single list shows the personalised ranker's list alone: it says nothing of the other rankers' rows
    res = CliRunner().invoke(app, [*args[:-6], "--policies", "single-list", "--max-requests", "30", "--bootstrap", "100"])
    assert res.exit_code == 0 and "put no row" not in res.output, res.output


def test_explain_rebuilds_a_served_page_on_its_world_as_of(world: dict[str, object], tmp_path: Path) -> None:
    """The API builds on the world of its last refresh (the page's world_as_of), not on the hour replay rounds to:
    a page whose world had events since the hour could not be rebuilt by explain."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    bundle = world["bundle"]
    half_life = bundle.config.half_life_seconds  # type: ignore[attr-defined]
    hourly = CheckpointedWorlds(log, half_life, ReplayProtocol().world_granularity)
    reqs = sample_requests(log, ReplayProtocol(split_time=world["split"], requests_per_user=1))  # type: ignore[arg-type]

    def ids(page) -> list[list[int]]:  # type: ignore[no-untyped-def]
        return [list(r.title_ids) for r in page.rows]

    for uid, t in zip(reqs.user_ids.tolist(), reqs.times.tolist()):
        ctx = RequestContext(user_id=uid, now=t, rows=10, cols=10)
        served = build_page(log.user_state(uid, t), log.global_state(t, half_life), models, ctx)  # world refreshed at t
        if ids(served) != ids(build_page(log.user_state(uid, t), hourly.at(t), models, ctx)):
            break
    else:
        pytest.fail("no request whose page moves with the world's last hour")
    out = tmp_path / "explain.json"
    base = ["explain", str(root / "world"), "--models", str(root / "models"), "--user", str(uid), "--at", str(t)]
    res = CliRunner().invoke(app, [*base, "--world-at", str(t), "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert [[x["title_id"] for x in r["titles"]] for r in got["rows"]] == ids(served) and got["world_as_of"] == t
    res = CliRunner().invoke(app, [*base, "--world-at", str(t + 1)])
    assert res.exit_code != 0 and "--world-at" in str(res.exception), res.output
    base[1] = str(tmp_path / "not-loaded")  # refused before the dataset is read
    res = CliRunner().invoke(app, [*base, "--world-at", str(t + 1)])
    assert res.exit_code != 0 and "--world-at" in str(res.exception), res.exception


def test_replay_json_says_what_its_figures_came_from(world: dict[str, object], tmp_path: Path) -> None:
    """The bundle's version alone did not give the dataset replayed, the code or the BLAS kernels, which move the figures."""
    import lightgbm

    from homepage.provenance import dataset_sha256

    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    out = tmp_path / "replay.json"
    args = ["replay", str(root / "world"), "--models", str(root / "models"), "--policies", "template", "--max-requests", "30", "--bootstrap", "100"]
    res = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())["provenance"]
    assert got["dataset"] == str((root / "world").resolve()) and got["dataset_sha256"] == dataset_sha256(root / "world")
    assert got["git_dirty"] in (True, False, None) and (got["git_dirty"] is None) == (got["git_commit"] is None)
    assert got["environment"]["packages"]["lightgbm"] == lightgbm.__version__ and got["environment"]["blas"]


def test_replay_refuses_a_bundle_trained_past_the_split(world: dict[str, object]) -> None:
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    res = CliRunner().invoke(app, ["replay", str(root / "world"), "--models", str(root / "models"), "--split-time", str(split - 10 * DAY)])
    assert res.exit_code != 0
    assert "after the split" in str(res.exception or res.output)


def test_unknown_policy_is_refused_with_the_known_names(world: dict[str, object]) -> None:
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    res = CliRunner().invoke(app, ["replay", str(root / "world"), "--models", str(root / "models"), "--policies", "template,nope"])
    assert res.exit_code != 0
    msg = str(res.exception or res.output)
    assert msg.startswith("--policies: unknown policy 'nope'") and "stage-wise" in msg
    from homepage.cli.replay import parse_policies

    assert parse_policies("template, template,single-list") == ["template", "single-list"]  # each page built once


def test_replay_takes_the_page_shape_from_the_bundles_config(world: dict[str, object], tmp_path: Path) -> None:
    """train and backtest read page.rows/cols from the config; replay defaulted to 10 x 10 whatever it said."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    config = PipelineConfig.model_validate({"page": {"rows": 3, "cols": 4, "train_model": False}})
    small = train_bundle(load_dataset(root / "world"), tmp_path / "models", config, until=split)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["replay", str(root / "world"), "--models", str(small.path), "--policies", "template", "--max-requests", "20", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert (json.loads(out.read_text())["protocol"]["rows"], json.loads(out.read_text())["protocol"]["cols"]) == (3, 4)


def test_a_third_party_policy_plugs_in_by_name(world: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution exposing a PolicySpec in the homepage.policies entry-point group is usable by name."""
    from homepage.pagebuilder import policies

    (tmp_path / "reverse_policy.py").write_text(
        "from homepage.pagebuilder.policies import PolicySpec, TemplateScorer\n"
        "SPEC = PolicySpec('reverse-template', lambda model, cm: TemplateScorer(order=('video_to_video', 'top_n', 'trending', 'personalized', 'continue_watching')))\n"
    )
    dist = tmp_path / "reverse_policy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: reverse-policy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[homepage.policies]\nreverse-template = reverse_policy:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    policies._plugins.cache_clear()
    try:
        assert "reverse-template" in policies.policy_names()
        log: EventLog = world["log"]  # type: ignore[assignment]
        models: PageModels = world["models"]  # type: ignore[assignment]
        u = int(log.user_ids[0])
        t: int = world["split"]  # type: ignore[assignment]
        ctx = RequestContext(user_id=u, now=t)
        mine = build_page(log.user_state(u, t), log.global_state(t), models, ctx, policy="reverse-template")
        fixed = build_page(log.user_state(u, t), log.global_state(t), models, ctx, policy="template")
        assert mine.policy == "reverse-template" and mine.rows
        assert [r.ranker for r in mine.rows] != [r.ranker for r in fixed.rows]
    finally:
        policies._plugins.cache_clear()


def test_replay_refuses_wrong_inputs_before_any_work(world: dict[str, object], tmp_path: Path) -> None:
    """Output paths of the wrong kind, a dataset given as models and --until before the split: one line naming the culprit."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    base = ["replay", str(root / "world"), "--models", str(root / "models")]
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    cases = [
        (["--json", str(tmp_path)], "--json", "is a directory"),
        (["--json", str(a_file / "out.json")], "--json", "is not a directory"),
        (["--report", str(a_file)], "--report", "not a directory"),
        (["--until", str(split - DAY)], "--until", "before the split"),
        (["--json", "/proc/replay.json"], "--json", "cannot write in /proc"),  # not after the whole replay
        (["--report", str(tmp_path)], "--report", "README.md, which is not a replay report"),  # a project's README
    ]
    (tmp_path / "README.md").write_text("# My project\n")
    for extra, option, words in cases:
        res = CliRunner().invoke(app, base + extra)
        msg = str(res.exception)
        assert res.exit_code != 0 and option in msg and words in msg, (extra, msg)
    assert a_file.read_text() == "keep me" and (tmp_path / "README.md").read_text() == "# My project\n"
    res = CliRunner().invoke(app, ["replay", str(root / "world"), "--models", str(root / "world")])
    assert res.exit_code != 0 and "not a model bundle" in str(res.exception)


def test_replay_refuses_a_bundle_of_another_catalog(world: dict[str, object], tmp_path: Path) -> None:
    """Another world numbers its titles 1..n too: replaying its bundle here would read its titles' statistics as these."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    write_world(generate_world(WorldParams(n_users=60, n_titles=180, seed=12)), tmp_path / "other")
    other = train_bundle(load_dataset(tmp_path / "other"), tmp_path / "models", PipelineConfig(page=PageConfig(train_model=False)))
    base = ["replay", str(root / "world"), "--policies", "template"]
    for args, option in (([*base, "--models", str(other.path)], "--models"), ([*base, "--models", str(root / "models"), "--baseline-models", str(other.path)], "--baseline-models")):
        res = CliRunner().invoke(app, args)
        assert res.exit_code != 0 and f"{option}: bundle {other.version} was trained on another catalog" in str(res.exception), str(res.exception)


def test_single_list_needs_a_personalised_ranker(world: dict[str, object], tmp_path: Path) -> None:
    """Without one the list was the most popular titles, credited to a `personalized` ranker the bundle did not have."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    config = PipelineConfig.model_validate({"rankers": [{"name": "top_n"}, {"name": "continue_watching"}], "page": {"train_model": False}})
    bare = train_bundle(load_dataset(root / "world"), tmp_path / "models", config, until=split)
    res = CliRunner().invoke(app, ["replay", str(root / "world"), "--models", str(bare.path), "--policies", "template,single-list"])
    assert res.exit_code != 0 and "'single-list' is a personalised ranker's list" in str(res.exception), str(res.exception)


def test_a_baseline_bundle_is_replayed_on_the_same_requests(world: dict[str, object], tmp_path: Path) -> None:
    """--baseline-models: the same policies with another bundle, paired on the same requests (itself: a zero difference)."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    ds: Dataset = world["ds"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    out = tmp_path / "r.json"
    args = ["replay", str(root / "world"), "--models", str(root / "models"), "--policies", "stage-wise,template",
            "--max-requests", "40", "--bootstrap", "100", "--rows", "5", "--cols", "5", "--workers", "1", "--json", str(out)]
    res = CliRunner().invoke(app, [*args, "--baseline-models", str(root / "models")])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"stage-wise", "template", "baseline:stage-wise", "baseline:template"}
    same = report["paired"]["stage-wise - baseline:stage-wise"]
    assert same["ndcg_2d"]["mean"] == 0 and same["ndcg_2d"]["ci"] == [0, 0]
    assert report["protocol"]["baseline_model_version"] == report["protocol"]["model_version"]
    # a bundle that differs (a template-only page: no page model) is refused for a policy that needs one
    bare = train_bundle(ds, tmp_path / "bare", PipelineConfig(page=PageConfig(train_model=False)), until=split)
    res = CliRunner().invoke(app, [*args, "--baseline-models", str(bare.path)])
    assert res.exit_code != 0 and "--baseline-models" in str(res.exception) and "page model" in str(res.exception)


def test_replay_counts_the_requests_a_ranker_failed_on(world: dict[str, object], tmp_path: Path) -> None:
    """A plug-in raising on every request does not fail the replay, but the report says so, per ranker."""
    from typing import ClassVar

    from homepage.replay.run import replay
    from rankers.base import Ranker

    class Exploding(Ranker):
        name: ClassVar[str] = "exploding"

        def rows(self, request):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    broken = replace(models, rankers=(*models.rankers, Exploding()), _stats={})
    protocol = ReplayProtocol(split_time=world["split"], requests_per_user=1, max_requests=12, seed=3)  # type: ignore[arg-type]
    requests = sample_requests(log, protocol)
    result = replay(log, broken, ["template"], requests, protocol, 7 * DAY, world["split"])  # type: ignore[arg-type]
    assert result.ranker_problems == {"exploding": {"failed": len(requests), "rows dropped": 0}}
    assert result.to_json(n_boot=50)["ranker_problems"] == result.ranker_problems
    clean = replay(log, models, ["template"], requests, protocol, 7 * DAY, world["split"])  # type: ignore[arg-type]
    assert clean.ranker_problems == {}
    # a broken baseline bundle is reported under the baseline's prefix
    assert clean.with_baseline(result).ranker_problems == {"baseline:exploding": {"failed": len(requests), "rows dropped": 0}}
    # a baseline replayed on the same users at other times is not paired with this one
    later = replace(requests, times=requests.times + DAY)
    shifted = replay(log, models, ["template"], later, protocol, 7 * DAY, world["split"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same requests"):
        clean.with_baseline(shifted)


def test_json_outputs_are_strict_json() -> None:
    """A metric over no requests is NaN: written as null (Python's json wrote a bare NaN that JSON.parse rejects)."""
    from homepage.strict_json import write_json

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sub" / "out.json"
        write_json(path, {"a": float("nan"), "b": [np.float32(np.inf), 1.5, (np.float64(-np.inf),)], "c": np.int64(3), "d": np.arange(2)}, "--json")
        assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [None, 1.5, [None]], "c": 3, "d": [0, 1]}


def test_backtest_and_train_name_a_bad_out_or_option_before_any_work(world: dict[str, object], tmp_path: Path) -> None:
    """A review met tracebacks after a fold's training: --out naming a file, --requests-per-user beyond the protocol's 1000."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for args, words in (
        (["backtest", str(root / "world"), "--out", str(a_file)], "is a file, not a directory"),
        (["train", str(root / "world"), "--out", str(a_file)], "is a file, not a directory"),  # checked before loading the dataset
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code != 0 and "--out" in str(res.exception) and words in str(res.exception), (args, res.exception)
    assert a_file.read_text() == "keep me"
    for command in (["backtest", str(root / "world"), "--out", str(tmp_path / "bt")], ["replay", str(root / "world"), "--models", str(root / "models")]):
        res = CliRunner().invoke(app, [*command, "--requests-per-user", "5000"])
        assert res.exit_code == 2 and "--requests-per-user" in res.output and not (tmp_path / "bt").exists()


def test_replay_warns_when_its_figures_say_little(world: dict[str, object]) -> None:
    """Few users (zero-width 'intervals'), empty pages, no warm request: said, not printed as 0.0000 or nan alone."""
    from homepage.replay.run import replay

    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    split: int = world["split"]  # type: ignore[assignment]
    protocol = ReplayProtocol(split_time=split, max_requests=3, rows=4, cols=5)
    requests = sample_requests(log, protocol)
    result = replay(log, models, ["template"], requests, protocol, 7 * DAY, split)
    assert any("users: intervals resample users" in w for w in result.warnings())
    result.runs["template"].shown[int(np.flatnonzero(~requests.cold)[0])] = np.zeros(0, np.int64)  # as a rule that empties a page
    assert any(w.startswith("template: 1 of") and "warm pages are empty" in w for w in result.warnings())
    cold = replace(requests, cold=np.ones(len(requests), bool))
    assert result.__class__(protocol, split, cold, result.runs, result.n_titles, "v").warnings()[0].startswith("no warm requests")


def test_replay_from_served_logs_refuses_a_bundle_of_another_catalog(world: dict[str, object], tmp_path: Path) -> None:
    """The served-logs path returned before the checks the history path makes."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    write_world(generate_world(WorldParams(n_users=60, n_titles=180, seed=12)), tmp_path / "other")
    other = train_bundle(load_dataset(tmp_path / "other"), tmp_path / "models", PipelineConfig(page=PageConfig(train_model=False)))
    from homepage.servedlogs.schema import write_served_logs

    ds: Dataset = world["ds"]  # type: ignore[assignment]
    one = {"page_id": "p1", "user_id": int(ds.users["user_id"].iloc[0]), "ts": int(ds.events["ts"].max()), "policy": "random",
           "row_index": 0, "col_index": 0, "row_id": "top_n", "ranker": "top_n", "title_id": int(ds.titles["title_id"].iloc[0]),
           "row_propensity": 1.0, "played": 0}  # fmt: skip
    logs = write_served_logs(pd.DataFrame([one]), tmp_path / "served.parquet")
    res = CliRunner().invoke(app, ["replay-logs", str(root / "world"), "--models", str(other.path), "--served-logs", str(logs)])
    assert res.exit_code != 0 and "--models: bundle" in str(res.exception) and "another catalog" in str(res.exception), str(res.exception)


def test_explain_shows_the_page_replay_builds_and_marks_the_later_plays(world: dict[str, object], tmp_path: Path) -> None:
    """`homepage explain`: the page replay builds for that user and time (its world rounded to the hour as replay's), every feature per row, and the hits."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    bundle = world["bundle"]
    split: int = world["split"]  # type: ignore[assignment]
    cfg = bundle.config.page  # type: ignore[attr-defined]
    proto = ReplayProtocol(split_time=split, horizon_days=30, requests_per_user=1, seed=0)
    worlds = CheckpointedWorlds(log, bundle.config.half_life_seconds, proto.world_granularity)  # type: ignore[attr-defined]
    reqs = sample_requests(log, proto)
    hits = 0
    for i, (uid, t, tgt) in enumerate(zip(reqs.user_ids.tolist(), reqs.times.tolist(), reqs.targets)):
        if i >= 12:
            break
        ctx = RequestContext(user_id=uid, now=t, rows=cfg.rows, cols=cfg.cols)
        page = build_page(log.user_state(uid, t), worlds.at(t), models, ctx, explain=True)
        played = set(models.catalog.title_ids[tgt].tolist())
        out = tmp_path / f"explain-{i}.json"
        res = CliRunner().invoke(app, ["explain", str(root / "world"), "--models", str(root / "models"), "--user", str(uid), "--at", str(t), "--json", str(out)])
        assert res.exit_code == 0, res.output
        got = json.loads(out.read_text())
        assert got["events_before"] == len(log.user_state(uid, t)) and set(got["played_after"]) == played
        assert [(r["row_id"], r["stage"], [x["title_id"] for x in r["titles"]]) for r in got["rows"]] == [
            (r.row_id, r.stage, list(r.title_ids)) for r in page.rows
        ], (uid, t)
        assert [r["score"] for r in got["rows"]] == pytest.approx([r.score for r in page.rows])
        assert all(set(r["features"]) == set(FEATURE_NAMES) for r in got["rows"])
        for r in got["rows"]:
            assert r["hit_columns"] == [c for c, x in enumerate(r["titles"]) if x["title_id"] in played]
        hits += sum(len(r["hit_columns"]) for r in got["rows"])
        assert f"user {uid} at " in res.output and "hits" in res.output
    assert hits > 0
    # a user the dataset does not hold gets a new user's page; a time before the bundle's cut is refused
    res = CliRunner().invoke(app, ["explain", str(root / "world"), "--models", str(root / "models"), "--user", "99999999"])
    assert res.exit_code == 0 and "a new user's page" in res.output, res.output
    for extra, words in ((["--at", str(split - DAY)], "before bundle"), (["--policy", "template,row-ranking"], "one policy"), (["--policy", "nope"], "--policy: "), (["--device", "toaster"], "--device")):
        res = CliRunner().invoke(app, ["explain", str(root / "world"), "--models", str(root / "models"), "--user", str(uid), *extra])
        assert res.exit_code != 0 and words in str(res.exception), (extra, res.exception)


def test_explain_rebuilds_a_page_served_for_another_region(world: dict[str, object], tmp_path: Path) -> None:
    """The API takes a region parameter (regional rows for it, not the profile's); explain takes it too, or that page cannot be rebuilt."""
    _register()
    root: Path = world["root"]  # type: ignore[assignment]
    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    bundle = world["bundle"]
    ds: Dataset = world["ds"]  # type: ignore[assignment]
    t = int(bundle.until)  # type: ignore[attr-defined]
    worlds = CheckpointedWorlds(log, bundle.config.half_life_seconds, ReplayProtocol().world_granularity)  # type: ignore[attr-defined]
    cfg = bundle.config.page  # type: ignore[attr-defined]

    # the first user whose page, asked for another region than their own, shows that region's row (which user
    # that is depends on the trained page model)
    for uid in map(int, log.user_ids[:100]):
        own = log.user_state(uid, t).region
        other = next(r for r in sorted(set(ds.users["region"].dropna())) if r != own)
        ctx = RequestContext(user_id=uid, now=t, rows=cfg.rows, cols=cfg.cols, region=other)
        served = build_page(log.user_state(uid, t), worlds.at(t), models, ctx)
        if any(r.row_id.endswith(f":region:{other}") for r in served.rows):  # the request's region, not the profile's
            break
    else:
        raise AssertionError("no page of the first 100 users shows a row of the region the request asked for")
    out = tmp_path / "explain.json"
    base = ["explain", str(root / "world"), "--models", str(root / "models"), "--user", str(uid), "--at", str(t)]
    res = CliRunner().invoke(app, [*base, "--region", other, "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert [(r["row_id"], [x["title_id"] for x in r["titles"]]) for r in got["rows"]] == [(r.row_id, list(r.title_ids)) for r in served.rows]
    assert got["request"]["region"] == other
    res = CliRunner().invoke(app, [*base, "--region", "not a region"])
    assert res.exit_code != 0 and "--region" in str(res.exception), res.output


def test_paired_differences_are_the_first_policy_minus_the_second(world: dict[str, object]) -> None:
    """"a - b" in the report is a's mean minus b's on the same requests, not the other way round."""
    from homepage.replay.run import replay

    log: EventLog = world["log"]  # type: ignore[assignment]
    models: PageModels = world["models"]  # type: ignore[assignment]
    protocol = ReplayProtocol(split_time=world["split"], requests_per_user=1, max_requests=20, seed=3)  # type: ignore[arg-type]
    requests = sample_requests(log, protocol)
    report = replay(log, models, ["template", "single-list"], requests, protocol, 7 * DAY, world["split"]).to_json(n_boot=50)  # type: ignore[arg-type]
    pair = report["paired"]["template - single-list"]  # type: ignore[index]
    for m in ("novelty", "ndcg_2d", "viewport_genres"):
        a, b = (report["policies"][p][m]["mean"] for p in ("template", "single-list"))  # type: ignore[index]
        assert pair[m]["mean"] == pytest.approx(a - b), m
    assert pair["novelty"]["mean"] != 0  # the two policies differ: the sign can be wrong
