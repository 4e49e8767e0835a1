"""Rolling-origin backtest: train and replay at several cut times, and pool the folds.

One split's held-out window on a small dataset holds few users (ml-latest-small's default
split: 116), so a single replay's intervals are wide and a ranking change looks like a tie
whatever it does. A backtest cuts the log at several quantiles of event time; fold k trains
a bundle on events up to its cut and replays the requests between its cut and the next one
(the last fold: to the end of the log), with the same protocol as ``homepage replay``. The
folds are pooled into one report whose intervals resample users across all folds (a user
who appears in two folds is one unit). Pure: the command (``homepage backtest``) does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.replay.metrics import PER_REQUEST, RESUME
from homepage.replay.protocol import Requests
from homepage.replay.run import PolicyRun, ReplayResult


@dataclass(frozen=True)
class Fold:
    """One fold: a bundle trained on events up to ``cut``, replayed on requests in (cut, until]."""

    quantile: float
    cut: int
    until: int | None  # None: to the end of the log


def parse_quantiles(text: str, option: str = "--folds") -> tuple[float, ...]:
    """Fold cut quantiles from ``0.5,0.6,0.7,0.8``: strictly increasing, each in (0, 1)."""
    try:
        qs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise HomepageError(f"{option}: {text!r} is not a comma-separated list of quantiles (e.g. 0.5,0.6,0.7,0.8)") from e
    if not qs:
        raise HomepageError(f"{option}: give at least one quantile")
    if not all(0.0 < q < 1.0 for q in qs) or any(b <= a for a, b in pairwise(qs)):
        raise HomepageError(f"{option}: {text!r}: quantiles must be strictly increasing, each between 0 and 1")
    return qs


def plan_folds(log: EventLog, quantiles: Sequence[float]) -> list[Fold]:
    """The folds' cut times (quantiles of event time, as ``homepage train`` and ``replay`` take them)."""
    cuts = [log.quantile_time(q) for q in quantiles]
    if any(b <= a for a, b in pairwise(cuts)):
        raise HomepageError(f"--folds: quantiles {list(quantiles)} give cut times {cuts}: two folds would share a window; space them out")
    return [Fold(q, c, cuts[i + 1] if i + 1 < len(cuts) else None) for i, (q, c) in enumerate(zip(quantiles, cuts))]


def pool(results: Sequence[ReplayResult]) -> ReplayResult:
    """The folds' replays as one: requests and per-request values concatenated, tallies summed.

    The folds must replay the same policies on the same catalog. The pooled result's split
    time is the first fold's, its model version lists the folds' bundles.
    """
    if not results:
        raise ValueError("pool: no folds")
    first = results[0]
    names = list(first.runs)
    for r in results[1:]:
        if list(r.runs) != names:
            raise ValueError("pool: every fold must replay the same policies")
        if r.n_titles != first.n_titles:
            raise ValueError("pool: every fold must use the same catalog")
    with_resumes = all(len(r.requests.resumes) == len(r.requests) for r in results)
    requests = Requests(
        user_ids=np.concatenate([r.requests.user_ids for r in results]),
        times=np.concatenate([r.requests.times for r in results]),
        targets=tuple(t for r in results for t in r.requests.targets),
        cold=np.concatenate([r.requests.cold for r in results]),
        resumes=tuple(x for r in results for x in r.requests.resumes) if with_resumes else (),
    )
    runs: dict[str, PolicyRun] = {}
    for name in names:
        parts = [r.runs[name] for r in results]
        run = PolicyRun(name)
        for m in (*PER_REQUEST, RESUME):
            run.values[m] = [v for p in parts for v in p.values[m]]
        run.shown = [s for p in parts for s in p.shown]
        heats = [p.hit_heat for p in parts if p.hit_heat is not None]
        run.hit_heat = np.sum(heats, axis=0) if heats else None
        for p in parts:
            for k, n in p.ranker_hits.items():
                run.ranker_hits[k] = run.ranker_hits.get(k, 0) + n
            for k, tally in p.ranker_rows.items():
                run.ranker_rows[k] = [a + b for a, b in zip(run.ranker_rows.get(k, [0] * len(tally)), tally)]
        run.seconds = sum(p.seconds for p in parts)
        runs[name] = run
    return ReplayResult(
        protocol=first.protocol,
        split_time=first.split_time,
        requests=requests,
        runs=runs,
        n_titles=first.n_titles,
        model_version=",".join(r.model_version for r in results),
        wall_seconds=sum(r.wall_seconds for r in results),
        workers=first.workers,
        ranker_problems=_summed_problems(results),
    )


def _summed_problems(results: Sequence[ReplayResult]) -> dict[str, dict[str, int]]:
    """Each fold's ranker problems added up (the folds' requests are distinct)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        for ranker, counts in r.ranker_problems.items():
            tally = out.setdefault(ranker, {"failed": 0, "rows dropped": 0})
            for kind, n in counts.items():
                tally[kind] = tally.get(kind, 0) + n
    return dict(sorted(out.items()))


def fold_summary(fold: Fold, result: ReplayResult) -> dict[str, object]:
    """One fold's line of the report: its window, bundle, requests and each policy's means."""
    warm = ~result.requests.cold
    return {
        "quantile": fold.quantile,
        "split_time": fold.cut,
        "until": fold.until,
        "model_version": result.model_version,
        "warm_requests": int(warm.sum()),
        "request_times": [int(result.requests.times.min()), int(result.requests.times.max())] if len(result.requests) else None,
        "users": int(np.unique(result.requests.user_ids[warm]).size),
        "policies": {
            name: {m: float(np.mean(np.asarray(run.values[m])[warm])) if warm.any() else float("nan") for m in ("ndcg_2d", "viewport_recall", "page_recall")}
            for name, run in result.runs.items()
        },
    }
