"""The page builder's stage features and pages against a plain, row-by-row reference.

``homepage.pagebuilder.features`` computes every stage with whole-matrix numpy calls for
speed. This file recomputes each stage from scratch, one row and one title at a time, from
nothing but the rows placed above, and checks along real pages that:

- every stage feature (``FEATURE_NAMES``, in order) equals the reference up to float32 rounding;
- each row's effective titles (what it would show now) are the reference's;
- the row placed at each stage is the best eligible one when the page model scores the
  *reference* features under the reference rules, and it shows the reference titles.

So speed work cannot silently change what the features mean or which pages are served.
It runs on the committed synthetic world (``fixtures/world-small``) with a bundle trained
in the test, and on the hand-made rows of ``test_pagebuilder``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from homepage.catalog import Catalog
from homepage.domain import RequestContext
from homepage.page import PageModels, build_page, prepare_request
from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats
from homepage.pagebuilder.features import FEATURE_NAMES, VIEWPORT_COLS, UserSignals
from homepage.pagebuilder.loop import StageTrace, assemble
from homepage.pagebuilder.policies import policy as get_policy
from homepage.pagebuilder.rules import MaxRowsRule, MinTitlesRule, MinViewportGenresRule, PageRules, PinRule

RTOL, ATOL = 1e-5, 1e-6


# ------------------------------------------------------------------ the reference


@dataclass
class Placed:
    """The page above a stage, as the reference keeps it: plain Python sets and counts."""

    shown: set[int] = field(default_factory=set)  # catalog indices on the page
    genres_above: list[set[int]] = field(default_factory=list)  # each placed row's genres, in order
    viewport_genres: set[int] = field(default_factory=set)  # of the viewport rows' titles (the new_genres feature)
    visible_genres: set[int] = field(default_factory=set)  # of the titles the viewport shows (min_viewport_genres)
    rankers: list[int] = field(default_factory=list)  # ranker code of each placed row
    kinds: list[int] = field(default_factory=list)


def title_genres(catalog: Catalog, t: int) -> set[int]:
    """The title's genres among the first 64 (the page builder's genre sets hold 64)."""
    return {int(g) for g in np.flatnonzero(catalog.genre_matrix[t, :64])}


def row_titles(cm: CandidateMatrix, r: int) -> list[int]:
    """The row's known (and allowed) titles, in the ranker's order."""
    return [int(t) for t in cm.titles[r] if t >= 0]


def effective_titles(cm: CandidateMatrix, r: int, page: Placed, cols: int) -> list[int]:
    """What row ``r`` would show now: its titles not yet on the page, the first ``cols`` of them."""
    return [t for t in row_titles(cm, r) if t not in page.shown][:cols]


def reference_row(
    cm: CandidateMatrix, r: int, catalog: Catalog, stats: TitleStats, user: UserSignals, page: Placed, stage: int, cols: int
) -> dict[str, float]:
    """One row's features at one stage, straight from their definitions (``rel`` features left to the caller)."""
    titles = row_titles(cm, r)
    eff = effective_titles(cm, r, page, cols)
    n = len(eff)
    head = [t for t in cm.titles[r][: min(cols, cm.titles.shape[1])] if t >= 0]
    genres: set[int] = set().union(*(title_genres(catalog, t) for t in eff)) if eff else set()
    f: dict[str, float] = {
        "ranker": float(cm.ranker[r]),
        "reason_kind": float(cm.kind[r]),
        "row_score": float(np.float32(cm.row_score[r])),
        "row_len": float(len(titles)),
        "fill": n / cols,
        "dup_share": sum(t in page.shown for t in head) / max(len(head), 1),
        "pop_mean": sum(float(stats.popularity[t]) for t in eff) / max(n, 1),
        "trend_mean": sum(float(stats.trend[t]) for t in eff) / max(n, 1),
        "fresh_mean": sum(float(stats.freshness[t]) for t in eff) / max(n, 1),
        "genre_sim_page": len(genres & set().union(*page.genres_above)) / max(len(genres), 1),
        "genre_sim_max_above": max((len(genres & a) / max(len(genres | a), 1) for a in page.genres_above), default=0.0),
        "new_genres": float(len(genres - page.viewport_genres)),
        "same_ranker_above": float(page.rankers.count(int(cm.ranker[r]))),
        "same_kind_above": float(page.kinds.count(int(cm.kind[r]))),
        "stage": float(stage),
        "hist_len_log": math.log1p(user.history_len),
        "days_since_last": user.days_since_last,
        "device": float(user.device) if user.device >= 0 else math.nan,
        "hour": float(user.hour) if user.hour >= 0 else math.nan,
    }
    if user.personal is None:
        f.update(pers_mean=math.nan, pers_max=math.nan, pers_first=math.nan)
    else:
        pers = [float(user.personal[t]) for t in eff]
        f["pers_mean"] = sum(pers) / max(n, 1)
        f["pers_max"] = max(pers) if pers else math.nan
        f["pers_first"] = pers[0] if pers else math.nan
    if user.value is None:
        f.update(value_disc=math.nan, value_viewport=math.nan, value_count=math.nan, value_share=math.nan)
    else:
        value = [float(user.value[t]) for t in eff]
        disc = [1.0 / math.log2(col + 2.0) for col in range(n)]
        total = sum(float(user.value[t]) for t in titles)
        f["value_disc"] = sum(v * d for v, d in zip(value, disc))
        f["value_viewport"] = sum(v * d for col, (v, d) in enumerate(zip(value, disc)) if col < VIEWPORT_COLS)
        f["value_count"] = float(sum(v > 0 for v in value))
        f["value_share"] = sum(value) / total if total > 0 else 0.0
    return f


def reference_stage(
    cm: CandidateMatrix, remaining: list[int], catalog: Catalog, stats: TitleStats, user: UserSignals, page: Placed, stage: int, cols: int
) -> np.ndarray:
    """The (remaining rows x FEATURE_NAMES) matrix of one stage, in float64."""
    rows = [reference_row(cm, r, catalog, stats, user, page, stage, cols) for r in remaining]
    best_pers = max((f["pers_mean"] for f in rows if not math.isnan(f["pers_mean"])), default=math.nan)
    best_value = max((f["value_disc"] for f in rows), default=math.nan)
    for f in rows:
        f["pers_rel"] = f["pers_mean"] - best_pers if user.personal is not None else math.nan
        f["value_rel"] = f["value_disc"] - best_value if user.value is not None else math.nan
    return np.array([[f[name] for name in FEATURE_NAMES] for f in rows], dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def reference_eligible(
    rules: PageRules, stage: int, names: list[str], cm: CandidateMatrix, remaining: list[int], page: Placed, cols: int, new_genres: np.ndarray
) -> np.ndarray:
    """Which remaining rows the rules let through at ``stage`` (a due pin first, then genre rules in their configured order)."""
    n_eff = np.array([len(effective_titles(cm, r, page, cols)) for r in remaining])
    count = {code: page.rankers.count(code) for code in set(cm.ranker.tolist())}
    ok = n_eff > 0
    pinned = {names.index(r.ranker) for r in rules.rules if isinstance(r, PinRule) and r.ranker in names}
    for rule in rules.rules:
        if isinstance(rule, MinTitlesRule):  # a pinned ranker's first row needs one new title
            first_of_pinned = np.array([int(cm.ranker[r]) in pinned and page.rankers.count(int(cm.ranker[r])) == 0 for r in remaining], dtype=bool)
            exempt = np.array([int(cm.ranker[r]) < len(names) and names[cm.ranker[r]] in rule.exempt for r in remaining], dtype=bool)
            ok &= (n_eff >= min(rule.n, cols)) | first_of_pinned | exempt  # an exempt ranker's rows need one new title, for this rule only
        elif isinstance(rule, MaxRowsRule):
            for j, r in enumerate(remaining):
                name = names[cm.ranker[r]] if cm.ranker[r] < len(names) else None
                if (rule.ranker == "*" or rule.ranker == name) and count[int(cm.ranker[r])] >= rule.max:
                    ok[j] = False
    for rule in rules.rules:  # pins first, whatever the configured order
        if isinstance(rule, PinRule) and rule.ranker in names and reference_due_pin(rules, stage, names, cm, remaining, page, ok) is rule:
            return ok & (cm.ranker[remaining] == names.index(rule.ranker))
    for rule in rules.rules:
        if isinstance(rule, MinViewportGenresRule) and stage < rules.viewport_rows:
            need = rule.k - len(page.visible_genres)
            if need > 0:
                better = ok & (new_genres >= math.ceil(need / (rules.viewport_rows - stage)))
                if better.any() and not better.all():
                    ok = better
    return ok


def reference_due_pin(rules: PageRules, stage: int, names: list[str], cm: CandidateMatrix, remaining: list[int], page: Placed, ok: np.ndarray) -> PinRule | None:
    """The pin to place at ``stage``: the earliest due of the pending pins, once they fill every stage up to some deadline."""
    pending: dict[str, PinRule] = {}  # ranker -> its pin with the earliest deadline (first configured on a tie)
    for rule in rules.rules:
        if isinstance(rule, PinRule) and rule.ranker in names and rule.within - 1 >= stage:
            code = names.index(rule.ranker)
            if page.rankers.count(code) == 0 and (ok & (cm.ranker[remaining] == code)).any():
                if rule.ranker not in pending or rule.within < pending[rule.ranker].within:
                    pending[rule.ranker] = rule
    due = sorted(pending.values(), key=lambda r: r.within)  # stable: configured order on a tie
    if any(stage + j == r.within - 1 for j, r in enumerate(due)):
        return due[0]
    return None


# ------------------------------------------------------------------ checking a page against it


def check_page_against_reference(
    cm: CandidateMatrix,
    catalog: Catalog,
    stats: TitleStats,
    user: UserSignals,
    rules: PageRules,
    names: list[str],
    traces: list[StageTrace],
    cols: int,
    score: object | None = None,
) -> int:
    """Walk one built page stage by stage against the reference; returns the number of stages checked.

    ``score`` (the page model's predict) checks the choice from reference features; None skips that.
    """
    page = Placed()
    for stage, tr in enumerate(traces):
        remaining = [int(r) for r in tr.view.remaining]
        ref = reference_stage(cm, remaining, catalog, stats, user, page, stage, cols)
        got = tr.view.X.astype(np.float64)
        for c, name in enumerate(FEATURE_NAMES):
            np.testing.assert_allclose(got[:, c], ref[:, c], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=f"stage {stage}, feature {name}")
        for j, r in enumerate(remaining):
            assert tr.view.effective(j).tolist() == effective_titles(cm, r, page, cols), f"stage {stage}, row {r}: effective titles"
        visible = [effective_titles(cm, r, page, cols)[: rules.viewport_cols] for r in remaining]
        new_visible = np.array([len(set().union(*(title_genres(catalog, t) for t in v)) - page.visible_genres) for v in visible])
        ok = reference_eligible(rules, stage, names, cm, remaining, page, cols, new_visible)
        np.testing.assert_array_equal(tr.eligible, ok, err_msg=f"stage {stage}: eligible rows")
        if score is not None:
            s = np.where(ok, np.asarray(score(ref.astype(np.float32))), -np.inf)  # type: ignore[operator]
            top2 = np.sort(s)[-2:]
            if top2.size < 2 or top2[1] - top2[0] > 1e-9:  # a clear winner (exact ties are resolved by position)
                assert int(np.argmax(s)) == tr.chosen, f"stage {stage}: the model prefers another row on reference features"
        chosen = remaining[tr.chosen]
        eff = effective_titles(cm, chosen, page, cols)
        page.shown.update(eff)
        genres: set[int] = set().union(*(title_genres(catalog, t) for t in eff)) if eff else set()
        page.genres_above.append(genres)
        if stage < rules.viewport_rows:
            page.viewport_genres |= genres
            page.visible_genres.update(*(title_genres(catalog, t) for t in eff[: rules.viewport_cols]))
        page.rankers.append(int(cm.ranker[chosen]))
        page.kinds.append(int(cm.kind[chosen]))
    return len(traces)


# ------------------------------------------------------------------ hand-made rows (no data needed)


def test_hand_made_rows_match_the_reference() -> None:
    from test_pagebuilder import CATALOG, VOCAB, matrix, signals, world
    from homepage.pagebuilder.policies import TemplateScorer
    from homepage.pagebuilder.training import OracleScorer

    stats = TitleStats.compute(world(), CATALOG)
    rules = PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": 2}, {"rule": "max_rows", "ranker": "*", "max": 3}, {"rule": "min_titles", "n": 3}))
    pins = PageRules(rules=({"rule": "pin", "ranker": "continue_watching", "within": 2}, {"rule": "pin", "ranker": "top_n", "within": 3}, {"rule": "pin", "ranker": "video_to_video", "within": 3}))
    genres = PageRules(viewport_rows=3, viewport_cols=2, rules=({"rule": "min_viewport_genres", "k": 6}, {"rule": "pin", "ranker": "continue_watching", "within": 3}, {"rule": "min_viewport_genres", "k": 4}))
    rng = np.random.default_rng(1)
    checked = 0
    for cols in (5, 10, 40):
        for scorer in (TemplateScorer(), OracleScorer(rng.choice(80, 15, replace=False), cols)):
            for page_rules in (rules, pins, genres):
                cm = matrix()
                _, traces = assemble(cm, CATALOG, stats, signals(), scorer, page_rules, VOCAB, 10, cols, explain=True)
                checked += check_page_against_reference(cm, CATALOG, stats, signals(), page_rules, list(VOCAB), traces, cols)
    cold = UserSignals(None, None, 0, math.nan, 2, 13)
    _, traces = assemble(matrix(), CATALOG, stats, cold, TemplateScorer(), rules, VOCAB, 8, 10, explain=True)
    checked += check_page_against_reference(matrix(), CATALOG, stats, cold, rules, list(VOCAB), traces, 10)
    assert checked > 30


# ------------------------------------------------------------------ the committed synthetic world


@pytest.fixture(scope="module")
def world_small_models(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A bundle trained on fixtures/world-small (small page model), and its event log."""
    from redis_fixtures import WORLD_SMALL

    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.dataset import load_dataset
    from homepage.eventlog import EventLog

    ds = load_dataset(WORLD_SMALL)
    cfg = PipelineConfig(page=PageConfig(max_requests=60, num_rounds=30))
    bundle = train_bundle(ds, tmp_path_factory.mktemp("ref-models"), cfg)
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    return bundle, log


def test_world_small_stage_features_and_pages_match_the_reference(world_small_models) -> None:  # noqa: ANN001
    """Real rankers and a real page model: every stage of 30 requests x 3 policies, at two page sizes."""
    from homepage.replay.protocol import ReplayProtocol, sample_requests
    from homepage.replay.run import WorldCache

    bundle, log = world_small_models
    models = PageModels.from_bundle(bundle)
    assert models.page_model is not None
    requests = sample_requests(log, ReplayProtocol(split_time=bundle.until, seed=3))
    worlds = WorldCache(log, bundle.config.half_life_seconds, 3600)
    names = list(models.ranker_vocab)
    stages = 0
    for i in range(min(30, len(requests))):
        uid, t = int(requests.user_ids[i]), int(requests.times[i])
        user, world = log.user_state(uid, t), worlds.at(t)
        rows, cols = ((10, 10), (16, 25))[i % 2]
        ctx = RequestContext(user_id=uid, now=t, rows=rows, cols=cols, device=(None, "tv", "mobile")[i % 3], hour=(None, 20)[i % 2])
        prep = prepare_request(user, world, models, ctx)
        stats = models.title_stats(world)
        for name in ("stage-wise", "row-ranking", "template"):
            cm = models.candidate_matrix(prep.candidates, user, world)
            scorer = get_policy(name).make_scorer(models.page_model, cm)
            placed, traces = assemble(cm, models.catalog, stats, prep.signals, scorer, models.rules, models.ranker_vocab, rows, cols, explain=True)
            score = models.page_model.predict if name == "stage-wise" else None
            stages += check_page_against_reference(cm, models.catalog, stats, prep.signals, models.rules, names, traces, cols, score)
            # the page build_page serves is the page checked here, row for row and title for title
            page = build_page(user, world, models, ctx, policy=name, prepared=prep)
            assert [(r.row_id, r.title_ids) for r in page.rows] == [(r.row_id, r.title_ids) for r in placed]
            for r, tr in zip(placed, traces):
                shown = models.catalog.title_ids[tr.view.effective(tr.chosen)].tolist()
                assert list(r.title_ids) == shown
    assert stages > 300


def test_a_title_nobody_has_watched_yet_is_not_shown_but_the_users_own_are(world_small_models) -> None:
    """A movies file lists titles first rated years later: a page must not offer one before its first event."""
    import dataclasses

    from homepage.replay.protocol import ReplayProtocol, sample_requests
    from homepage.replay.run import WorldCache

    bundle, log = world_small_models
    models = PageModels.from_bundle(bundle)
    requests = sample_requests(log, ReplayProtocol(split_time=bundle.until, seed=3))
    worlds = WorldCache(log, bundle.config.half_life_seconds, 3600)
    checked_other = checked_own = 0
    for i in range(min(20, len(requests))):
        uid, t = int(requests.user_ids[i]), int(requests.times[i])
        user, world = log.user_state(uid, t), worlds.at(t)
        ctx = RequestContext(user_id=uid, now=t, rows=8, cols=10)
        page = build_page(user, world, models, ctx, policy="template")
        shown = [int(x) for r in page.rows for x in r.title_ids]
        own = set(models.catalog.title_ids[user.known_titles].tolist())
        others = [x for x in shown if x not in own]
        mine = [x for x in shown if x in own]
        if not others:
            continue
        # as if the first shown title and one of the user's own had no event in the world yet
        gone = models.catalog.index_of([others[0]] + mine[:1])
        counts = world.counts.copy()
        counts[gone] = 0
        page2 = build_page(user, dataclasses.replace(world, counts=counts), models, ctx, policy="template")
        shown2 = [int(x) for r in page2.rows for x in r.title_ids]
        assert others[0] not in shown2, (uid, t)
        checked_other += 1
        if mine:
            assert mine[0] in shown2, (uid, t)  # the user's own title (continue watching) stays
            checked_own += 1
    assert checked_other >= 10 and checked_own >= 1
