"""Page builder: de-duplication, business rules, determinism, the page model's manifest,
the compiled predictor, explain mode and the stage features' dependence on the page above.

Everything runs on a hand-made catalog of 80 titles and hand-made rankers, with a real
(tiny) LightGBM model; no data files are needed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from homepage.catalog import Catalog
from homepage.domain import CandidateRow, PlacedRow, RequestContext, RowReason
from homepage.errors import HomepageError
from homepage.page import KIND_VOCAB, PageModels, build_page, ranker_problem, single_list_rows, user_signals
from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats
from homepage.pagebuilder.features import COL, FEATURE_NAMES, StageFeatures, UserSignals
from homepage.pagebuilder.loop import assemble
from homepage.pagebuilder.model import PageModel
from homepage.pagebuilder.policies import TemplateScorer
from homepage.pagebuilder.rules import PageRules, unmet_rules
from homepage.pagebuilder.training import OracleScorer, grade
from homepage.servedlogs.training import LoggedOrderScorer
from homepage.state import GlobalState, UserState, frozen
from rankers.base import Ranker, RankRequest

N_TITLES = 80
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")
RANKERS = ("continue_watching", "personalized", "top_n", "video_to_video")
POLICIES = ("stage-wise", "row-ranking", "template", "single-list")


def make_catalog() -> Catalog:
    rng = np.random.default_rng(3)
    genres = [tuple(sorted({GENRES[i % 6], GENRES[int(rng.integers(6))]})) for i in range(N_TITLES)]
    maturity = ["R" if i % 10 == 9 else "PG" for i in range(N_TITLES)]
    titles = pd.DataFrame(
        {
            "title_id": np.arange(1, N_TITLES + 1) * 10,
            "name": [f"t{i}" for i in range(N_TITLES)],
            "year": 1990 + np.arange(N_TITLES) % 30,
            "genres": genres,
            "maturity": maturity,
        }
    )
    return Catalog.from_frames(titles)


CATALOG = make_catalog()


def world() -> GlobalState:
    counts = np.arange(N_TITLES, 0, -1).astype(np.int64)
    z = np.zeros(N_TITLES)
    return GlobalState(10**9, 7 * 86400.0, frozen(counts), frozen(counts * 0.5), frozen(z), frozen(z.astype(np.int64)))


def row(ranker: str, key: str, idx: list[int] | np.ndarray, kind: str, score: float = 0.0) -> CandidateRow:
    idx = np.asarray(idx, dtype=np.int64)
    return CandidateRow(
        row_id=f"{ranker}:{key}",
        ranker=ranker,
        display_title=key,
        title_ids=CATALOG.title_ids[idx],
        scores=np.linspace(1.0, 0.1, idx.size).astype(np.float32),
        reason=RowReason(kind=kind, anchor_title_id=int(CATALOG.title_ids[idx[0]]) if kind == "because_you_watched" else None),
        row_score=score,
    )


def candidate_rows() -> list[CandidateRow]:
    """Overlapping rows: personalised rows share titles, v2v rows overlap each other."""
    return [
        row("continue_watching", "cw", [70, 71, 72, 73, 74], "continue_watching", 1.0),
        row("personalized", "top", list(range(0, 30)), "top_picks", 2.0),
        row("personalized", "g1", list(range(0, 40, 2)), "genre", 1.5),
        row("personalized", "g2", list(range(1, 40, 2)), "genre", 1.4),
        row("personalized", "g3", list(range(5, 35)), "genre", 1.3),
        row("top_n", "pop", list(range(40, 70)), "top_n", 0.5),
        row("top_n", "pop2", list(range(45, 75)), "top_n_region", 0.4),
        *[row("video_to_video", f"a{a}", list(range(a, a + 20)), "because_you_watched", 1.0 - a / 100) for a in (10, 20, 30, 50)],
    ]


class HandRanker(Ranker):
    """A ranker returning the hand-made rows of its name (a real Ranker, not a mock)."""

    name: ClassVar[str] = "hand"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        return [r for r in candidate_rows() if r.ranker == self.name]


def hand_rankers() -> tuple[Ranker, ...]:
    return tuple(type(f"Hand_{n}", (HandRanker,), {"name": n})() for n in RANKERS)


def personal_scores() -> np.ndarray:
    return np.linspace(3.0, -1.0, N_TITLES).astype(np.float32)


class Personal(HandRanker):
    name: ClassVar[str] = "personalized"

    def score_titles(self, user: UserState) -> np.ndarray:
        return personal_scores()


def user() -> UserState:
    idx = np.array([76, 77, 78, 79], dtype=np.int64)
    return UserState(
        user_id=1,
        as_of=10**9,
        region=None,
        title_ids=frozen(CATALOG.title_ids[idx]),
        title_idx=frozen(idx),
        ts=frozen(np.arange(4, dtype=np.int64) + 10**9 - 100),
        kinds=frozen(np.zeros(4, np.int8)),
        stars=frozen(np.full(4, np.nan, np.float32)),
        progress=frozen(np.full(4, np.nan, np.float32)),
    )


def signals() -> UserSignals:
    raw = personal_scores()
    return UserSignals(UserSignals.standardise(raw), UserSignals.rank_value(raw, np.array([76, 77, 78, 79])), 4, 1.0, -1, -1)


VOCAB = tuple(sorted(RANKERS))


def matrix(rows: list[CandidateRow] | None = None, allowed: np.ndarray | None = None) -> CandidateMatrix:
    return CandidateMatrix.build(rows if rows is not None else candidate_rows(), CATALOG, VOCAB, KIND_VOCAB, allowed)


def build(rules: PageRules, scorer: object | None = None, rows: int = 8, cols: int = 10, explain: bool = False):  # noqa: ANN201
    cm = matrix(allowed=rules.allowed_titles(CATALOG.maturity))
    stats = TitleStats.compute(world(), CATALOG)
    return assemble(cm, CATALOG, stats, signals(), scorer or TemplateScorer(), rules, VOCAB, rows, cols, explain)


def stage_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Oracle-labelled stages of random targets on the hand-made rows: (X, grades, group sizes)."""
    rng = np.random.default_rng(0)
    Xs, ys, sizes = [], [], []
    cm = matrix()
    stats = TitleStats.compute(world(), CATALOG)
    for _ in range(40):
        targets = rng.choice(N_TITLES, size=12, replace=False)
        oracle = OracleScorer(targets, 10)
        _, traces = assemble(cm, CATALOG, stats, signals(), oracle, PageRules(rules=()), VOCAB, 6, 10, explain=True)
        for tr in traces:
            g = oracle.gains(tr.view)
            if g.max() > 0:
                Xs.append(tr.view.X)
                ys.append(grade(g))
                sizes.append(len(g))
    return np.concatenate(Xs), np.concatenate(ys), np.array(sizes)


@pytest.fixture(scope="module")
def page_model(tmp_path_factory: pytest.TempPathFactory) -> PageModel:
    """A tiny real LambdaRank model fitted on oracle-labelled stages of random targets."""
    model = PageModel.fit(*stage_data(), VOCAB, KIND_VOCAB, num_rounds=20, params={"min_data_in_leaf": 5, "num_threads": 1})
    d = tmp_path_factory.mktemp("pm")
    model.save(d)
    return PageModel.load(d)


def page_models(model: PageModel | None, rules: PageRules | None = None) -> PageModels:
    rankers = tuple(Personal() if r.name == "personalized" else r for r in hand_rankers())
    return PageModels("test", "h", CATALOG, rankers, page_model=model, rules=rules or PageRules())


def flat(page) -> list[int]:  # noqa: ANN001
    return [t for r in page.rows for t in r.title_ids]


# ------------------------------------------------------------------ policies


@pytest.mark.parametrize("policy", POLICIES)
def test_no_duplicates_and_determinism(page_model: PageModel, policy: str) -> None:
    models = page_models(page_model)
    ctx = RequestContext(user_id=1, now=10**9, rows=8, cols=10)
    a = build_page(user(), world(), models, ctx, policy=policy)
    b = build_page(user(), world(), models, ctx, policy=policy)
    ids = flat(a)
    assert len(a.rows) >= 3
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(CATALOG.title_ids[[76, 77, 78, 79]].tolist()) or policy != "single-list"
    assert a.grid() == b.grid() and [r.row_id for r in a.rows] == [r.row_id for r in b.rows]
    assert a.page_id == b.page_id


def test_stagewise_differs_from_row_ranking_only_through_the_page_above(page_model: PageModel) -> None:
    """Row-ranking scores every row once on the empty page: its row scores never change."""
    models = page_models(page_model)
    ctx = RequestContext(user_id=1, now=10**9, rows=8, cols=10)
    rr = build_page(user(), world(), models, ctx, policy="row-ranking", explain=True)
    sw = build_page(user(), world(), models, ctx, policy="stage-wise", explain=True)
    assert rr.rows[0].row_id == sw.rows[0].row_id  # same model, same empty page at stage 0
    assert rr.rows[0].score == pytest.approx(sw.rows[0].score)


# ------------------------------------------------------------------ rules


def test_pin_within_n() -> None:
    placed, _ = build(PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": 2},)))
    pos = [i for i, r in enumerate(placed) if r.ranker == "continue_watching"]
    assert pos and pos[0] <= 1
    if pos[0] == 1:
        assert placed[1].forced_by == "pin:continue_watching"



@pytest.mark.parametrize(("within", "rows"), [(2, 1), (3, 2), (50, 3)])
def test_a_page_shorter_than_the_pin_still_holds_the_pinned_row(within: int, rows: int) -> None:
    """A compact client asking for one row got no "Continue watching" under the default pin within 2: the pin
    forced it at the second stage, which a one-row page never reaches. It is placed within the page's rows."""
    last = TemplateScorer(order=("personalized", "top_n", "trending", "video_to_video", "continue_watching"))
    pin = PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": within},))
    placed, _ = build(pin, scorer=last, rows=rows)
    assert len(placed) == rows and [r.ranker for r in placed].count("continue_watching") == 1
    assert placed[-1].ranker == "continue_watching" and placed[-1].forced_by == "pin:continue_watching"
    unpinned, _ = build(PageRules(rules=()), scorer=last, rows=rows)  # the scorer alone would not place it
    assert "continue_watching" not in [r.ranker for r in unpinned]

def test_a_pinned_row_needs_only_one_new_title() -> None:
    """Continue watching (5 titles here) under min_titles 8: pinned, it is still placed; unpinned, it is not."""
    rules = ({"rule": "min_titles", "n": 8}, {"rule": "pin", "ranker": "continue_watching", "within": 2})
    placed, _ = build(PageRules(rules=rules), cols=10)
    pos = [i for i, r in enumerate(placed) if r.ranker == "continue_watching"]
    assert pos and pos[0] <= 1 and len(placed[pos[0]].title_ids) == 5
    assert all(len(r.title_ids) >= 8 for r in placed if r.ranker != "continue_watching")
    unpinned, _ = build(PageRules(rules=rules[:1]), cols=10)
    assert "continue_watching" not in [r.ranker for r in unpinned]
    exempt, _ = build(PageRules(rules=({"rule": "min_titles", "n": 8, "exempt": ["continue_watching"]},)), cols=10)
    assert "continue_watching" in [r.ranker for r in exempt]


def test_a_min_titles_exemption_holds_for_its_own_rule_only() -> None:
    """Continue watching (5 titles) exempt from min_titles 4 but not from min_titles 8: the rules' exempt lists
    were merged, so the first rule's exemption let it through the second."""
    rules = ({"rule": "min_titles", "n": 4, "exempt": ["continue_watching"]}, {"rule": "min_titles", "n": 8})
    placed, _ = build(PageRules(rules=rules), cols=10)
    assert placed and all(len(r.title_ids) >= 8 for r in placed)
    assert "continue_watching" not in [r.ranker for r in placed]
    both, _ = build(PageRules(rules=(rules[0], {**rules[1], "exempt": ["continue_watching"]})), cols=10)
    assert "continue_watching" in [r.ranker for r in both]


def test_a_pin_exempts_only_the_row_it_places() -> None:
    """The pinned ranker's later rows are held to min_titles like any other; an exempt ranker's are not."""
    pin = {"rule": "pin", "ranker": "video_to_video", "within": 1}
    placed, _ = build(PageRules(rules=(pin, {"rule": "min_titles", "n": 15})), rows=11, cols=30)
    v2v = [r for r in placed if r.ranker == "video_to_video"]
    assert placed[0].ranker == "video_to_video" and all(len(r.title_ids) >= 15 for r in placed)
    exempt, _ = build(PageRules(rules=(pin, {"rule": "min_titles", "n": 15, "exempt": ["video_to_video"]})), rows=11, cols=30)
    short = [r for r in exempt if r.ranker == "video_to_video" and len(r.title_ids) < 15]
    assert short and len([r for r in exempt if r.ranker == "video_to_video"]) > len(v2v)


def test_refusing_only_keeps_the_pinned_rankers_minimum_without_the_pin() -> None:
    """Replaying a logged order: no pin forces a row, but a pinned ranker's short row is not refused."""
    rules = PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": 1}, {"rule": "min_titles", "n": 8}))
    refusing = rules.refusing_only()
    assert not any(r.rule == "pin" for r in refusing.rules)
    ids = [r.row_id for r in matrix().rows]
    served = np.array([ids.index("personalized:top"), ids.index("top_n:pop"), ids.index("continue_watching:cw")])
    placed, _ = build(refusing, scorer=LoggedOrderScorer(served), rows=3, cols=10)
    assert [r.row_id for r in placed] == ["personalized:top", "top_n:pop", "continue_watching:cw"]  # the third row, past its pin
    strict, _ = build(PageRules(rules=rules.rules[1:]), scorer=LoggedOrderScorer(served), rows=3, cols=10)
    assert "continue_watching:cw" not in [r.row_id for r in strict]  # without the pin it would be refused


def test_min_titles_wider_than_the_page_asks_for_full_rows() -> None:
    """cols 3 under min_titles 4: rows of 3 new titles, not an empty page."""
    placed, _ = build(PageRules(rules=({"rule": "min_titles", "n": 4},)), rows=6, cols=3)
    assert len(placed) == 6 and all(len(r.title_ids) == 3 for r in placed)


def test_max_rows_per_ranker() -> None:
    placed, _ = build(PageRules(rules=({"rule": "max_rows", "ranker": "*", "max": 2}, {"rule": "max_rows", "ranker": "top_n", "max": 1})))
    counts = pd.Series([r.ranker for r in placed]).value_counts()
    assert counts.max() <= 2 and counts.get("top_n", 0) <= 1
    assert len(placed) >= 4


def test_min_titles() -> None:
    placed, _ = build(PageRules(rules=({"rule": "min_titles", "n": 8},)), cols=10)
    assert placed and all(len(r.title_ids) >= 8 for r in placed)
    short, _ = build(PageRules(rules=()), rows=11)
    assert any(len(r.title_ids) < 8 for r in short)  # the rule is what removed them


def test_min_viewport_genres() -> None:
    rules = PageRules(viewport_rows=2, viewport_cols=10, rules=({"rule": "min_viewport_genres", "k": 6},))
    placed, _ = build(rules)
    vp = [CATALOG.index_of(np.array(r.title_ids)) for r in placed[:2]]
    genres = CATALOG.genre_matrix[np.concatenate(vp)].any(axis=0).sum()
    assert genres >= 6


def test_maturity_rule_filters_titles() -> None:
    placed, _ = build(PageRules(rules=({"rule": "maturity", "allowed": ["PG"]},)))
    shown = CATALOG.index_of(np.array([t for r in placed for t in r.title_ids]))
    assert shown.size and all(CATALOG.maturity[i] == "PG" for i in shown)
    unfiltered, _ = build(PageRules(rules=()))
    assert any(CATALOG.maturity[i] == "R" for r in unfiltered for i in CATALOG.index_of(np.array(r.title_ids)))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule": "pin", "ranker": "nope", "within": 2}, "(pin): unknown ranker 'nope'"),
        ({"rule": "max_rows", "ranker": "ghost", "max": 2}, "(max_rows): unknown ranker 'ghost'"),
        ({"rule": "min_titles", "n": 4, "exempt": ["top_n", "phantom"]}, "(min_titles): unknown ranker 'phantom'"),
        ({"rule": "max_rows", "ranker": "*", "max": 0}, "(max_rows): max 0 for every ranker leaves every page empty"),
        ({"rule": "maturity", "allowed": [], "allow_unrated": False}, "(maturity): allows no rating and no unrated title"),
    ],
)
def test_rules_naming_unknown_rankers_are_rejected(rule: dict, message: str) -> None:
    with pytest.raises(HomepageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PageRules(rules=(rule,)).check(set(RANKERS))


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"rule": "pin", "ranker": "continue_watching"}, {"rule": "max_rows", "ranker": "continue_watching", "max": 0}],
            "rules[1] (max_rows): max 0 for 'continue_watching', which rules[0] (pin) places",
        ),
        ([{"rule": "max_rows", "ranker": "top_n", "max": 0}, {"rule": "pin", "ranker": "top_n", "within": 3}], "rules[0] (max_rows): max 0 for 'top_n', which rules[1] (pin)"),
        ([{"rule": "min_viewport_genres", "k": 65}], "rules[0] (min_viewport_genres): k 65 is more than the 64 genres"),
    ],
)
def test_contradictory_or_unmeetable_rules_are_refused_at_load_naming_the_rule(rules: list[dict], message: str) -> None:
    """A pin on a ranker capped at 0 rows, and more viewport genres than the page builder tracks, loaded without a word."""
    with pytest.raises(HomepageError, match=re.escape(message)):
        PageRules(rules=tuple(rules)).check(set(RANKERS))
    PageRules(rules=({"rule": "min_viewport_genres", "k": 64}, {"rule": "max_rows", "ranker": "top_n", "max": 0})).check(set(RANKERS))


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"rule": "pin", "ranker": "top_n", "within": 0}, "pin.within"),
        ({"rule": "max_rows", "max": -1}, "max_rows.max"),
        ({"rule": "min_titles", "n": 0}, "min_titles.n"),
        ({"rule": "min_viewport_genres", "k": 0}, "min_viewport_genres.k"),
        ({"rule": "maturity"}, "maturity.allowed"),
        ({"rule": "surprise"}, "rules.0"),
    ],
)
def test_invalid_rule_configs_name_the_rule(rule: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        PageRules(rules=(rule,))
    locs = [".".join(str(p) for p in err["loc"]) for err in e.value.errors()]
    assert any(field in loc for loc in locs), locs


# ------------------------------------------------------------------ features


def test_stage_features_change_when_an_overlapping_row_is_placed_above() -> None:
    cm = matrix()
    stats = TitleStats.compute(world(), CATALOG)
    feats = StageFeatures(cm, stats, signals(), 10, len(VOCAB), 4)
    everything = np.arange(len(cm))
    before = feats.view(0, everything).X
    top = [r.row_id for r in cm.rows].index("personalized:top")
    g3 = [r.row_id for r in cm.rows].index("personalized:g3")  # overlaps top
    pop = [r.row_id for r in cm.rows].index("top_n:pop")  # disjoint from top
    shown = set(feats.place(top, 0).tolist())
    assert shown == set(range(10))
    rest = np.delete(everything, top)
    after = feats.view(1, rest).X
    b = {i: before[i] for i in everything}
    a = {i: after[j] for j, i in enumerate(rest)}
    for name in ("dup_share", "value_disc", "pers_mean", "value_share"):
        assert a[g3][COL[name]] != b[g3][COL[name]], name
        assert a[pop][COL[name]] == pytest.approx(b[pop][COL[name]], nan_ok=True), name
    assert a[g3][COL["dup_share"]] > 0 and a[g3][COL["value_disc"]] < b[g3][COL["value_disc"]]
    assert a[g3][COL["same_ranker_above"]] == 1 and a[pop][COL["same_ranker_above"]] == 0
    assert a[g3][COL["stage"]] == 1 and a[g3][COL["genre_sim_max_above"]] > 0
    # the effective titles of g3 no longer contain anything placed above
    assert not shown & set(feats.view(2, rest).effective(int(np.flatnonzero(rest == g3)[0])).tolist())


def test_a_stage_view_does_not_change_when_later_rows_are_placed() -> None:
    """Views are never written after they are made: explain and training keep them across stages."""
    cm = matrix()
    feats = StageFeatures(cm, TitleStats.compute(world(), CATALOG), signals(), 10, len(VOCAB), 4)
    alive = np.ones(len(cm), bool)
    views, copies = [], []
    for stage, r in enumerate([1, 4, 8, 2]):
        v = feats.view(stage, np.flatnonzero(alive))
        views.append(v)
        copies.append((v.X.copy(), v.take.copy(), v.csum.copy(), [v.effective(j).tolist() for j in range(v.remaining.size)]))
        feats.place(r, stage)
        alive[r] = False
    feats.view(4, np.flatnonzero(alive))
    for v, (X, take, csum, eff) in zip(views, copies):
        np.testing.assert_array_equal(v.X, X)
        np.testing.assert_array_equal(v.take, take)
        np.testing.assert_array_equal(v.csum, csum)
        assert [v.effective(j).tolist() for j in range(v.remaining.size)] == eff
    assert copies[0][3] != copies[-1][3][: len(copies[0][3])]  # the rows did lose titles in between


# ------------------------------------------------------------------ model


def test_explain_gives_stage_features_score_rule_reason(page_model: PageModel) -> None:
    rules = PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": 2},))
    models = page_models(page_model, rules)
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=6, cols=10), explain=True)
    assert [r.stage for r in page.rows] == list(range(len(page.rows)))
    for r in page.rows:
        assert r.features is not None and list(r.features) == list(FEATURE_NAMES)
        assert r.features["stage"] == r.stage
        assert np.isfinite(r.score)
        assert r.reason.kind in KIND_VOCAB
    forced = [r for r in page.rows if r.forced_by]
    assert all(r.forced_by == "pin:continue_watching" for r in forced)
    assert any(r.ranker == "continue_watching" for r in page.rows[:2])
    quiet = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=6, cols=10))
    assert all(r.features is None for r in quiet.rows)


def test_page_model_refuses_features_the_code_does_not_compute(page_model: PageModel, tmp_path) -> None:  # noqa: ANN001
    d = page_model.save(tmp_path / "pm")
    m = json.loads((d / "manifest.json").read_text())
    m["feature_names"] = [*m["feature_names"][:-1], "moon_phase"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(HomepageError, match="does not compute \\(moon_phase;.*retrain the bundle with this code"):
        PageModel.load(d)
    m["feature_names"] = list(reversed(FEATURE_NAMES))  # every name known, but not the booster's order
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(HomepageError, match="are not the booster's"):
        PageModel.load(d)


def test_a_page_model_trained_on_some_of_the_features_loads_and_reads_them_by_name(tmp_path) -> None:  # noqa: ANN001
    """The baseline of a feature experiment: a bundle trained before a stage feature was added still loads and scores."""
    X, y, groups = stage_data()
    older = tuple(reversed([f for f in FEATURE_NAMES if f not in ("fresh_mean", "value_rel")]))
    model = PageModel.fit(X, y, groups, VOCAB, KIND_VOCAB, num_rounds=20, params={"min_data_in_leaf": 5, "num_threads": 1}, features=older)
    loaded = PageModel.load(model.save(tmp_path / "pm"))
    assert loaded.features == older
    X[::5, COL["fresh_mean"]] = 1e6  # a column the model does not read changes nothing
    np.testing.assert_array_equal(loaded.predict(X), model.booster.predict(X[:, [COL[f] for f in older]], num_threads=1))
    page = build_page(user(), world(), page_models(loaded), RequestContext(user_id=1, now=10**9, rows=6, cols=10))
    assert len(page.rows) >= 3


def test_saved_page_model_predicts_exactly_as_lightgbm(page_model: PageModel, tmp_path) -> None:  # noqa: ANN001
    loaded = PageModel.load(page_model.save(tmp_path / "pm"))
    cm = matrix()
    _, traces = assemble(cm, CATALOG, TitleStats.compute(world(), CATALOG), signals(), TemplateScorer(), PageRules(rules=()), VOCAB, 6, 10, explain=True)
    X = np.concatenate([t.view.X for t in traces])
    X[::7, COL["device"]] = np.nan
    np.testing.assert_array_equal(loaded.predict(X), page_model.booster.predict(X[:, page_model.columns], num_threads=1))


def test_page_model_training_does_not_depend_on_a_timing(capfd: pytest.CaptureFixture[str]) -> None:
    """LightGBM, left to choose, times its row-wise and column-wise histograms and keeps the faster:
    the same data on a busier machine gave another model (`homepage train` twice, two page models)."""
    rng = np.random.default_rng(1)
    X = rng.random((4000, len(COL)))
    X[:, COL["ranker"]] = rng.integers(0, len(VOCAB), 4000)
    X[:, COL["reason_kind"]] = rng.integers(0, len(KIND_VOCAB), 4000)
    X[:, COL["device"]] = np.nan
    y = rng.integers(0, 4, 4000)
    capfd.readouterr()
    models = [
        PageModel.fit(X, y, np.full(200, 20), VOCAB, KIND_VOCAB, num_rounds=5, params={"verbose": 1, "min_data_in_leaf": 20})
        for _ in range(2)
    ]
    out = capfd.readouterr()
    log = out.out + out.err
    assert "Number of data points" in log  # LightGBM's log was seen
    assert "Auto-choosing" not in log, log
    assert models[0].booster.model_to_string() == models[1].booster.model_to_string()


def test_page_model_evaluates_only_the_validation_set_and_trains_the_model_it_did_with_the_training_set_evaluated_too() -> None:
    """NDCG on the training set each round was work nothing read: without it, the same trees and the same early stop."""
    import lightgbm as lgb

    from homepage.pagebuilder.model import CATEGORICAL, DEFAULT_PARAMS, MODEL_FEATURES

    rng = np.random.default_rng(4)
    n = 6000
    X = rng.random((n, len(COL)))
    X[:, COL["ranker"]] = rng.integers(0, len(VOCAB), n)
    X[:, COL["reason_kind"]] = rng.integers(0, len(KIND_VOCAB), n)
    y = (rng.random(n) * 5 * X[:, COL["pers_mean"]]).astype(np.int32)
    groups = np.full(n // 20, 20)
    tr, va = slice(0, 4800), slice(4800, n)
    valid = (X[va], y[va], groups[240:])
    model = PageModel.fit(X[tr], y[tr], groups[:240], VOCAB, KIND_VOCAB, num_rounds=80, params={"min_data_in_leaf": 20}, valid=valid)
    assert set(model.booster.best_score) == {"valid"}

    cols = [COL[f] for f in MODEL_FEATURES]
    cat = [f for f in MODEL_FEATURES if f in CATEGORICAL]
    train = lgb.Dataset(X[tr][:, cols], y[tr], group=groups[:240], feature_name=list(MODEL_FEATURES), categorical_feature=cat, free_raw_data=False)
    sets = [train, lgb.Dataset(X[va][:, cols], y[va], group=groups[240:], reference=train)]
    old = lgb.train(
        {**DEFAULT_PARAMS, "min_data_in_leaf": 20}, train, num_boost_round=80, valid_sets=sets, valid_names=["train", "valid"],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )
    assert model.booster.best_iteration == old.best_iteration
    assert model.booster.model_to_string().split("parameters:")[0] == old.model_to_string().split("parameters:")[0]



def test_every_builtin_reason_kind_is_in_the_page_model_vocabulary() -> None:
    """A row whose reason kind is missing from the vocabulary reaches the model as 'other'."""
    from homepage.page import KIND_VOCAB
    from rankers.registry import ranker_class
    from rankers.testing import fitted, small_world

    world = small_world()
    kinds: set[str] = set()
    for name in ("top_n", "trending", "continue_watching", "video_to_video", "personalized"):
        ranker = fitted(ranker_class(name), world)
        for u in world.user_ids:
            kinds |= {row.reason.kind for row in ranker.rows(world.request(u))}
    assert {"top_n", "trending", "top_picks", "because_you_watched"} <= kinds  # the world exercises them
    assert kinds <= set(KIND_VOCAB), kinds - set(KIND_VOCAB)


def test_rows_sharing_a_heading_are_numbered_in_page_order() -> None:
    from homepage.domain import PlacedRow
    from homepage.page import distinct_headings

    def placed(title: str, stage: int) -> PlacedRow:
        return PlacedRow(f"r{stage}", "personalized", title, RowReason(kind="top_picks"), (1,), (1.0,), stage, 0.0)

    rows = [placed("Top picks for you", 0), placed("More picks for you", 1), placed("Dramas for you", 2), placed("More picks for you", 3), placed("More picks for you", 4)]
    got = [r.display_title for r in distinct_headings(rows)]
    assert got == ["Top picks for you", "More picks for you", "Dramas for you", "More picks for you (2)", "More picks for you (3)"]
    assert [r.row_id for r in distinct_headings(rows)] == [r.row_id for r in rows]


def test_build_page_numbers_rows_that_share_a_heading() -> None:
    from dataclasses import replace

    class SameTitle(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            return [replace(r, display_title="Popular now") for r in candidate_rows() if r.ranker == "top_n"]

    rankers = tuple(SameTitle() if r.name == "top_n" else r for r in page_models(None).rankers)
    models = PageModels("test", "h", CATALOG, rankers, rules=PageRules())
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=12, cols=10), policy="template")
    headings = [r.display_title for r in page.rows]
    assert len(set(headings)) == len(headings) and {"Popular now", "Popular now (2)"} <= set(headings)


def test_rows_breaking_the_contract_are_dropped_with_a_note_naming_the_ranker() -> None:
    """A plug-in returning lists, repeats or NaN loses that row, not the page (nor training, which collects the same way)."""
    from dataclasses import replace

    class Sloppy(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            good, other = [r for r in candidate_rows() if r.ranker == "top_n"]
            as_list = replace(other, row_id="top_n:list", title_ids=other.title_ids.tolist())
            twice = replace(other, row_id="top_n:twice", title_ids=np.r_[other.title_ids[:3], other.title_ids[:3]], scores=other.scores[:6])
            nan = replace(other, row_id="top_n:nan", scores=np.full(len(other), np.nan, np.float32))
            nan_row = replace(other, row_id="top_n:nan_row", row_score=float("nan"))
            taken = replace(other, row_id="personalized:top")  # another ranker's row id: served logs could not tell them apart
            # infinities (a float32 overflow, a -inf "exclude" left in): served as null scores, or ranked first on row_score
            inf = replace(other, row_id="top_n:inf", scores=np.r_[np.float32(np.inf), other.scores[1:]].astype(np.float32))
            inf_row = replace(other, row_id="top_n:inf_row", row_score=float("inf"))
            spaced = replace(other, row_id="top_n: new releases")  # POST /events refuses this row_id: its plays could not be logged
            return [good, as_list, twice, nan, "not a row", nan_row, taken, inf, inf_row, spaced]  # type: ignore[list-item]

    rankers = tuple(Sloppy() if r.name == "top_n" else r for r in page_models(None).rankers)
    models = PageModels("test", "h", CATALOG, rankers, rules=PageRules())
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=20, cols=10), policy="template")
    ids = {r.row_id for r in page.rows}
    assert "top_n:pop" in ids and not ids & {"top_n:list", "top_n:twice", "top_n:nan", "top_n:inf", "top_n:inf_row"}
    dropped = [n for n in page.notes if n.startswith("ranker top_n: row dropped")]
    assert "ranker top_n: row dropped: top_n:inf: NaN or infinite score" in dropped
    assert "ranker top_n: row dropped: top_n:inf_row: row_score must be a finite number, not inf" in dropped
    assert any(n.startswith("ranker top_n: row dropped: row_id 'top_n: new releases' does not match") for n in dropped), dropped
    assert len(dropped) == 9 and any("integer numpy array" in n for n in dropped) and any("appears twice" in n for n in dropped)
    assert any("NaN" in n for n in dropped) and any("not a CandidateRow" in n for n in dropped)
    assert any("row_score must be a finite number, not nan" in n for n in dropped) and any("row_id already used by ranker personalized" in n for n in dropped)
    assert [r.row_id for r in page.rows].count(good_id := "top_n:pop") == 1 and good_id in ids


@pytest.mark.parametrize("returned", [None, "one row"], ids=["none", "one-row"])
def test_a_ranker_returning_no_list_is_skipped_with_a_note(returned: str | None) -> None:
    """``rows()`` returning None or one row (not in a list) skips that ranker, like one that raises; the page is built."""

    class NotAList(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            one = next(r for r in candidate_rows() if r.ranker == "top_n")
            return None if returned is None else one  # type: ignore[return-value]

    rankers = tuple(NotAList() if r.name == "top_n" else r for r in page_models(None).rankers)
    models = PageModels("test", "h", CATALOG, rankers, rules=PageRules())
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=20, cols=10), policy="template")
    assert page.rows and all(r.ranker != "top_n" for r in page.rows)
    want = "NoneType" if returned is None else "CandidateRow"
    assert any(n == f"ranker top_n failed: rows() returned a {want}, not a list" for n in page.notes), page.notes
    assert ranker_problem(f"ranker top_n failed: rows() returned a {want}, not a list") == ("top_n", "failed")


def test_one_ranker_configured_twice_keeps_its_rows_under_their_own_ids() -> None:
    """A config may list a ranker twice (bundle.py gives each its own directory): the second's row ids get "@2",
    so nothing is dropped and served logs can tell the rows apart; one ranker repeating an id of its own is dropped."""
    from dataclasses import replace

    from homepage.page import collect_candidates

    base = page_models(None).rankers
    top_n = next(r for r in base if r.name == "top_n")
    req = RankRequest(user(), world(), CATALOG, RequestContext(user_id=1, now=10**9, rows=20, cols=10))
    rows, notes = collect_candidates((*base, top_n), req)
    ids = [r.row_id for r in rows]
    assert not notes and len(ids) == len(set(ids))
    assert {i for i in ids if i.startswith("top_n")} == {"top_n:pop", "top_n:pop2", "top_n:pop@2", "top_n:pop2@2"}

    class Repeats(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            first = next(r for r in candidate_rows() if r.ranker == "top_n")
            return [first, replace(first, title_ids=first.title_ids[::-1].copy())]

    rows, notes = collect_candidates((Repeats(),), req)
    assert [r.row_id for r in rows] == ["top_n:pop"] and notes == ["ranker top_n: row dropped: top_n:pop: row_id already used by another of its rows"]


def test_title_stats_are_never_a_dropped_world_states() -> None:
    """World states made and dropped one after another (a notebook sweeping the half-life at one time) get
    each other's memory, hence id(): each must get its own title statistics, never a dropped state's."""
    models = page_models(None)
    counts = np.arange(N_TITLES, 0, -1).astype(np.int64)
    z = np.zeros(N_TITLES)
    for k in range(30):
        w = GlobalState(10**9, 7 * 86400.0, frozen(counts), frozen(np.roll(counts, k) * 0.5), frozen(z), frozen(z.astype(np.int64)))
        np.testing.assert_array_equal(models.title_stats(w).trend, TitleStats.compute(w, CATALOG).trend, err_msg=f"world {k}")
        del w


@pytest.mark.parametrize("shape", [{"cols": 0}, {"rows": 0}, {"rows": -1}], ids=["no-cols", "no-rows", "negative-rows"])
def test_a_request_for_a_page_without_rows_or_columns_is_refused_naming_the_field(shape: dict[str, int]) -> None:
    """A library caller's RequestContext is not validated as the API's parameters are: cols=0 was a ZeroDivisionError
    in the stage features, rows=-1 an empty page."""
    (field,) = shape
    with pytest.raises(HomepageError, match=rf"^request\.{field}: {shape[field]};"):
        build_page(user(), world(), page_models(None), RequestContext(user_id=1, now=10**9, **shape))


@pytest.mark.parametrize("policy", ["row-ranking", "template", "single-list"])  # stage-wise needs a trained model; its candidates are row-ranking's
def test_a_ranker_returning_unsigned_title_ids_does_not_fail_the_page(policy: str) -> None:
    """``uint64`` ids are integers, so the row passes the contract check; concatenated with the other rankers'
    ``int64`` ids numpy made them float64 and the id lookup raised: every page fell back (``model_error``)."""
    from dataclasses import replace

    class Unsigned(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            rows = [r for r in candidate_rows() if r.ranker == "top_n"]
            huge = replace(rows[1], row_id="top_n:huge", title_ids=np.r_[rows[1].title_ids.astype(np.uint64)[:-1], np.uint64(2**64 - 1)])
            return [replace(rows[0], title_ids=rows[0].title_ids.astype(np.uint64)), huge]

    rankers = tuple(Unsigned() if r.name == "top_n" else r for r in page_models(None).rankers)
    models = PageModels("test", "h", CATALOG, rankers, rules=PageRules())
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=20, cols=10), policy=policy)
    placed = {r.row_id: r for r in page.rows}
    if policy != "single-list":
        assert "top_n:pop" in placed and all(isinstance(t, int) for t in placed["top_n:pop"].title_ids)
        assert 2**64 - 1 not in placed.get("top_n:huge", placed["top_n:pop"]).title_ids  # an id no catalog holds is left out
    assert not page.notes


def test_a_second_instances_suffix_never_makes_a_row_id_the_events_api_refuses() -> None:
    """The "@2" of a ranker configured twice is checked with the id: a 127-character id would become 129, served under
    an id POST /events refuses (so its plays could never be logged); such a row is dropped with a note instead."""
    from dataclasses import replace

    from homepage.page import collect_candidates
    from rankers.base import ROW_ID

    class LongIds(HandRanker):
        name: ClassVar[str] = "top_n"

        def rows(self, request: RankRequest) -> list[CandidateRow]:
            first = next(r for r in candidate_rows() if r.ranker == "top_n")
            return [replace(first, row_id="top_n:" + "x" * 121)]  # 127 characters: valid alone

    req = RankRequest(user(), world(), CATALOG, RequestContext(user_id=1, now=10**9, rows=20, cols=10))
    rows, notes = collect_candidates((LongIds(), LongIds()), req)
    assert all(ROW_ID.match(r.row_id) for r in rows), [r.row_id for r in rows]
    assert [r.row_id for r in rows] == ["top_n:" + "x" * 121]
    assert len(notes) == 1 and notes[0].startswith("ranker top_n: row dropped: row_id 'top_n:xxx") and "@2" in notes[0], notes


def test_rank_value_and_standardised_scores_by_hand() -> None:
    """value: 1 / log2(2 + rank) of the user's unseen titles by personal score (ties by index), 0 for seen ones and past ``top``."""
    s = np.array([0.9, 0.5, 0.9, 0.1, 0.7], np.float32)
    v = UserSignals.rank_value(s, np.array([4]), top=3)  # title 4 (0.7) is seen
    # unseen by score: 0 and 2 (0.9, tied: the lower index first), then 1 (0.5); 3 is past the top 3
    assert v.tolist() == pytest.approx([1.0, 1 / math.log2(4), 1 / math.log2(3), 0.0, 0.0])
    z = UserSignals.standardise(s)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-6) and float(z.std()) == pytest.approx(1.0, rel=1e-5)
    assert np.argsort(z, kind="stable").tolist() == np.argsort(s, kind="stable").tolist()


def test_user_signals_count_the_days_since_the_latest_event() -> None:
    day = 86_400
    u = dataclasses.replace(user(), ts=frozen(10**9 - day * np.array([30, 20, 10, 3], dtype=np.int64)))
    models = PageModels("v", "h", CATALOG, (*(r for r in hand_rankers() if r.name != "personalized"), Personal()))
    sig, raw = user_signals(u, models, RequestContext(user_id=1, now=10**9 + 2 * day, device="web", hour=21))
    assert sig.days_since_last == pytest.approx(5.0)  # the latest event, 3 days before as_of, not the first
    assert (sig.history_len, sig.device, sig.hour) == (4, 1, 21) and raw is not None


def test_a_new_user_who_stated_genres_has_personal_signals_when_the_personal_ranker_scores_them() -> None:
    """Without history the page builder had no personal features: the stated genres give them (``stated_genre_scores``);
    a personal ranker without that method, and a user who stated nothing, stay without."""

    class Stated(Personal):
        def stated_genre_scores(self, user: UserState, catalog: Catalog) -> np.ndarray | None:
            col = catalog.genre_matrix[:, catalog.genre_index[user.favourite_genres[0]]]
            return col.astype(np.float32)

    others = tuple(r for r in hand_rankers() if r.name != "personalized")
    ctx = RequestContext(user_id=9, now=10**9)
    cold = UserState.empty(9, 10**9, favourite_genres=("Horror",))
    sig, raw = user_signals(cold, PageModels("v", "h", CATALOG, (*others, Stated())), ctx)
    horror = CATALOG.genre_matrix[:, CATALOG.genre_index["Horror"]].astype(bool)
    assert raw is not None and np.array_equal(raw > 0, horror) and sig.personal is not None
    assert sig.value is not None and sig.value[horror].min() > sig.value[~horror].max()  # the stated genre's titles rank first
    assert user_signals(cold, PageModels("v", "h", CATALOG, (*others, Personal())), ctx)[1] is None
    assert user_signals(UserState.empty(9, 10**9), PageModels("v", "h", CATALOG, (*others, Stated())), ctx)[1] is None


def test_single_list_keeps_a_last_partial_row() -> None:
    """Fewer titles than the page holds: the last row is short, not dropped."""
    raw = personal_scores()
    rows = single_list_rows(user(), world(), raw, CATALOG, rows=10, cols=10)
    assert [len(r.title_ids) for r in rows] == [10] * 7 + [6]  # 80 titles, 4 seen: 76
    shown = np.concatenate([r.title_ids for r in rows])
    assert shown.tolist() == CATALOG.title_ids[[i for i in range(N_TITLES) if i not in (76, 77, 78, 79)]].tolist()  # best first


def test_oracle_gain_discounts_each_hit_by_the_column_it_would_show_in_now() -> None:
    """The training label: over a row's targets, 1 / log2(2 + its column once the rows above took their titles)."""
    cm = matrix([row("top_n", "a", [0, 1, 2, 3], "top_n"), row("personalized", "b", [1, 5, 6, 7], "top_picks")])
    feats = StageFeatures(cm, TitleStats.compute(world(), CATALOG), signals(), 4, len(VOCAB), 3)
    oracle = OracleScorer(np.array([2, 6]), cols=4)
    assert oracle.gains(feats.view(0, np.array([0, 1]))).tolist() == pytest.approx([1 / math.log2(4)] * 2)  # both at column 2
    feats.place(0, 0)
    # row b lost title 1 to row a: title 6 moves to column 1
    assert oracle.gains(feats.view(1, np.array([1]))).tolist() == pytest.approx([1 / math.log2(3)])


def test_oracle_gains_equal_a_per_stage_isin_over_random_pages() -> None:
    """The oracle's kept gains and once-per-matrix target cells equal each stage's own ``np.isin``, bit for bit.

    One oracle scores pages on two different candidate matrices in turn, so target cells kept from
    the first matrix must not be read for the second.
    """
    rng = np.random.default_rng(11)
    stats = TitleStats.compute(world(), CATALOG)
    for trial in range(12):
        cols = int(rng.choice([4, 10, 25]))
        oracle = OracleScorer(rng.choice(N_TITLES, size=int(rng.integers(1, 20)), replace=False), cols)
        disc = 1.0 / np.log2(np.arange(cols) + 2.0)
        for _ in range(2):
            rows = [
                row(str(rng.choice(RANKERS)), f"r{j}", rng.choice(N_TITLES, size=int(rng.integers(1, 35)), replace=False), "top_n", float(rng.random()))
                for j in range(int(rng.integers(2, 12)))
            ]
            cm = matrix(rows)
            _, traces = assemble(cm, CATALOG, stats, signals(), oracle, PageRules(rules=()), VOCAB, 6, cols, explain=True)
            assert traces
            for tr in traces:
                v = tr.view
                rem = v.remaining
                hit = v.take[rem] & np.isin(v.titles[rem], oracle.targets)
                want = np.where(hit, disc[np.clip(v.csum[rem] - 1, 0, cols - 1)], 0.0).sum(axis=1)
                assert oracle.gains(v).tobytes() == want.tobytes(), trial
                assert np.array_equal(tr.scores, want + 1e-6 * np.tanh(cm.row_score[rem])), trial


def test_min_viewport_genres_counts_the_titles_the_viewport_shows() -> None:
    """A 1 x 1 viewport, k 2: row "a" shows Action there and Comedy, Drama only past the viewport's column; the rule
    counted a row's genres over all its columns, so "a" (3 genres, 1 visible) passed and "b" (Action, Romance) was not forced."""
    rows = [row("personalized", "a", [18, 2], "genre"), row("top_n", "b", [0], "top_n")]
    rules = PageRules(viewport_rows=1, viewport_cols=1, rules=({"rule": "min_viewport_genres", "k": 2},))
    placed, _ = assemble(matrix(rows), CATALOG, TitleStats.compute(world(), CATALOG), signals(), TemplateScorer(), rules, VOCAB, 2, 4)
    assert [(r.row_id, r.forced_by) for r in placed] == [("top_n:b", "min_viewport_genres:2"), ("personalized:a", None)]


def test_a_pin_is_kept_whatever_the_order_of_the_rules() -> None:
    """min_viewport_genres listed before the pin: at the pin's last row the genre rule refused continue watching
    (no new genre), so the pin was not due and continue watching went to row 3, past ``within`` 2."""
    rows = [row("top_n", "b", [0], "top_n"), row("personalized", "a", [18], "genre"), row("continue_watching", "cw", [16], "continue_watching"), row("video_to_video", "c", [11], "because_you_watched")]
    scorer = TemplateScorer(order=("personalized", "top_n", "video_to_video", "continue_watching"))
    pin, genres = {"rule": "pin", "ranker": "continue_watching", "within": 2}, {"rule": "min_viewport_genres", "k": 4}
    for rules in ((pin, genres), (genres, pin)):
        cm = matrix(rows)
        placed, _ = assemble(cm, CATALOG, TitleStats.compute(world(), CATALOG), signals(), scorer, PageRules(viewport_rows=2, rules=rules), VOCAB, 4, 4)
        assert [(r.row_id, r.forced_by) for r in placed[:2]] == [("top_n:b", "min_viewport_genres:4"), ("continue_watching:cw", "pin:continue_watching")]


def unmet(rows: list[CandidateRow], rules: PageRules, scorer: object, n_rows: int = 4, cols: int = 4) -> tuple[list[PlacedRow], list[str]]:
    """The placed rows of hand-made candidate rows and the notes of the rules they do not meet."""
    cm = matrix(rows)
    placed, _ = assemble(cm, CATALOG, TitleStats.compute(world(), CATALOG), signals(), scorer, rules, VOCAB, n_rows, cols)
    return placed, unmet_rules(rules, cm, VOCAB, placed, CATALOG, n_rows)


def test_a_viewport_genre_target_the_greedy_choice_misses_is_noted() -> None:
    """Three one-title rows, 2 viewport rows, k 4: "b" + "c" show 4 genres, but "a" first leaves 3, and nothing said so."""
    rows = [row("personalized", "a", [1], "genre"), row("top_n", "b", [0], "top_n"), row("video_to_video", "c", [2], "because_you_watched")]
    rules = PageRules(viewport_rows=2, rules=({"rule": "pin", "ranker": "continue_watching"}, {"rule": "min_viewport_genres", "k": 4}))
    placed, notes = unmet(rows, rules, TemplateScorer(order=("personalized", "top_n", "video_to_video")))
    assert placed[0].row_id == "personalized:a"
    assert notes == ["rules[1] (min_viewport_genres) unmet: 3 genres among the titles the viewport shows (2 x 6), k 4"]
    assert unmet(rows, rules, TemplateScorer(order=("top_n", "video_to_video", "personalized")))[1] == []


def test_a_pinned_row_whose_titles_all_went_to_rows_above_is_noted() -> None:
    """Rankers that do not exclude each other's titles: "a" above takes continue watching's only title, so the pin cannot place it."""
    rows = [row("personalized", "a", [16, 1, 2], "genre"), row("continue_watching", "cw", [16], "continue_watching"), row("top_n", "b", [3, 4], "top_n")]
    rules = PageRules(rules=({"rule": "min_titles", "n": 1}, {"rule": "pin", "ranker": "continue_watching", "within": 2}))
    placed, notes = unmet(rows, rules, TemplateScorer(order=("personalized", "top_n", "continue_watching")))
    assert "continue_watching" not in [r.ranker for r in placed]
    assert notes == ["rules[1] (pin) unmet: continue_watching not on the page (no title of its row left new), not within the first 2 rows"]


def test_build_page_notes_an_unmet_rule(page_model: PageModel) -> None:
    """A page that cannot meet its genre target says so in its notes (and so in explain), next to the candidate notes."""
    rules = PageRules(viewport_rows=1, viewport_cols=1, rules=({"rule": "min_viewport_genres", "k": 3},))
    page = build_page(user(), world(), page_models(page_model, rules), RequestContext(user_id=7, now=10**9, rows=4, cols=6))
    assert "rules[0] (min_viewport_genres) unmet: 2 genres among the titles the viewport shows (1 x 1), k 3" in page.notes
    assert not [n for n in build_page(user(), world(), page_models(page_model), RequestContext(user_id=7, now=10**9, rows=4, cols=6)).notes if "unmet" in n]


def test_min_viewport_genres_spreads_the_missing_genres_over_the_viewport_rows_left() -> None:
    """5 genres missing with 3 viewport rows to go: a row must bring ceil(5 / 3) = 2 new ones now."""
    from homepage.pagebuilder.rules import eligible

    rules = PageRules(viewport_rows=3, viewport_cols=10, rules=({"rule": "min_viewport_genres", "k": 5},))
    args = (["a"], np.zeros(3, np.int64), np.full(3, 10), np.array([1.0, 2.0, 3.0]), np.zeros(2, np.int64))
    ok, forced = eligible(rules, 0, *args, viewport_genre_count=0)
    assert ok.tolist() == [False, True, True] and forced == "min_viewport_genres:5"
    ok, forced = eligible(rules, 2, *args, viewport_genre_count=2)  # 3 missing, one row left: all 3 now
    assert ok.tolist() == [False, False, True]
