"""Training the artwork model from logged impressions and plays, weighted by the logged propensities.

Ridge regression of the play indicator on the shared features (:mod:`artwork.features`),
each impression weighted by 1 / propensity (normalised to mean 1), so arms the logging
policy rarely showed count as much as those it showed often: the fit targets the
reward of every arm, not of the logging policy's habits. Then each variant gets a
shrunk residual bias (a "hybrid" model: shared weights plus a per-variant offset that
a variant only earns with enough impressions of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from artwork.features import design, n_features, score, user_design, user_dim
from artwork.feedback import LoggedFeedback
from artwork.variant_table import VariantTable
from homepage.errors import HomepageError

CHUNK = 16_384


@dataclass(frozen=True, slots=True)
class FittedWeights:
    """What training learns: the shared weights and the per-variant offsets (n_titles, K)."""

    theta: np.ndarray
    variant_bias: np.ndarray
    user_ids: np.ndarray  # int64 sorted: users with their own weights
    user_weights: np.ndarray  # (len(user_ids), user_dim)
    n_rows: int
    train_play_rate: float


def _rows(logs: LoggedFeedback, context_row: np.ndarray | None) -> np.ndarray:
    return np.arange(len(logs)) if context_row is None else np.asarray(context_row, np.int64)


def fit_weights(
    logs: LoggedFeedback,
    contexts: np.ndarray,
    table: VariantTable,
    context_row: np.ndarray | None = None,
    ridge: float = 1.0,
    bias_prior: float = 200.0,
    user_prior: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> FittedWeights:
    """Fit on ``logs`` (which must carry ``title_idx``); row i's context is ``contexts[context_row[i]]``."""
    if logs.title_idx is None:
        raise HomepageError("logs: title_idx column is required to train the artwork model")
    if len(logs) == 0:
        raise HomepageError("logs: no rows to train on")
    rows = _rows(logs, context_row)
    w = 1.0 / logs.propensity
    w = w / w.mean()
    d = n_features(table.n_genres, len(table.tones))
    a = np.zeros((d, d))
    b = np.zeros(d)
    n = len(logs)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        x = design(contexts, rows[sl], logs.title_idx[sl], logs.action[sl], table)
        a += x.T @ (x * w[sl, None])
        b += x.T @ (w[sl] * logs.reward[sl])
        if progress is not None:
            progress(sl.stop, n)
    # ridge, but leave the global intercept (last phi slot times the xg intercept) unpenalised
    reg = np.full(d, ridge)
    reg[d - 3] = 1e-6
    theta = np.linalg.solve(a + np.diag(reg), b)
    rows_all = np.arange(n)
    pred = np.concatenate(
        [
            score(theta, contexts, rows[s : s + CHUNK], logs.title_idx[s : s + CHUNK], table)[
                rows_all[: min(CHUNK, n - s)], logs.action[s : s + CHUNK]
            ]
            for s in range(0, n, CHUNK)
        ]
    )
    bias = np.zeros(table.emphasis.shape)
    if bias_prior < np.inf:
        cell = logs.title_idx * table.max_variants + logs.action
        resid = np.bincount(cell, weights=w * (logs.reward - pred), minlength=bias.size)
        mass = np.bincount(cell, weights=w, minlength=bias.size)
        bias = (resid / (mass + bias_prior)).reshape(bias.shape)
        pred = pred + bias[logs.title_idx, logs.action]
    users, user_w = fit_user_weights(logs, contexts, rows, table, logs.reward - pred, w, user_prior)
    return FittedWeights(theta, bias, users, user_w, n, float(logs.reward.mean()))


def fit_user_weights(
    logs: LoggedFeedback,
    contexts: np.ndarray,
    rows: np.ndarray,
    table: VariantTable,
    residual: np.ndarray,
    w: np.ndarray,
    prior: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's own ridge weights (how much they respond to genre, cast and tone emphasis) on the residual.

    One small ridge per user, solved as a batch; ``prior`` is the ridge strength, so a user
    with few impressions keeps weights near 0 (the shared model alone).
    """
    p = user_dim(len(table.tones))
    if logs.user_id is None or not np.isfinite(prior) or len(logs) == 0:
        return np.zeros(0, np.int64), np.zeros((0, p))
    users, uidx = np.unique(logs.user_id, return_inverse=True)
    n_u = users.size
    z = user_design(contexts, rows, logs.title_idx, logs.action, table)
    a = np.zeros((n_u, p, p))
    for i in range(p):
        for j in range(i, p):
            a[:, i, j] = a[:, j, i] = np.bincount(uidx, weights=w * z[:, i] * z[:, j], minlength=n_u)
    b = np.stack([np.bincount(uidx, weights=w * z[:, i] * residual, minlength=n_u) for i in range(p)], axis=1)
    weights = np.linalg.solve(a + prior * np.eye(p)[None], b[:, :, None])[:, :, 0]
    return users.astype(np.int64), weights
