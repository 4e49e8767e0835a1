"""Hyperparameter search for the personalised ranker on validation splits inside the training period.

For each validation quantile q, the split is at ``validation_time(log, until, q)`` with
positives from (T_q, until]: the test period after ``until`` is never looked at. Fit-time
parameters (``fit_grid``) refit the ranker; scoring-time parameters (``score_grid``: blend
weights, history decay) only swap the config of a fitted ranker, which is cheap. The score
of a setting is the user-weighted mean NDCG@20 over the validation splits.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from homepage.catalog import Catalog
from homepage.evaluation.ranker_eval import VALIDATION_QS, Progress, ranked_lists, temporal_split, validation_time
from homepage.evaluation.ranker_metrics import summarise
from homepage.eventlog import EventLog
from rankers.base import FitInput
from rankers.personalized import PersonalizedRanker


def grid(params: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``params`` as a list of dicts (one empty dict for an empty grid)."""
    keys = sorted(params)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(params[k] for k in keys))]


def tune_personalized(
    log: EventLog,
    catalog: Catalog,
    until: int,
    fit_grid: Mapping[str, Sequence[Any]],
    score_grid: Mapping[str, Sequence[Any]],
    *,
    base: Mapping[str, Any] | None = None,
    qs: Sequence[float] = VALIDATION_QS,
    progress: Progress | None = None,
) -> list[tuple[dict[str, Any], float, float]]:
    """(config overrides, mean validation NDCG@20, mean validation Recall@20), best first."""
    step = progress or (lambda _msg: None)
    totals: dict[str, list[Any]] = {}
    for q in qs:
        t_val = validation_time(log, until, q)
        val = temporal_split(log, t_val, end=until)
        n = int(val.users.size)
        for fit_params in grid(fit_grid):
            step(f"q={q} fit {fit_params}")
            ranker = PersonalizedRanker({**(base or {}), **fit_params})
            ranker.fit(FitInput(log=log, catalog=catalog, until=t_val, world=log.global_state(t_val)))
            fitted_config = ranker.config
            for score_params in grid(score_grid):
                ranker.config = fitted_config.model_copy(update=score_params)
                m = summarise(ranked_lists(ranker, log, catalog, val), val.positives, val.popularity)
                key = repr(sorted({**fit_params, **score_params}.items()))
                acc = totals.setdefault(key, [{**fit_params, **score_params}, 0.0, 0.0, 0])
                acc[1] += m["ndcg@20"] * n
                acc[2] += m["recall@20"] * n
                acc[3] += n
    out = [(p, nd / max(c, 1), rc / max(c, 1)) for p, nd, rc, c in totals.values()]
    return sorted(out, key=lambda r: (-r[1], -r[2], repr(sorted(r[0].items()))))
