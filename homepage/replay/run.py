"""Replay: rebuild each request's state as of t, build its page with ``build_page``, score it.

The pages come from the very function the API calls, so what is measured here is what
would have been served. Per-request metrics are kept for paired comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from homepage.domain import Page, RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page, prepare_request, ranker_problem, ranker_problem_counts
from homepage.replay.metrics import PER_REQUEST, RESUME, bootstrap_coverage, bootstrap_mean, score_page
from homepage.replay.protocol import ReplayProtocol, Requests
from homepage.state import GlobalState


@dataclass(eq=False)
class PolicyRun:
    """Everything measured for one policy over the requests."""

    name: str
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in (*PER_REQUEST, RESUME)})
    shown: list[np.ndarray] = field(default_factory=list)
    hit_heat: np.ndarray | None = None
    ranker_hits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # per ranker over warm pages: [pages showing a row of it, its rows, sum of its first row's index]
    ranker_rows: dict[str, list[int]] = field(default_factory=dict)


MIN_USERS_FOR_INTERVALS = 20


@dataclass(eq=False)
class ReplayResult:
    protocol: ReplayProtocol
    split_time: int
    requests: Requests
    runs: dict[str, PolicyRun]
    n_titles: int
    model_version: str
    wall_seconds: float = 0.0
    workers: int = 1
    baseline_version: str | None = None  # the bundle of the ``baseline:`` policies (``with_baseline``)
    ranker_problems: dict[str, dict[str, int]] = field(default_factory=dict)  # ranker -> {"failed"|"rows dropped": requests}

    def warnings(self) -> list[str]:
        """What makes the figures mean less than they seem: no warm request, empty pages, too few users for an interval."""
        warm = ~self.requests.cold
        out = []
        if not warm.any():
            out.append(
                f"no warm requests: each of the {len(self.requests)} requests is of a user with no history before it; "
                "the table is empty and the cold slice is in --json and --report"
            )
            return out
        users = int(np.unique(self.requests.user_ids[warm]).size)
        if users < MIN_USERS_FOR_INTERVALS:
            out.append(f"{users} users: intervals resample users, and over so few they say little (aim for {MIN_USERS_FOR_INTERVALS} or more)")
        for name, run in self.runs.items():
            empty = sum(1 for i in np.flatnonzero(warm) if run.shown[i].size == 0)
            if empty:
                out.append(f"{name}: {empty} of {int(warm.sum())} warm pages are empty (its rules or rankers left nothing to show)")
        return out

    def to_json(self, n_boot: int = 1000) -> dict[str, object]:
        """The report: per policy and metric a mean with a 95% interval, paired differences, slices."""
        warm = ~self.requests.cold
        out: dict[str, object] = {
            "protocol": {
                **self.protocol.model_dump(),
                "split_time": self.split_time,
                "requests": len(self.requests),
                "warm_requests": int(warm.sum()),
                "cold_requests": int((~warm).sum()),
                "users": int(np.unique(self.requests.user_ids).size),
                "model_version": self.model_version,
                # requests of one user are not independent: intervals resample users (all their requests)
                "interval": f"95% percentile bootstrap over users, {n_boot} resamples",
                **({"baseline_model_version": self.baseline_version} if self.baseline_version else {}),
            },
            "policies": {name: self._summary(run, warm, n_boot) for name, run in self.runs.items()},
            "slices": {"cold": {name: self._summary(run, ~warm, n_boot, coverage=False) for name, run in self.runs.items()}},
            "paired": {},
            # requests where a ranker raised, or had rows dropped for breaking the row contract (see the log)
            "ranker_problems": self.ranker_problems,
            "speed": {
                "workers": self.workers,
                "wall_seconds": self.wall_seconds,
                "pages_per_second": len(self.requests) * len(self.runs) / self.wall_seconds if self.wall_seconds else None,
                "ms_per_page_by_policy": {name: 1000 * run.seconds * self.workers / max(len(self.requests), 1) for name, run in self.runs.items()},
            },
        }
        paired: dict[str, object] = {}
        users = self.requests.user_ids[warm]
        for a, b in combinations(self.runs, 2):
            diff = {}
            for m in PER_REQUEST:
                va = np.asarray(self.runs[a].values[m])[warm]
                vb = np.asarray(self.runs[b].values[m])[warm]
                mean, lo, hi = bootstrap_mean(va - vb, n_boot, groups=users)
                diff[m] = {"mean": mean, "ci": [lo, hi]}
            va, vb = (np.asarray(self.runs[p].values[RESUME])[warm] for p in (a, b))
            has = ~np.isnan(va) & ~np.isnan(vb)
            if has.any():
                mean, lo, hi = bootstrap_mean(va[has] - vb[has], n_boot, groups=users[has])
                diff[RESUME] = {"mean": mean, "ci": [lo, hi], "requests": int(has.sum())}
            paired[f"{a} - {b}"] = diff
        out["paired"] = paired
        return out

    def with_baseline(self, other: ReplayResult, prefix: str = "baseline:") -> ReplayResult:
        """This replay and ``other`` (another bundle's, on the same requests) in one result.

        ``other``'s policies are renamed ``prefix + name``, so the paired differences include
        each policy of this bundle against the baseline bundle's on the same requests; so are
        its rankers in ``ranker_problems``.
        """
        a, b = self.requests, other.requests
        if len(a) != len(b) or not (np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.times, b.times)):
            raise ValueError("a baseline replay must run on the same requests (users and times)")
        runs = dict(self.runs)
        for name, run in other.runs.items():
            runs[prefix + name] = PolicyRun(prefix + name, run.values, run.shown, run.hit_heat, run.ranker_hits, run.seconds, run.ranker_rows)
        wall = self.wall_seconds + other.wall_seconds
        return ReplayResult(
            self.protocol, self.split_time, self.requests, runs, self.n_titles, self.model_version, wall, self.workers, other.model_version,
            {**self.ranker_problems, **{prefix + r: c for r, c in other.ranker_problems.items()}},
        )

    def _summary(self, run: PolicyRun, mask: np.ndarray, n_boot: int, coverage: bool = True) -> dict[str, object]:
        res: dict[str, object] = {}
        users = self.requests.user_ids[mask]
        for m in PER_REQUEST:
            v = np.asarray(run.values[m])[mask]
            mean, lo, hi = bootstrap_mean(v, n_boot, groups=users)
            res[m] = {"mean": mean, "ci": [lo, hi]}
        v = np.asarray(run.values[RESUME])[mask]
        has = ~np.isnan(v)
        if has.any():  # only requests with a resumed title
            mean, lo, hi = bootstrap_mean(v[has], n_boot, groups=users[has])
            res[RESUME] = {"mean": mean, "ci": [lo, hi], "requests": int(has.sum())}
        if coverage:
            shown = [s for s, keep in zip(run.shown, mask) if keep]
            mean, lo, hi = bootstrap_coverage(shown, self.n_titles, n_boot, groups=users)
            res["coverage"] = {"mean": mean, "ci": [lo, hi]}
            total = sum(run.ranker_hits.values())
            shown_rankers = set(run.ranker_hits) | set(run.ranker_rows)  # a ranker with rows and no hits: 0.0, not absent
            res["ranker_hit_share"] = {k: run.ranker_hits.get(k, 0) / max(total, 1) for k in sorted(shown_rankers)}
            pages = max(int(mask.sum()), 1)
            res["ranker_rows"] = {
                k: {"page_share": n / pages, "rows_per_page": rows / pages, "mean_first_row": 1 + first / n}
                for k, (n, rows, first) in sorted(run.ranker_rows.items())
            }
        return res


def page_grid(page: Page, models: PageModels, rows: int, cols: int) -> tuple[np.ndarray, list[str]]:
    """A page as an (R, C) grid of catalog indices (-1 empty) and the ranker of each row."""
    grid = np.full((rows, cols), -1, dtype=np.int64)
    for i, r in enumerate(page.rows[:rows]):
        idx = models.catalog.index_of(np.array(r.title_ids[:cols], dtype=np.int64))
        grid[i, : idx.size] = idx
    return grid, [r.ranker for r in page.rows[:rows]] + [""] * max(0, rows - len(page.rows))


class WorldCache:
    """Global states at request times rounded down to a granularity (a few recomputations)."""

    def __init__(self, log: EventLog, half_life: float, granularity: int) -> None:
        self.log, self.half_life, self.granularity = log, half_life, granularity
        self._cache: dict[int, GlobalState] = {}

    def at(self, t: int) -> GlobalState:
        key = t - t % self.granularity
        world = self._cache.get(key)
        if world is None:
            if len(self._cache) > 64:
                self._cache.clear()
            world = self._cache[key] = self.log.global_state(key, self.half_life)
        return world


class CheckpointedWorlds:
    """Global states at t rounded down to ``granularity``, each carried forward from the start of
    its ``checkpoint`` period (a day). Daily checkpoints are themselves carried forward day by day
    from a full recomputation at the start of their ``anchor`` period (28 days), so a state costs
    the events since the last checkpoint plus one full pass per anchor period, and depends on t
    alone, never on which requests came before (every engine and partition order gives the same
    states). For page-model training at scale, where thousands of request hours over months
    would each cost a full pass over the log.
    """

    def __init__(self, log: EventLog, half_life: float, granularity: int, checkpoint: int = 86400, anchor: int = 28 * 86400) -> None:
        if anchor % checkpoint:
            raise ValueError(f"anchor: {anchor} s is not a multiple of the checkpoint period {checkpoint} s")
        self.log, self.half_life, self.granularity = log, half_life, granularity
        self.checkpoint, self.anchor = checkpoint, anchor
        self._cache: dict[int, GlobalState] = {}
        self._bases: dict[int, GlobalState] = {}

    def _base(self, start: int) -> GlobalState:
        """The checkpoint at ``start``: the anchor's full state advanced one checkpoint period at a time."""
        base = self._bases.get(start)
        if base is not None:
            return base
        first = start - start % self.anchor
        done = [s for s in self._bases if first <= s < start]
        at = max(done) if done else first
        base = self._bases[at] if done else self.log.global_state(first, self.half_life)
        if len(self._bases) > 64:
            self._bases.clear()
        self._bases[at] = base
        while at < start:
            at += self.checkpoint
            base = self._bases[at] = self.log.advance_global_state(base, at)
        return base

    def at(self, t: int) -> GlobalState:
        key = t - t % self.granularity
        world = self._cache.get(key)
        if world is None:
            base = self._base(key - key % self.checkpoint)
            if len(self._cache) > 64:
                self._cache.clear()
            world = self._cache[key] = self.log.advance_global_state(base, key)
        return world


@dataclass(frozen=True, eq=False)
class RequestScore:
    """One request's page under one policy, scored."""

    values: dict[str, float]
    shown: np.ndarray
    hits_grid: np.ndarray
    hit_rankers: tuple[str, ...]
    seconds: float
    row_rankers: tuple[str, ...] = ()  # the ranker of each row of the page, top first
    notes: tuple[str, ...] = ()  # the request's candidate notes (a ranker that failed, a row dropped); the same for every policy


@dataclass(eq=False)
class _Job:
    """What a replay worker needs; set before forking so workers share it copy-on-write."""

    log: EventLog
    models: PageModels
    policies: list[str]
    requests: Requests
    protocol: ReplayProtocol
    half_life: float


_JOB: _Job | None = None
ReplayJob = _Job  # the public name, for engines that run ``score_requests`` on their own workers


def _score_requests(indices: list[int]) -> list[dict[str, RequestScore]]:
    """Build and score every policy's page for the requests at ``indices``."""
    import time

    job = _JOB
    assert job is not None
    models, protocol, requests = job.models, job.protocol, job.requests
    catalog = models.catalog
    worlds = CheckpointedWorlds(job.log, job.half_life, protocol.world_granularity)
    self_info: dict[int, np.ndarray] = {}
    out = []
    for i in indices:
        uid, t = int(requests.user_ids[i]), int(requests.times[i])
        user = job.log.user_state(uid, t)
        world = worlds.at(t)
        si = self_info.get(world.as_of)
        if si is None:
            if len(self_info) > 64:
                self_info.clear()
            share = (world.counts + 1.0) / (world.counts.sum() + len(catalog))
            si = self_info[world.as_of] = -np.log2(share)
        ctx = RequestContext(user_id=uid, now=t, rows=protocol.rows, cols=protocol.cols)
        t0 = time.perf_counter()
        prepared = prepare_request(user, world, models, ctx)
        models.title_stats(world)  # per world state, built by the first page on it: shared, not the first policy's
        shared = (time.perf_counter() - t0) / len(job.policies)
        scores = {}
        for p in job.policies:
            t0 = time.perf_counter()
            page = build_page(user, world, models, ctx, policy=p, prepared=prepared)
            seconds = time.perf_counter() - t0 + shared
            grid, rankers = page_grid(page, models, protocol.rows, protocol.cols)
            resumes = requests.resumes[i] if requests.resumes else None
            s = score_page(grid, rankers, requests.targets[i], catalog.genre_matrix, si, (protocol.viewport_rows, protocol.viewport_cols), resumes)
            scores[p] = RequestScore(
                s.values, grid[grid >= 0], s.hits_grid, s.hit_rankers, seconds, tuple(r for r in rankers if r), prepared.notes
            )
        out.append(scores)
    return out


def replay(
    log: EventLog,
    models: PageModels,
    policies: list[str],
    requests: Requests,
    protocol: ReplayProtocol,
    half_life: float,
    split_time: int,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> ReplayResult:
    """Build and score one page per request and policy; ``workers`` > 1 forks that many processes."""
    import time

    global _JOB
    started = time.perf_counter()
    _JOB = _Job(log, models, policies, requests, protocol, half_life)
    chunk = 16
    batches = [list(range(a, min(a + chunk, len(requests)))) for a in range(0, len(requests), chunk)]
    results: list[dict[str, RequestScore]] = []
    try:
        if workers > 1 and len(batches) > 1:
            from homepage.forked_pool import forked_pool

            with forked_pool(workers) as pool:
                for part in pool.imap(_score_requests, batches):
                    results.extend(part)
                    if progress is not None:
                        progress(len(part))
        else:
            for batch in batches:
                part = _score_requests(batch)
                results.extend(part)
                if progress is not None:
                    progress(len(part))
    finally:
        _JOB = None
    return collect(results, models, policies, requests, protocol, split_time, time.perf_counter() - started, workers)


def score_requests(job: ReplayJob, indices: list[int]) -> list[dict[str, RequestScore]]:
    """Build and score every policy's page for the requests at ``indices`` of ``job`` (one partition's work)."""
    global _JOB
    _JOB = job
    try:
        return _score_requests(indices)
    finally:
        _JOB = None


def collect(
    results: list[dict[str, RequestScore]],
    models: PageModels,
    policies: list[str],
    requests: Requests,
    protocol: ReplayProtocol,
    split_time: int,
    wall: float,
    workers: int,
) -> ReplayResult:
    """Gather per-request scores (in request order) into per-policy runs."""
    runs = {p: PolicyRun(p, hit_heat=np.zeros((protocol.rows, protocol.cols))) for p in policies}
    found: list[tuple[str, str]] = []
    for i, scores in enumerate(results):
        first = next(iter(scores.values()), None)
        found.extend({f for n in (first.notes if first is not None else ()) if (f := ranker_problem(n))})  # once per request
        for p, s in scores.items():
            run = runs[p]
            for m, v in s.values.items():
                run.values[m].append(v)
            run.shown.append(s.shown)
            run.seconds += s.seconds / max(workers, 1)
            if not requests.cold[i]:
                run.hit_heat += s.hits_grid
                for r in s.hit_rankers:
                    run.ranker_hits[r] = run.ranker_hits.get(r, 0) + 1
                for row, r in enumerate(s.row_rankers):
                    seen = run.ranker_rows.setdefault(r, [0, 0, 0])
                    if r not in s.row_rankers[:row]:
                        seen[0] += 1
                        seen[2] += row
                    seen[1] += 1
    return ReplayResult(
        protocol, split_time, requests, runs, len(models.catalog), models.version, wall, workers, None, ranker_problem_counts(found)
    )
