"""Hyperparameter search for the personalised ranker on validation splits inside the training period.

For each validation quantile q, the split is at ``validation_time(log, until, q)`` with
positives from (T_q, until]: the test period after ``until`` is never looked at. Fit-time
parameters (``fit_grid``) refit the ranker; scoring-time parameters (``score_grid``: blend
weights, history decay) only swap the config of a fitted ranker, which is cheap. The score
of a setting is the user-weighted mean NDCG@20 over the validation splits; the setting used
is the simplest one within one standard error of the best (``simplest_within_one_se``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from homepage.catalog import Catalog
from homepage.evaluation.ranker_eval import DEFAULT_HALF_LIFE, VALIDATION_QS, Progress, ranked_lists, temporal_split, validation_time
from homepage.evaluation.ranker_metrics import hit_matrix, ndcg_at_k, recall_at_k
from homepage.eventlog import EventLog
from rankers.base import FitInput
from rankers.personalized import PersonalizedRanker


def grid(params: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``params`` as a list of dicts (one empty dict for an empty grid)."""
    keys = sorted(params)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(params[k] for k in keys))]


@dataclass(frozen=True, eq=False)
class Setting:
    """One searched setting: its config overrides and per-user validation metrics (all splits)."""

    params: dict[str, Any]
    ndcg: np.ndarray  # per validation user, every split concatenated
    recall: np.ndarray

    @property
    def mean_ndcg(self) -> float:
        return float(np.nanmean(self.ndcg)) if self.ndcg.size else float("nan")

    @property
    def mean_recall(self) -> float:
        return float(np.nanmean(self.recall)) if self.recall.size else float("nan")

    @property
    def complexity(self) -> tuple[int, float]:
        """(blend components switched on, their total weight): what the one-SE rule minimises."""
        w = [float(v) for k, v in self.params.items() if k.startswith("weight_") and k != "weight_item"]
        return sum(x > 0 for x in w), sum(w)


def search_personalized(
    log: EventLog,
    catalog: Catalog,
    until: int,
    fit_grid: Mapping[str, Sequence[Any]],
    score_grid: Mapping[str, Sequence[Any]],
    *,
    base: Mapping[str, Any] | None = None,
    qs: Sequence[float] = VALIDATION_QS,
    progress: Progress | None = None,
    half_life: float = DEFAULT_HALF_LIFE,
) -> list[Setting]:
    """Every setting of the grid with its per-user validation NDCG@20 and Recall@20, best mean NDCG first."""
    step = progress or (lambda _msg: None)
    found: dict[str, tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]] = {}
    for q in qs:
        t_val = validation_time(log, until, q)
        val = temporal_split(log, t_val, end=until)
        n_pos = np.array([p.size for p in val.positives], np.int64)
        for fit_params in grid(fit_grid):
            step(f"q={q} fit {fit_params}")
            ranker = PersonalizedRanker({**(base or {}), **fit_params})
            ranker.fit(FitInput(log=log, catalog=catalog, until=t_val, world=log.global_state(t_val, half_life)))
            fitted_config = ranker.config
            for score_params in grid(score_grid):
                ranker.config = fitted_config.model_copy(update=score_params)
                hits = hit_matrix(ranked_lists(ranker, log, catalog, val, half_life), val.positives)
                params = {**fit_params, **score_params}
                acc = found.setdefault(repr(sorted(params.items())), (params, [], []))
                acc[1].append(ndcg_at_k(hits, n_pos, 20))
                acc[2].append(recall_at_k(hits, n_pos, 20))
    out = [Setting(p, np.concatenate(nd), np.concatenate(rc)) for p, nd, rc in found.values()]
    return sorted(out, key=lambda s: (-s.mean_ndcg, -s.mean_recall, repr(sorted(s.params.items()))))


def simplest_within_one_se(settings: Sequence[Setting]) -> Setting:
    """The one-standard-error rule: the simplest setting whose validation NDCG@20 is within one
    standard error (of the paired per-user difference) of the best; ties by higher NDCG.

    A blend component that does not beat the plain item model by more than validation noise
    is left out rather than kept on a lucky split (the rule of Breiman et al., CART, 1984).
    """
    best = settings[0]
    ok = []
    for s in settings:
        d = s.ndcg - best.ndcg
        d = d[np.isfinite(d)]
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
        if d.size == 0 or float(d.mean()) >= -se:
            ok.append(s)
    return min(ok, key=lambda s: (s.complexity, -s.mean_ndcg, repr(sorted(s.params.items()))))


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
    half_life: float = DEFAULT_HALF_LIFE,
) -> list[tuple[dict[str, Any], float, float]]:
    """(config overrides, mean validation NDCG@20, mean validation Recall@20), best first."""
    found = search_personalized(log, catalog, until, fit_grid, score_grid, base=base, qs=qs, progress=progress, half_life=half_life)
    return [(s.params, s.mean_ndcg, s.mean_recall) for s in found]
