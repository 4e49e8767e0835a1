"""Training data for the page model from interaction history, built with the replay machinery.

For a request at time t, a row's label at a stage is its marginal gain: the user's titles
played after t that it adds and the rows above did not already cover, discounted by
column position, graded into relevance levels. Stage contexts follow the greedy order of
the best rows (an oracle that knows the targets), and they run through the very same
page loop and feature code as serving, so training and inference cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from homepage.config import PageConfig
from homepage.domain import RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, collect_candidates, ranker_problem, ranker_problem_counts, user_signals
from homepage.pagebuilder.candidates import CandidateMatrix
from homepage.pagebuilder.features import FEATURE_NAMES, StageView
from homepage.pagebuilder.loop import RowScorer, assemble
from homepage.replay.protocol import ReplayProtocol, Requests
from homepage.replay.run import CheckpointedWorlds
from rankers.base import RankRequest

if TYPE_CHECKING:
    from homepage.catalog import Catalog
    from homepage.config import PipelineConfig
    from homepage.pagebuilder.model import PageModel
    from rankers.base import FitInput, Ranker

LEVELS = 4


class OracleScorer:
    """Scores each row by its true marginal gain on this request (training only).

    A stage's gains are asked for twice (to drive the page, then to label the stage), so each
    view's are kept; which cells hold a target is worked out once per candidate matrix, not per stage.
    """

    stagewise = True

    def __init__(self, targets: np.ndarray, cols: int) -> None:
        self.targets = targets
        self.disc = 1.0 / np.log2(np.arange(cols) + 2.0)
        self._cells: tuple[np.ndarray, np.ndarray] | None = None  # (titles, is_target) of the last candidate matrix
        self._gains: dict[StageView, np.ndarray] = {}

    def _is_target(self, titles: np.ndarray) -> np.ndarray:
        """``np.isin(titles, targets)``, computed once for a candidate matrix's titles."""
        if self._cells is None or self._cells[0] is not titles:
            self._cells = (titles, np.isin(titles, self.targets))
        return self._cells[1]

    def gains(self, view: StageView) -> np.ndarray:
        g = self._gains.get(view)
        if g is None:
            g = self._gains[view] = view.discounted_hits(self._is_target(view.titles), self.disc)
        return g

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        # ties (typically zero gain) broken by the ranker's own row score, deterministically
        return self.gains(view) + 1e-6 * np.tanh(cm.row_score[view.remaining])


class ModelFollower:
    """Scores rows with a trained page model: training contexts that follow the model's choices."""

    stagewise = True

    def __init__(self, model: "PageModel") -> None:
        self.model = model

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        return self.model.predict(view.X)


def grade(gains: np.ndarray) -> np.ndarray:
    """Relevance levels 0..LEVELS: 0 for no gain, else relative to the stage's best row."""
    top = gains.max() if gains.size else 0.0
    if top <= 0:
        return np.zeros(gains.shape, dtype=np.int32)
    return np.where(gains > 0, np.ceil(LEVELS * gains / top), 0).astype(np.int32)


@dataclass(frozen=True, eq=False)
class StageData:
    """LambdaRank training data: one query group per (request, stage)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # group sizes, in order
    request_of_group: np.ndarray  # which request each group came from (for splits)
    # (request, ranker, "failed" | "rows dropped"): the rankers that raised or broke the row contract on a request
    problems: frozenset[tuple[int, str, str]] = frozenset()

    @staticmethod
    def empty(problems: frozenset[tuple[int, str, str]] = frozenset()) -> StageData:
        """No groups (requests where no row gained), keeping what went wrong on them."""
        X = np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
        return StageData(X, np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), problems)

    def concat(self, other: StageData) -> StageData:
        return StageData(
            np.concatenate([self.X, other.X]),
            np.concatenate([self.y, other.y]),
            np.concatenate([self.groups, other.groups]),
            np.concatenate([self.request_of_group, other.request_of_group]),
            self.problems | other.problems,
        )

    def subset(self, keep_requests: np.ndarray) -> StageData:
        keep_g = np.isin(self.request_of_group, keep_requests)
        row_g = np.repeat(np.arange(self.groups.size), self.groups)
        keep_rows = keep_g[row_g]
        keep = set(np.asarray(keep_requests).tolist())
        problems = frozenset(p for p in self.problems if p[0] in keep)
        return StageData(self.X[keep_rows], self.y[keep_rows], self.groups[keep_g], self.request_of_group[keep_g], problems)

    def with_requests(self, index: np.ndarray) -> StageData:
        """The same data with request ``i`` renamed ``index[i]`` (a part built on a subset of the requests)."""
        problems = frozenset((int(index[i]), r, k) for i, r, k in self.problems)
        return StageData(self.X, self.y, self.groups, index[self.request_of_group], problems)

    def ranker_problems(self) -> dict[str, dict[str, int]]:
        """Ranker -> requests on which it raised ("failed") or had rows dropped, as replay reports them."""
        return ranker_problem_counts((r, k) for _, r, k in self.problems)

    @staticmethod
    def in_request_order(chunks: list[StageData]) -> StageData:
        """Chunks built on parts of the requests, as one: groups ordered by request, each request's kept in order."""
        if not chunks:
            return StageData.empty()
        X = np.concatenate([c.X for c in chunks])
        y = np.concatenate([c.y for c in chunks])
        groups = np.concatenate([c.groups for c in chunks])
        owners = np.concatenate([c.request_of_group for c in chunks])
        order = np.argsort(owners, kind="stable")
        starts = np.concatenate(([0], np.cumsum(groups)[:-1]))
        rows = np.concatenate([np.arange(starts[g], starts[g] + groups[g]) for g in order]) if order.size else np.zeros(0, np.int64)
        return StageData(X[rows], y[rows], groups[order], owners[order], frozenset().union(*(c.problems for c in chunks)))


@dataclass(eq=False)
class _StageJob:
    """What a stage-data worker needs; set before forking so workers share the event log copy-on-write."""

    log: EventLog
    models: PageModels
    requests: Requests
    worlds: CheckpointedWorlds
    rows: int
    cols: int
    follow: "PageModel | None"


_STAGE_JOB: _StageJob | None = None


def _request_groups(job: _StageJob, i: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], set[tuple[int, str, str]]]:
    """Request ``i``'s (features, grades) per stage where at least two rows are eligible and one gains, and its ranker problems."""
    requests, catalog, models = job.requests, job.models.catalog, job.models
    uid, t = int(requests.user_ids[i]), int(requests.times[i])
    user = job.log.user_state(uid, t)
    world = job.worlds.at(t)
    ctx = RequestContext(user_id=uid, now=t, rows=job.rows, cols=job.cols)
    cands, notes = collect_candidates(models.rankers, RankRequest(user, world, catalog, ctx))
    problems = {(i, *f) for n in notes if (f := ranker_problem(n))}
    cm = models.candidate_matrix(cands, user, world)
    signals, _ = user_signals(user, models, ctx)
    oracle = OracleScorer(requests.targets[i], job.cols)
    driver: RowScorer = oracle if job.follow is None else ModelFollower(job.follow)
    _, traces = assemble(cm, catalog, models.title_stats(world), signals, driver, models.rules, models.ranker_vocab, job.rows, job.cols, explain=True)
    out = []
    for tr in traces:
        ok = tr.eligible
        if ok.sum() < 2:
            continue
        g = oracle.gains(tr.view)[ok]
        if g.max() <= 0:
            continue
        out.append((tr.view.X[ok], grade(g)))
    return out, problems


def _chunk_groups(indices: np.ndarray) -> StageData:
    """One worker's part: the stage groups of the requests at ``indices`` (owners are request indices)."""
    job = _STAGE_JOB
    assert job is not None
    per = [(int(i), *_request_groups(job, int(i))) for i in indices]
    problems = frozenset().union(*(p for _, _, p in per))
    Xs = [X for _, gs, _ in per for X, _ in gs]
    if not Xs:
        return StageData.empty(problems)
    return StageData(
        np.concatenate(Xs),
        np.concatenate([y for _, gs, _ in per for _, y in gs]),
        np.array([y.size for _, gs, _ in per for _, y in gs], dtype=np.int64),
        np.array([i for i, gs, _ in per for _ in gs], dtype=np.int64),
        problems,
    )


def stage_data(
    log: EventLog,
    models: PageModels,
    requests: Requests,
    half_life: float,
    rows: int,
    cols: int,
    world_granularity: int = 3600,
    progress: Callable[[int], None] | None = None,
    follow: "PageModel | None" = None,
    workers: int = 1,
) -> StageData:
    """Oracle-labelled stage groups for every request (skipping stages where no row gains).

    The stage contexts follow the oracle's greedy choices, or with ``follow`` the model's
    own choices (DAgger): at serving time the rows above come from the model, so it must
    also learn what to do after its own imperfect choices. ``workers`` > 1 forks that many
    processes over time-ordered chunks of the requests (same result: a request's groups depend
    on the request alone); DAgger passes stay in this process, since a LightGBM model trained
    here uses OpenMP, which a forked child cannot use safely. The result may hold no groups
    (no request had a row covering a later play): the caller says what that means.
    """
    global _STAGE_JOB
    # in time order, so consecutive requests share world states; groups are kept in request order
    order = np.argsort(requests.times, kind="stable")
    n_chunks = max(1, min(len(requests), 16 * workers))
    chunks = [c for c in np.array_split(order, n_chunks) if c.size]
    _STAGE_JOB = _StageJob(log, models, requests, CheckpointedWorlds(log, half_life, world_granularity), rows, cols, follow)
    parts: list[StageData] = []
    try:
        if workers > 1 and follow is None and len(chunks) > 1:
            from homepage.forked_pool import forked_pool

            with forked_pool(workers) as pool:
                for c, part in zip(chunks, pool.imap(_chunk_groups, chunks), strict=True):
                    parts.append(part)
                    if progress is not None:
                        progress(c.size)
        else:
            for c in chunks:
                parts.append(_chunk_groups(c))
                if progress is not None:
                    progress(c.size)
    finally:
        _STAGE_JOB = None
    return StageData.in_request_order(parts)


@dataclass(frozen=True)
class PageTrainingReport:
    """What training saw and how well the model did on held-back requests."""

    inner_split: int
    until: int
    requests: int
    groups: int
    rows: int
    valid_ndcg_at_1: float | None
    # ranker -> requests (of ``requests``) on which it raised ("failed") or had rows dropped
    ranker_problems: dict[str, dict[str, int]] = field(default_factory=dict)


_PAGE_DEFAULTS = PageConfig()  # the defaults of a direct call are the pipeline's


def page_training_requests(log: EventLog, protocol: ReplayProtocol, until: int) -> Requests:
    """The requests the page model learns from: ``sample_requests`` in (split, until], then the first visit of every
    user new in that window (at most a fifth of ``max_requests`` of them).

    Drawn among a user's events, first pages are about 1% of the sampled requests, too few for
    the model to learn how a page without history is best ordered.
    """
    from homepage.replay.protocol import first_visit_requests, sample_requests, with_requests

    split = protocol.resolve_split(log)
    firsts = first_visit_requests(log, split, protocol.horizon_days, until)
    cap = protocol.max_requests // 5
    if len(firsts) > cap:
        firsts = firsts.take(np.sort(np.random.default_rng(protocol.seed).choice(len(firsts), size=cap, replace=False)))
    return with_requests(sample_requests(log, protocol, until=until), firsts)


def train_page_model(
    log: EventLog,
    models_at_inner_split: PageModels,
    inner_split: int,
    until: int,
    half_life: float,
    rows: int = _PAGE_DEFAULTS.rows,
    cols: int = _PAGE_DEFAULTS.cols,
    max_requests: int = _PAGE_DEFAULTS.max_requests,
    requests_per_user: int = _PAGE_DEFAULTS.requests_per_user,
    num_rounds: int = _PAGE_DEFAULTS.num_rounds,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    dagger_rounds: int = _PAGE_DEFAULTS.dagger_rounds,
    stage_data_fn: "Callable[..., StageData] | None" = None,
    workers: int = 1,
) -> tuple["PageModel", PageTrainingReport]:
    """Fit the page model on requests in (inner_split, until] against rankers fitted up to ``inner_split``.

    The requests: ``page_training_requests``.

    Rankers fitted on the same events as the targets would make their scores look better
    in training than in serving; fitting them up to ``inner_split`` keeps the page model
    honest. The final bundle refits the rankers up to ``until``. After the first fit on
    oracle-greedy contexts, each of ``dagger_rounds`` adds the stages met when following
    the current model (labelled by the oracle) and refits on everything. ``stage_data_fn``
    (same arguments and result as :func:`stage_data`) builds the stage groups elsewhere,
    e.g. on Spark partitions of users; by default :func:`stage_data` builds them here, with
    ``workers`` processes.
    """
    from homepage.pagebuilder.model import PageModel

    protocol = ReplayProtocol(split_time=inner_split, requests_per_user=requests_per_user, max_requests=max_requests, seed=seed, rows=rows, cols=cols)
    requests = page_training_requests(log, protocol, until)
    rng = np.random.default_rng(seed)
    users = np.unique(requests.user_ids)
    valid_users = rng.choice(users, size=max(1, users.size // 7), replace=False) if users.size > 7 else np.zeros(0, np.int64)
    valid_req = np.flatnonzero(np.isin(requests.user_ids, valid_users))
    train_req = np.setdiff1d(np.arange(len(requests)), valid_req)
    extra = {"inner_split": inner_split, "until": until, "source": "interaction_history", "dagger_rounds": dagger_rounds}

    def fit(data: StageData) -> PageModel:
        tr, va = data.subset(train_req), data.subset(valid_req)
        valid = (va.X, va.y, va.groups) if va.groups.size else None
        return PageModel.fit(
            tr.X, tr.y, tr.groups, models_at_inner_split.ranker_vocab, models_at_inner_split.kind_vocab,
            num_rounds=num_rounds, valid=valid, extra_manifest=extra,
        )

    build = partial(stage_data, workers=workers) if stage_data_fn is None else stage_data_fn
    data = build(log, models_at_inner_split, requests, half_life, rows, cols, progress=progress)
    problems = data.ranker_problems()
    _refuse_broken_rankers(problems, len(requests))
    if not data.groups.size:
        later = int(np.count_nonzero((log.t_ts > inner_split) & (log.t_ts <= until)))
        days, per_day = np.unique(log.t_ts[log.t_ts <= until] // 86_400, return_counts=True)
        burst = float(per_day.max() / per_day.sum()) if per_day.size else 0.0
        busiest = (
            f"; {burst:.0%} of the events up to the cut fall on one day, {time.strftime('%Y-%m-%d', time.gmtime(int(days[per_day.argmax()]) * 86_400))}, "
            "so both splits land in it (train with --until before it, or spread the times)"
            if burst >= 0.5 else ""
        )
        raise ValueError(
            f"no training groups: none of {len(requests)} requests at the inner split had a candidate row covering a later play "
            f"({later} plays or ratings between the inner split, {inner_split}, and the training cut, {until}; "
            "a dataset whose events span too short a time, or too few users with events on both sides, gives none"
            f"{busiest}; "
            'set "page": {"train_model": false} in the --config to train the rankers alone)'
        )
    model = fit(data)
    for _ in range(dagger_rounds):
        more = build(log, models_at_inner_split, requests, half_life, rows, cols, progress=progress, follow=model)
        data = data.concat(more)
        model = fit(data)
    valid = data.subset(valid_req).groups.size > 0
    best = float(model.booster.best_score["valid"]["ndcg@1"]) if valid and "valid" in model.booster.best_score else None
    report = PageTrainingReport(inner_split, until, len(requests), int(data.groups.size), int(data.y.size), best, problems)
    model.manifest["training"] = report.__dict__
    return model, report


def _refuse_broken_rankers(problems: dict[str, dict[str, int]], n_requests: int) -> None:
    """Fail when a ranker raised on every training request: the page model would learn a page without it.

    Served, such a ranker fails on every request too (its rows silently missing), so the bundle
    is refused rather than shipped; a ranker failing on some requests is reported, not fatal.
    """
    dead = sorted(r for r, c in problems.items() if n_requests and c["failed"] == n_requests)
    if dead:
        which = ("ranker " if len(dead) == 1 else "rankers ") + ", ".join(dead)
        raise ValueError(
            f"{which} raised on all {n_requests:,} training requests (the traceback is logged: above, or in the Spark executors' logs); "
            "fix it or remove it from the config's rankers"
        )


def fit_page_model(
    log: EventLog,
    catalog: "Catalog",
    config: "PipelineConfig",
    until: int,
    progress: bool = False,
    fit: "Callable[[Ranker, FitInput], None] | None" = None,
    stage_data_fn: "Callable[..., StageData] | None" = None,
    workers: int = 1,
    catalog_at: "Callable[[int], Catalog] | None" = None,
) -> tuple["PageModel", PageTrainingReport]:
    """Train the page model for a bundle fitted up to ``until`` (rankers refitted at an inner split).

    ``fit`` and ``stage_data_fn`` let an engine (``homepage.engines``) run ranker fitting and the
    stage groups elsewhere; by default both run here, the stage groups in ``workers`` processes.
    ``catalog_at(t)`` is the catalog as known at t (titles' tags up to t): the inner rankers are
    fitted on it, so nothing written after the inner split reaches the labels' window.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from homepage.progress_bar import ProgressBar

    from rankers.base import FitInput, fit_ranker
    from rankers.registry import build_rankers

    n = int(np.searchsorted(log.t_ts, until, side="right"))
    if n < 10:
        raise ValueError("too few events before --until to train a page model")
    inner = int(np.quantile(log.t_ts[:n], config.page.inner_quantile, method="lower"))
    rankers = build_rankers(list(config.rankers))
    world = log.global_state(inner, config.half_life_seconds)
    fit_catalog = catalog_at(inner) if catalog_at is not None else catalog
    with ProgressBar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress, console=Console(stderr=True)) as bar:
        task = bar.add_task("page model: fit rankers at inner split", total=len(rankers))
        for r in rankers:
            fit_ranker(r, FitInput(log, fit_catalog, inner, world), fit)
            bar.advance(task)
        models = PageModels("inner", config.config_hash(), catalog, tuple(rankers), rules=config.page.rules)
        task = bar.add_task("page model: stage data", total=None)
        model, report = train_page_model(
            log,
            models,
            inner,
            until,
            config.half_life_seconds,
            rows=config.page.rows,
            cols=config.page.cols,
            max_requests=config.page.max_requests,
            requests_per_user=config.page.requests_per_user,
            num_rounds=config.page.num_rounds,
            dagger_rounds=config.page.dagger_rounds,
            progress=lambda k: bar.advance(task, k),
            stage_data_fn=stage_data_fn,
            workers=workers,
        )
    return model, report
