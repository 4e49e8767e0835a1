"""Ranker evaluation: metrics on hand-made cases, the temporal split, peers, and ``homepage eval rankers``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from homepage.catalog import Catalog  # noqa: E402
from homepage.cli.eval import parse_lambdas  # noqa: E402
from homepage.domain import CandidateRow, RowReason  # noqa: E402
from homepage.errors import HomepageError  # noqa: E402
from homepage.evaluation.peers import default_peers, top_k_masked  # noqa: E402
from homepage.evaluation.ranker_eval import ranked_lists, run_protocol, temporal_split  # noqa: E402
from homepage.evaluation.ranker_metrics import (  # noqa: E402
    coverage,
    hit_matrix,
    ndcg_at_k,
    novelty,
    recall_at_k,
    summarise,
)
from homepage.eventlog import EventLog  # noqa: E402
from rankers.base import Ranker, RankRequest  # noqa: E402


# ------------------------------------------------------------------ metrics, by hand
def test_recall_and_ndcg_with_positives_at_rank_1_and_3() -> None:
    ranked = np.array([[5, 1, 7, 9]])
    positives = [np.array([7, 5])]
    hits = hit_matrix(ranked, positives)
    assert hits.tolist() == [[True, False, True, False]]
    n_pos = np.array([2])
    assert recall_at_k(hits, n_pos, 1)[0] == pytest.approx(1 / 1)  # denominator min(k, |pos|) = 1
    assert recall_at_k(hits, n_pos, 2)[0] == pytest.approx(1 / 2)
    assert recall_at_k(hits, n_pos, 4)[0] == pytest.approx(2 / 2)
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal for 2 positives = 1 + 1/log2(3)
    assert ndcg_at_k(hits, n_pos, 4)[0] == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(hits, n_pos, 2)[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_metrics_with_padding_misses_and_many_positives() -> None:
    ranked = np.array([[3, -1, -1], [0, 1, 2]])
    positives = [np.array([-1, 4]), np.arange(10)]  # -1 padding never counts as a hit
    hits = hit_matrix(ranked, positives)
    n_pos = np.array([2, 10])
    np.testing.assert_allclose(recall_at_k(hits, n_pos, 3), [0.0, 1.0])  # 3 hits / min(3, 10)
    np.testing.assert_allclose(ndcg_at_k(hits, n_pos, 3), [0.0, 1.0])
    assert math.isnan(recall_at_k(np.zeros((1, 3), bool), np.array([0]), 3)[0])


def test_coverage_and_novelty_by_hand() -> None:
    assert coverage(np.array([[0, 1], [1, 2]]), n_titles=10, k=2) == pytest.approx(3 / 10)
    assert coverage(np.array([[0, 1], [1, 2]]), n_titles=10, k=1) == pytest.approx(2 / 10)
    pop = np.array([2.0, 2.0, 4.0])  # shares 1/4, 1/4, 1/2 -> -log2: 2, 2, 1
    assert novelty(np.array([[0, 2]]), pop, k=2) == pytest.approx(1.5)
    m = summarise(np.array([[0, 2]]), [np.array([2])], pop, ks=(1, 2))
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0 and m["users"] == 1.0


# ------------------------------------------------------------------ split and peers
def tiny_log(ratings_only: bool = False) -> tuple[Catalog, EventLog]:
    titles = pd.DataFrame({"title_id": [10, 20, 30, 40], "name": list("abcd"), "year": 2000, "genres": [["X"]] * 4})
    catalog = Catalog.from_frames(titles)
    ev = pd.DataFrame(
        [
            (1, 10, 1, 100, 4.0),  # user 1: before T
            (1, 20, 1, 200, 2.0),  # after T: a positive
            (1, 10, 1, 210, 5.0),  # after T but seen before: not a positive
            (1, 40, 0, 220, np.nan),  # a play after T: a positive
            (2, 30, 1, 200, 3.0),  # user 2 only after T: not a test user
            (3, 30, 1, 50, 3.0),  # user 3 only before T: not a test user
        ],
        columns=["user_id", "title_id", "kind", "ts", "stars"],
    )
    return catalog, EventLog.from_frame(ev[ev["kind"] == 1] if ratings_only else ev, catalog)


def test_temporal_split_positives() -> None:
    catalog, log = tiny_log()
    s = temporal_split(log, 150)
    assert log.user_ids[s.users].tolist() == [1]
    assert sorted(catalog.title_ids[s.positives[0]].tolist()) == [20, 40]
    assert s.train.nnz == 2 and s.popularity.tolist() == [1, 0, 1, 0]
    strict = temporal_split(log, 150, min_stars=3.0)  # the 2-star rating drops; the play stays
    assert catalog.title_ids[strict.positives[0]].tolist() == [40]


def test_no_test_user_is_an_error_naming_min_stars() -> None:
    catalog, ratings_only = tiny_log(ratings_only=True)
    assert temporal_split(ratings_only, 150, min_stars=2.0).users.size == 1
    with pytest.raises(HomepageError, match=r"--min-stars 6\.0: no user"):
        run_protocol(ratings_only, catalog, 150, [], min_stars=6.0)


def test_eval_rankers_can_leave_out_peers_and_rankers(tmp_path: Path) -> None:
    """--rankers picks of the config's rankers, --no-peers skips the peers; an unknown name is refused."""
    from typer.testing import CliRunner

    from homepage.cli import _register, app
    from redis_fixtures import write_small_dataset

    _register()
    ds = write_small_dataset(tmp_path / "ds", n_users=40, events_per_user=15)
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "rankers", str(ds), "--rankers", "top_n,trending", "--no-peers", "--json", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert set(result["rankers"]) == {"top_n", "trending"} and result["peers"] == {}
    from homepage.provenance import dataset_sha256

    assert result["provenance"]["dataset_sha256"] == dataset_sha256(ds) and result["provenance"]["environment"]["packages"]["numpy"]
    res = CliRunner().invoke(app, ["eval", "rankers", str(ds), "--rankers", "top_n,nope"])
    assert res.exit_code != 0 and "--rankers: nope" in str(res.exception) and "personalized" in str(res.exception)


def test_eval_rankers_decays_trending_with_the_configs_half_life(tmp_path: Path) -> None:
    """`train` and `replay` use the config's trending half-life; eval used 7 days whatever the config said."""
    from typer.testing import CliRunner

    from homepage.cli import _register, app

    _register()
    world = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"
    metrics = []
    for days in (0.5, 365):
        cfg, out = tmp_path / f"hl{days}.json", tmp_path / f"eval{days}.json"
        cfg.write_text(json.dumps({"trending_half_life_days": days}))
        res = CliRunner().invoke(app, ["eval", "rankers", str(world), "--config", str(cfg), "--rankers", "trending", "--no-peers", "--json", str(out)])
        assert res.exit_code == 0, res.output
        metrics.append(json.loads(out.read_text())["rankers"]["trending"])
    assert metrics[0]["coverage"] < metrics[1]["coverage"]  # a short half-life keeps fewer titles trending
    assert metrics[0]["ndcg@50"] != metrics[1]["ndcg@50"]


def test_peers_exclude_seen_titles() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((30, 25)) < 0.3).astype(np.float32))
    users = np.arange(0, 30, 3)
    for peer in default_peers(ease_lambda=10.0):
        ranked = peer.fit(x).recommend(users, x[users], 10)
        assert ranked.shape == (users.size, 10), peer.name
        for row, u in zip(ranked, users):
            assert not np.isin(row[row >= 0], x[u].indices).any(), peer.name
            assert len(set(row[row >= 0].tolist())) == int((row >= 0).sum()), peer.name


def test_top_k_masked_orders_and_pads() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0]], np.float32))
    assert top_k_masked(scores, seen, 4).tolist() == [[3, 2, 0, -1]]


class TwoRows(Ranker):
    """Rows [20, 10, 30] and [30, 40]: merged they give 20, 30, 40 for user 1 (10 is seen)."""

    name = "two_rows"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        def row(i: int, ids: list[int]) -> CandidateRow:
            s = np.linspace(1, 0, len(ids)).astype(np.float32)
            return CandidateRow(f"r{i}", self.name, "x", np.array(ids, np.int64), s, RowReason(kind="x"))

        return [row(0, [20, 10, 30]), row(1, [30, 40])]


def test_rows_merge_by_row_then_position_without_repeats_or_seen() -> None:
    catalog, log = tiny_log()
    s = temporal_split(log, 150)
    ranked = ranked_lists(TwoRows(), log, catalog, s)
    got = ranked[0][ranked[0] >= 0]
    assert catalog.title_ids[got].tolist() == [20, 30, 40]


class RaisesInRows(TwoRows):
    name = "raises_in_rows"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        raise RuntimeError("boom [in rows]")


class RaisesInFit(TwoRows):
    name = "raises_in_fit"

    def fit(self, data):  # type: ignore[no-untyped-def]
        raise ValueError("cannot fit")


class RepeatsTitles(TwoRows):
    name = "repeats_titles"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        ids = np.array([20, 20], np.int64)
        return [CandidateRow("r", self.name, "x", ids, np.array([1.0, 0.5], np.float32), RowReason(kind="x"))]


def test_a_failing_ranker_is_reported_and_the_others_still_scored() -> None:
    catalog, log = tiny_log()
    got = run_protocol(
        log, catalog, 150, [("two_rows", TwoRows()), ("a", RaisesInRows()), ("b", RaisesInFit()), ("c", RepeatsTitles())], peers=[]
    )["rankers"]
    assert got["two_rows"]["recall@20"] == 1.0
    assert got["a"] == {"failed": "rows() raised RuntimeError: boom [in rows] (user 1)"}
    assert got["b"] == {"failed": "fit() raised ValueError: cannot fit"}
    assert got["c"]["failed"].startswith("rows() broke the row contract for user 1: ") and "appears twice" in got["c"]["failed"]


def test_a_ranker_returning_no_list_fails_its_evaluation() -> None:
    """None (or one row not in a list) is what the page builder skips: eval says so instead of scoring it 0."""
    catalog, log = tiny_log()

    class ReturnsNone(TwoRows):
        def rows(self, request: RankRequest) -> list[CandidateRow]:
            return None  # type: ignore[return-value]

    got = run_protocol(log, catalog, 150, [("none", ReturnsNone())], peers=[])["rankers"]
    assert got["none"] == {"failed": "rows() returned a NoneType, not a list of CandidateRow (user 1)"}


def test_eval_command_reports_a_failing_plugin_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table and the JSON still come out, with the failure in them; then one error line and exit code 1."""
    from importlib.metadata import EntryPoint

    from typer.testing import CliRunner

    from homepage.cli import _register, app
    from homepage.config import PipelineConfig
    from rankers import registry
    from rankers.registry import RankerSpec
    from redis_fixtures import write_small_dataset

    installed = registry.registered()
    ep = EntryPoint(name="raises_in_rows", value=f"{__name__}:RaisesInRows", group=registry.GROUP)
    monkeypatch.setattr(registry, "registered", lambda: {**installed, "raises_in_rows": ep})
    _register()
    ds = write_small_dataset(tmp_path / "ds", n_users=40, events_per_user=15)
    cfg = tmp_path / "pipeline.json"
    cfg.write_text(PipelineConfig(rankers=(*PipelineConfig().rankers, RankerSpec(name="raises_in_rows"))).model_dump_json())
    out = tmp_path / "eval.json"
    argv = ["eval", "rankers", str(ds), "--config", str(cfg), "--rankers", "top_n,raises_in_rows", "--no-peers", "--json", str(out)]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 1, res.output
    # and through the console script's entry point, whose exit status a shell or CI sees
    from homepage.cli import main

    monkeypatch.setattr("sys.argv", ["homepage", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    result = json.loads(out.read_text())
    assert "ndcg@10" in result["rankers"]["top_n"]
    assert result["rankers"]["raises_in_rows"]["failed"].startswith("rows() raised RuntimeError: boom [in rows]")
    flat = " ".join(res.output.split())
    assert "error: ranker raises_in_rows: rows() raised RuntimeError: boom [in rows]" in flat, res.output
    assert "rankers vs peers" not in flat and "rankers: split" in flat  # --no-peers: no peers in the title


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc", "not a comma-separated list"), ("", "needs positive numbers"), ("10,-1", "needs positive numbers")],
)
def test_bad_ease_lambdas(text: str, message: str) -> None:
    with pytest.raises(HomepageError, match=message) as e:
        parse_lambdas(text)
    assert "--ease-lambdas" in str(e.value)


# ------------------------------------------------------------------ the command on ml-latest-small
@pytest.fixture(scope="session")
def mlsmall_dataset(mlsmall_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-latest-small as a dataset directory, through the real ingest."""
    from homepage.ingest import ingest_movielens

    out = tmp_path_factory.mktemp("mlsmall") / "ds"
    ingest_movielens(mlsmall_dir, out)
    return out


@pytest.mark.shared_data
def test_eval_rankers_on_ml_latest_small(mlsmall_dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from homepage.cli import _register, app

    _register()
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "rankers", str(mlsmall_dataset), "--json", str(out), "--ease-lambdas", "1000"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert set(result) == {"protocol", "rankers", "peers", "provenance"}
    assert set(result["peers"]) == {"most_popular", "ease", "implicit_als", "implicit_bpr", "implicit_cosine"}
    assert result["protocol"]["test_users"] > 0
    assert all(t < result["protocol"]["split_time"] for t in result["protocol"]["validation_times"])
    personal = result["rankers"]["personalized"]
    for m in ("ndcg@20", "recall@20", "coverage", "novelty"):
        assert 0.0 <= personal[m] and all(m in p for p in result["peers"].values())
    best_peer = max(p["ndcg@20"] for p in result["peers"].values())
    assert personal["ndcg@20"] >= best_peer, (personal["ndcg@20"], best_peer)
    assert personal["ndcg@20"] > result["peers"]["most_popular"]["ndcg@20"]
    assert "rankers vs peers" in res.output


# ------------------------------------------------------------------ tuning on validation splits
def test_grid_is_every_combination() -> None:
    from homepage.evaluation.tuning import grid

    assert grid({"b": [1, 2], "a": ["x"]}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]
    assert grid({}) == [{}]


def test_tune_personalized_never_looks_past_until() -> None:
    from homepage.evaluation.tuning import tune_personalized
    from rankers.testing import small_world

    w = small_world()
    small = {"factors": 4, "als_iterations": 2, "ease_min_count": 1}
    res = tune_personalized(w.log, w.catalog, w.until, {"ease_lambda": [10.0]}, {"weight_pop": [0.0, 1.0]}, base=small)
    assert [r[0]["weight_pop"] for r in res] != [] and len(res) == 2
    assert res[0][1] >= res[1][1]
    # the same search with every event after ``until`` removed gives the same answer: no leakage
    from homepage.eventlog import EventLog as Log

    user_pos, title_idx, ts, stars = w.log.interactions(w.until)
    ev = pd.DataFrame({"user_id": w.log.user_ids[user_pos], "title_id": w.catalog.title_ids[title_idx],
                       "kind": 1, "ts": ts, "stars": np.nan_to_num(stars, nan=3.0)})
    cut = Log.from_frame(ev, w.catalog)
    res_cut = tune_personalized(cut, w.catalog, w.until, {"ease_lambda": [10.0]}, {"weight_pop": [0.0, 1.0]}, base=small)
    assert [(r[0], round(r[1], 9)) for r in res] == [(r[0], round(r[1], 9)) for r in res_cut]


def test_one_se_rule_keeps_a_blend_only_when_it_beats_noise() -> None:
    from homepage.evaluation.tuning import Setting, simplest_within_one_se

    rng = np.random.default_rng(0)
    base = rng.random(400)
    plain = Setting({"weight_pop": 0.0, "weight_mf": 0.0}, base, base)
    noise = rng.normal(0, 0.05, 400)
    noise -= noise.mean()  # the gain is exactly 0.001, the standard error about 0.0025
    tiny_gain = Setting({"weight_pop": 0.3, "weight_mf": 0.0}, base + 0.001 + noise, base)
    big_gain = Setting({"weight_pop": 2.0, "weight_mf": 0.5}, base + 0.1 + rng.normal(0, 0.05, 400), base)
    ranked = sorted([plain, tiny_gain], key=lambda s: -s.mean_ndcg)
    assert ranked[0] is tiny_gain  # best on the mean, but within noise of the plain item model
    assert simplest_within_one_se(ranked) is plain
    ranked = sorted([plain, tiny_gain, big_gain], key=lambda s: -s.mean_ndcg)
    assert simplest_within_one_se(ranked) is big_gain
    # a gain of 0.01 is 4 standard errors of the mean difference (0.05 / sqrt(400)), though a fifth of one user's spread
    clear_gain = Setting({"weight_pop": 0.3, "weight_mf": 0.0}, base + 0.01 + noise, base)
    assert simplest_within_one_se(sorted([plain, clear_gain], key=lambda s: -s.mean_ndcg)) is clear_gain
    # equally simple (another item-model weight is no blend component): the higher NDCG
    other_item = Setting({"weight_item": 0.5, "weight_pop": 0.0, "weight_mf": 0.0}, base + 0.001 + noise, base)
    assert other_item.complexity == plain.complexity
    assert simplest_within_one_se(sorted([plain, other_item], key=lambda s: -s.mean_ndcg)) is other_item


def test_coverage_does_not_count_padding_as_a_title() -> None:
    # a list shorter than K is padded with -1: two distinct titles recommended, not three
    assert coverage(np.array([[0, 1], [1, -1]]), n_titles=10, k=2) == pytest.approx(2 / 10)
