"""Generated inputs against the page loop's and the replay metrics' invariants.

The page loop on random candidate rows, rules, page shapes and scores (NaN and infinities
included): no title twice, rows within the shape and taken from their candidate row in
order, every row rule held. ``score_page`` against a plain implementation of the README's
definitions. The hand-made catalog is ``test_pagebuilder``'s.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pagebuilder import CATALOG, N_TITLES, VOCAB, row, signals, world

from homepage.domain import PlacedRow, RowReason
from homepage.page import KIND_VOCAB, distinct_headings
from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats
from homepage.pagebuilder.loop import assemble
from homepage.pagebuilder.policies import TemplateScorer
from homepage.pagebuilder.rules import MaturityRule, MaxRowsRule, MinTitlesRule, MinViewportGenresRule, PageRules, PinRule
from homepage.replay.metrics import score_page

STATS = TitleStats.compute(world(), CATALOG)


class FixedScorer:
    """Each candidate row's given score, at every stage (``stagewise``) or once."""

    def __init__(self, scores: list[float], stagewise: bool) -> None:
        self.s, self.stagewise = np.asarray(scores, dtype=np.float64), stagewise

    def score(self, view, cm) -> np.ndarray:  # noqa: ANN001
        return self.s[view.remaining]


def place(rows: list, rules: PageRules, n_rows: int, cols: int, scorer: object) -> list[PlacedRow]:
    cm = CandidateMatrix.build(rows, CATALOG, VOCAB, KIND_VOCAB, rules.allowed_titles(CATALOG.maturity))
    return assemble(cm, CATALOG, STATS, signals(), scorer, rules, VOCAB, n_rows, cols)[0]


# ------------------------------------------------------------------ minimal cases


def test_a_row_the_rules_refuse_is_never_placed_when_every_eligible_row_scores_minus_infinity() -> None:
    """Stage 1: "b" has no new title left, "c" scores -inf; "b" was placed, as an empty row."""
    rows = [row("top_n", "a", [0, 1], "top_n"), row("top_n", "b", [0, 1], "top_n"), row("top_n", "c", [5, 6], "top_n")]
    placed = place(rows, PageRules(rules=()), 2, 4, FixedScorer([0.0, 0.0, -math.inf], stagewise=True))
    assert [(p.row_id, len(p.title_ids)) for p in placed] == [("top_n:a", 2), ("top_n:c", 2)]


def test_a_row_scored_nan_is_placed_after_the_rows_with_a_score() -> None:
    """argmax takes NaN for the maximum: a scorer's NaN (a plug-in's mean of nothing) put its row first."""
    rows = [row("top_n", "a", [0, 1], "top_n"), row("top_n", "b", [2, 3], "top_n"), row("top_n", "c", [4, 5], "top_n")]
    placed = place(rows, PageRules(rules=()), 3, 4, FixedScorer([math.nan, 1.0, -math.inf], stagewise=False))
    assert [p.row_id for p in placed] == ["top_n:b", "top_n:a", "top_n:c"]


def test_a_pin_holds_when_the_pinned_row_scores_minus_infinity() -> None:
    rows = [row("top_n", "a", [0, 1], "top_n"), row("continue_watching", "cw", [5], "continue_watching")]
    rules = PageRules(rules=(PinRule(ranker="continue_watching", within=1),))
    placed = place(rows, rules, 2, 4, FixedScorer([0.0, -math.inf], stagewise=False))
    assert [p.row_id for p in placed] == ["continue_watching:cw", "top_n:a"]


def test_two_pins_within_two_rows_both_hold() -> None:
    """Each pin was forced only at its own last stage: the first took row 1, the second went to row 2 or below."""
    rows = [row("continue_watching", "cw", [5], "continue_watching"), row("top_n", "a", [0, 1], "top_n"), row("personalized", "p", [2, 3], "top_picks")]
    rules = PageRules(rules=(PinRule(ranker="continue_watching", within=2), PinRule(ranker="top_n", within=2)))
    placed = place(rows, rules, 3, 4, FixedScorer([0.0, 0.0, 1.0], stagewise=True))
    assert [(p.row_id, p.forced_by) for p in placed] == [
        ("continue_watching:cw", "pin:continue_watching"), ("top_n:a", "pin:top_n"), ("personalized:p", None)
    ]
    # one pin alone is still placed at its last stage, not before
    placed = place(rows, PageRules(rules=(PinRule(ranker="top_n", within=2),)), 3, 4, FixedScorer([0.0, 0.0, 1.0], stagewise=True))
    assert [(p.row_id, p.forced_by) for p in placed] == [("personalized:p", None), ("top_n:a", "pin:top_n"), ("continue_watching:cw", None)]


def test_a_single_list_page_under_a_maturity_rule_is_full() -> None:
    """The top 20 held two R-rated titles, chosen and then dropped: rows of 9."""
    from test_pagebuilder import page_models, user

    from homepage.domain import RequestContext
    from homepage.page import build_page

    models = page_models(None, PageRules(rules=(MaturityRule(allowed=("PG",)),)))
    page = build_page(user(), world(), models, RequestContext(user_id=1, now=10**9, rows=2, cols=10), policy="single-list")
    ids = [t for r in page.rows for t in r.title_ids]
    assert [len(r.title_ids) for r in page.rows] == [10, 10]
    assert models.allowed[CATALOG.index_of(np.array(ids, dtype=np.int64))].all()


def test_headings_stay_distinct_when_a_rankers_own_heading_carries_a_number() -> None:
    def placed(title: str, stage: int) -> PlacedRow:
        return PlacedRow(f"r{stage}", "top_n", title, RowReason(kind="top_n"), (1,), (1.0,), stage, 0.0)

    got = [r.display_title for r in distinct_headings([placed("Popular", 0), placed("Popular (2)", 1), placed("Popular", 2)])]
    assert got == ["Popular", "Popular (2)", "Popular (3)"]
    got = [r.display_title for r in distinct_headings([placed("Popular", 0), placed("Popular", 1), placed("Popular (2)", 2)])]
    assert len(set(got)) == 3 and got[:2] == ["Popular", "Popular (2)"]


# ------------------------------------------------------------------ the page loop

RANKERS = [*VOCAB, "other"]
SCORES = st.one_of(st.floats(-5, 5), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]))


@st.composite
def candidate_rows(draw: st.DrawFn) -> list:
    out = []
    for i in range(draw(st.integers(0, 7))):
        idx = draw(st.lists(st.integers(0, N_TITLES - 1), min_size=1, max_size=12, unique=True))
        out.append(row(draw(st.sampled_from(RANKERS)), f"k{i}", idx, draw(st.sampled_from(["top_n", "genre", "continue_watching", "odd"]))))
    return out


@st.composite
def page_rules(draw: st.DrawFn) -> PageRules:
    rules: list = []
    if draw(st.booleans()):
        rules.append(PinRule(ranker=draw(st.sampled_from(VOCAB)), within=draw(st.integers(1, 5))))
    for _ in range(draw(st.integers(0, 2))):
        rules.append(MaxRowsRule(ranker=draw(st.sampled_from(["*", *VOCAB])), max=draw(st.integers(1, 4))))
    if draw(st.booleans()):
        exempt = tuple(draw(st.lists(st.sampled_from(VOCAB), max_size=2, unique=True)))
        rules.append(MinTitlesRule(n=draw(st.integers(1, 6)), exempt=exempt))
    if draw(st.booleans()):
        rules.append(MinViewportGenresRule(k=draw(st.integers(1, 7))))
    if draw(st.booleans()):
        rules.append(MaturityRule(allowed=("PG",)))
    return PageRules(viewport_rows=draw(st.integers(1, 4)), rules=tuple(rules))


@settings(max_examples=150, deadline=None)
@given(rows=candidate_rows(), rules=page_rules(), n_rows=st.integers(1, 6), cols=st.integers(1, 8), stagewise=st.booleans(), data=st.data())
def test_every_page_keeps_the_loops_invariants(rows: list, rules: PageRules, n_rows: int, cols: int, stagewise: bool, data: st.DataObject) -> None:
    scorer = FixedScorer(data.draw(st.lists(SCORES, min_size=len(rows), max_size=len(rows))), stagewise) if data.draw(st.booleans()) else TemplateScorer()
    placed = place(rows, rules, n_rows, cols, scorer)
    again = place(rows, rules, n_rows, cols, scorer)
    assert [(p.row_id, p.title_ids) for p in placed] == [(p.row_id, p.title_ids) for p in again]
    assert len(placed) <= n_rows and len({p.row_id for p in placed}) == len(placed)
    allowed = rules.allowed_titles(CATALOG.maturity)
    min_titles = min(max([1] + [r.n for r in rules.rules if isinstance(r, MinTitlesRule)]), cols)
    exempt = {e for r in rules.rules if isinstance(r, MinTitlesRule) for e in r.exempt}
    pinned = {r.ranker for r in rules.rules if isinstance(r, PinRule)}
    source = {r.row_id: r for r in rows}
    shown: set[int] = set()
    count: Counter[str] = Counter()
    for p in placed:
        # the first ``cols`` titles of its candidate row not shown above and allowed, in order
        ids = source[p.row_id].title_ids.tolist()
        ok = [allowed is None or bool(allowed[CATALOG.index_of(np.array([t]))[0]]) for t in ids]
        assert list(p.title_ids) == [t for t, a in zip(ids, ok) if a and t not in shown][:cols]
        shown.update(p.title_ids)
        need = 1 if p.ranker in exempt or (p.ranker in pinned and count[p.ranker] == 0) else min_titles
        assert p.forced_by is None or p.forced_by.startswith("min_viewport_genres:") or p.forced_by == f"pin:{p.ranker}"
        assert need <= len(p.title_ids) <= cols
        count[p.ranker] += 1
    for r in rules.rules:
        if isinstance(r, MaxRowsRule):
            assert all(n <= r.max for k, n in count.items() if r.ranker in ("*", k))
        if isinstance(r, PinRule):
            at = [i for i, p in enumerate(placed) if p.ranker == r.ranker]
            assert not at or at[0] < min(r.within, n_rows)


@settings(max_examples=100, deadline=None)
@given(pins=st.dictionaries(st.sampled_from(VOCAB), st.integers(1, 3), min_size=2, max_size=4), n_rows=st.integers(2, 6), stagewise=st.booleans(), data=st.data())
def test_pins_that_can_all_hold_do(pins: dict[str, int], n_rows: int, stagewise: bool, data: st.DataObject) -> None:
    """Rows of disjoint titles, each pinned ranker with one or two: when the deadlines leave room, every pin holds."""
    rows, t = [], 0
    for name in VOCAB:
        for k in range(data.draw(st.integers(1 if name in pins else 0, 2))):
            rows.append(row(name, str(k), [t, t + 1], "top_n"))
            t += 2
    scores = data.draw(st.lists(st.floats(-3, 3), min_size=len(rows), max_size=len(rows)))
    placed = place(rows, PageRules(rules=tuple(PinRule(ranker=n, within=w) for n, w in pins.items())), n_rows, 4, FixedScorer(scores, stagewise))
    deadlines = sorted(min(w, n_rows) - 1 for w in pins.values())
    if all(d >= j for j, d in enumerate(deadlines)):
        for name, within in pins.items():
            at = [i for i, p in enumerate(placed) if p.ranker == name]
            assert at and at[0] < min(within, n_rows), (name, within, [p.ranker for p in placed])


# ------------------------------------------------------------------ replay metrics

N_CAT = 30
_rng = np.random.default_rng(0)
GENRES = _rng.random((N_CAT, 5)) < 0.3
SELF_INFO = _rng.random(N_CAT) * 5


def reference_metrics(grid: np.ndarray, targets: set[int], viewport: tuple[int, int]) -> dict[str, float]:
    """The README's definitions, slot by slot: a target shown twice counts once, at its best slot."""
    R, C = grid.shape
    disc = {(r, c): 1 / math.log2(r + 2) / math.log2(c + 2) for r in range(R) for c in range(C)}
    best: dict[int, float] = {}
    for (r, c), d in disc.items():
        if grid[r, c] in targets:
            best[grid[r, c]] = max(best.get(grid[r, c], 0.0), d)
    ideal = sum(sorted(disc.values(), reverse=True)[: len(targets)])
    vr, vc = min(viewport[0], R), min(viewport[1], C)
    shown = [int(t) for t in grid.ravel() if t >= 0]
    vshown = [int(t) for t in grid[:vr, :vc].ravel() if t >= 0]
    return {
        "ndcg_2d": sum(best.values()) / ideal if ideal else 0.0,
        "viewport_recall": len(set(vshown) & targets) / min(len(targets), vr * vc) if targets else 0.0,
        "page_recall": len(set(shown) & targets) / min(len(targets), R * C) if targets else 0.0,
        "duplicates": len(shown) - len(set(shown)),
        "viewport_genres": len({g for t in vshown for g in np.flatnonzero(GENRES[t])}),
        "novelty": sum(SELF_INFO[shown]) / len(shown) if shown else 0.0,
    }


@settings(max_examples=300, deadline=None)
@given(R=st.integers(1, 5), C=st.integers(1, 5), viewport=st.tuples(st.integers(1, 6), st.integers(1, 6)), data=st.data())
def test_page_metrics_equal_the_readmes_definitions(R: int, C: int, viewport: tuple[int, int], data: st.DataObject) -> None:
    grid = np.array(data.draw(st.lists(st.integers(-1, N_CAT - 1), min_size=R * C, max_size=R * C)), dtype=np.int64).reshape(R, C)
    targets = data.draw(st.lists(st.integers(0, N_CAT - 1), unique=True, max_size=12))
    got = score_page(grid, [f"r{i}" for i in range(R)], np.array(targets, dtype=np.int64), GENRES, SELF_INFO, viewport)
    for name, want in reference_metrics(grid, set(targets), viewport).items():
        assert math.isclose(got.values[name], want, rel_tol=1e-9, abs_tol=1e-12), name
    assert all(0.0 <= got.values[m] <= 1.0 + 1e-12 for m in ("ndcg_2d", "viewport_recall", "page_recall"))
    assert got.hits_grid.sum() == len(set(grid[grid >= 0].tolist()) & set(targets)) == len(got.hit_rankers)
