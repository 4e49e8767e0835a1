"""The default reward model for doubly robust evaluation: smoothed mean reward per (position, action).

Fitted by importance weighting (so it estimates each arm's reward whatever the logging
policy), shrunk toward the overall mean, and cross-fitted: each row's prediction comes
from a model that never saw that row, which keeps DR's bias term honest.
"""

from __future__ import annotations

import numpy as np

from artwork.feedback import LoggedFeedback


def tabular_q(logs: LoggedFeedback, fit_rows: np.ndarray, prior_strength: float = 20.0) -> np.ndarray:
    """Mean reward table (n_positions, n_actions) from the rows ``fit_rows``, shrunk to the global mean."""
    sub = logs.take(fit_rows)
    n_pos = logs.n_positions
    pos = sub.position if sub.position is not None else np.zeros(len(sub), np.int64)
    cell = pos * logs.n_actions + sub.action
    size = n_pos * logs.n_actions
    # self-normalised importance weights per cell: w = 1/propensity
    w = 1.0 / sub.propensity
    wsum = np.bincount(cell, weights=w, minlength=size)
    wr = np.bincount(cell, weights=w * sub.reward, minlength=size)
    cnt = np.bincount(cell, minlength=size).astype(np.float64)
    mean = float(sub.reward.mean()) if len(sub) else 0.0
    # shrink: a cell with c observations gets c / (c + prior) of its own mean
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(wsum > 0, wr / np.where(wsum > 0, wsum, 1.0), mean)
    q = (cnt * own + prior_strength * mean) / (cnt + prior_strength)
    return q.reshape(n_pos, logs.n_actions)


def cross_fitted_q(logs: LoggedFeedback, n_folds: int = 2, seed: int = 0, prior_strength: float = 20.0) -> np.ndarray:
    """Predicted reward of every action for every logged row (n, n_actions), cross-fitted over folds."""
    n = len(logs)
    fold = np.random.default_rng(seed).integers(0, n_folds, n)
    pos = logs.position if logs.position is not None else np.zeros(n, np.int64)
    out = np.empty((n, logs.n_actions))
    for f in range(n_folds):
        test = fold == f
        table = tabular_q(logs, ~test if n_folds > 1 else np.ones(n, bool), prior_strength)
        out[test] = table[pos[test]]
    return out
