"""Training the artwork model from logged impressions and plays, weighted by the logged propensities.

Ridge regression of the play indicator on the shared features (:mod:`artwork.features`),
each impression weighted by 1 / propensity (normalised to mean 1), so arms the logging
policy rarely showed count as much as those it showed often: the fit targets the
reward of every arm, not of the logging policy's habits. Then each variant gets a
shrunk residual bias and each user small ridge weights of their own (how much they
respond to genre, cast and tone emphasis): a "hybrid" model, where a variant or a user
only moves away from the shared weights with enough impressions of its own. The three
parts are fitted in turn (backfitting), ``n_rounds`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from artwork.features import design, intercept_index, n_features, score, user_design, user_dim
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


MIN_TRAINING_PROPENSITY = 1e-3  # clipped importance weights (at most 1,000): the logging policy's epsilon keeps them above it


def fit_weights(
    logs: LoggedFeedback,
    contexts: np.ndarray,
    table: VariantTable,
    context_row: np.ndarray | None = None,
    ridge: float = 1.0,
    bias_prior: float = 200.0,
    user_prior: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    n_rounds: int = 2,
) -> FittedWeights:
    """Fit on ``logs`` (which must carry ``title_idx``); row i's context is ``contexts[context_row[i]]``."""
    if logs.title_idx is None:
        raise HomepageError("logs: title_idx column is required to train the artwork model")
    if len(logs) == 0:
        raise HomepageError("logs: no rows to train on")
    rows = _rows(logs, context_row)
    w = 1.0 / np.maximum(logs.propensity, MIN_TRAINING_PROPENSITY)  # one propensity of 1e-9 took the whole fit over
    w = w / w.mean()
    d = n_features(table.n_genres, len(table.tones))
    n = len(logs)
    a = np.zeros((d, d))
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        x = design(contexts, rows[sl], logs.title_idx[sl], logs.action[sl], table)
        a += x.T @ (x * w[sl, None])
        if progress is not None:
            progress(sl.stop, n * (1 + n_rounds))
    # ridge, but leave the global intercept (last phi slot times the xg intercept) unpenalised
    reg = np.full(d, ridge)
    reg[intercept_index(table.n_genres, len(table.tones))] = 1e-6
    a_inv_ready = a + np.diag(reg)
    bias = np.zeros(table.emphasis.shape)
    cell = logs.title_idx * table.max_variants + logs.action
    other = np.zeros(n)  # the per-variant and per-user parts, fitted in turn (backfitting)
    z = user_design(contexts, rows, logs.title_idx, logs.action, table)
    users, user_w = np.zeros(0, np.int64), np.zeros((0, z.shape[1]))
    for r in range(n_rounds):
        target = logs.reward - other
        b = np.zeros(d)
        for start in range(0, n, CHUNK):
            sl = slice(start, min(start + CHUNK, n))
            x = design(contexts, rows[sl], logs.title_idx[sl], logs.action[sl], table)
            b += x.T @ (w[sl] * target[sl])
            if progress is not None:
                progress(n * (1 + r) + sl.stop, n * (1 + n_rounds))
        theta = np.linalg.solve(a_inv_ready, b)
        pred = _logged_scores(theta, contexts, rows, logs, table)
        user_part = _user_part(users, user_w, logs.user_id, z)
        if bias_prior < np.inf:
            resid = np.bincount(cell, weights=w * (logs.reward - pred - user_part), minlength=bias.size)
            mass = np.bincount(cell, weights=w, minlength=bias.size)
            bias = (resid / (mass + bias_prior)).reshape(bias.shape)
        bias_part = bias[logs.title_idx, logs.action]
        users, user_w = fit_user_weights(logs, contexts, rows, table, logs.reward - pred - bias_part, w, user_prior, z)
        other = bias_part + _user_part(users, user_w, logs.user_id, z)
    return FittedWeights(theta, bias, users, user_w, n, float(logs.reward.mean()))


def _logged_scores(
    theta: np.ndarray, contexts: np.ndarray, rows: np.ndarray, logs: LoggedFeedback, table: VariantTable
) -> np.ndarray:
    """The shared model's score of each logged (row, action), in chunks."""
    n = len(logs)
    out = np.empty(n)
    for s in range(0, n, CHUNK):
        sl = slice(s, min(s + CHUNK, n))
        sc = score(theta, contexts, rows[sl], logs.title_idx[sl], table)
        out[sl] = sc[np.arange(sl.stop - sl.start), logs.action[sl]]
    return out


def _user_part(users: np.ndarray, user_w: np.ndarray, user_id: np.ndarray | None, z: np.ndarray) -> np.ndarray:
    """Each logged row's per-user term z . w_user (0 for users without weights)."""
    if users.size == 0 or user_id is None:
        return np.zeros(z.shape[0])
    pos = np.minimum(np.searchsorted(users, user_id), users.size - 1)
    hit = users[pos] == user_id
    return np.where(hit, np.einsum("np,np->n", z, user_w[pos]), 0.0)


def fit_user_weights(
    logs: LoggedFeedback,
    contexts: np.ndarray,
    rows: np.ndarray,
    table: VariantTable,
    residual: np.ndarray,
    w: np.ndarray,
    prior: float,
    z: np.ndarray | None = None,
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
    if z is None:
        z = user_design(contexts, rows, logs.title_idx, logs.action, table)
    a = np.zeros((n_u, p, p))
    for i in range(p):
        for j in range(i, p):
            a[:, i, j] = a[:, j, i] = np.bincount(uidx, weights=w * z[:, i] * z[:, j], minlength=n_u)
    b = np.stack([np.bincount(uidx, weights=w * z[:, i] * residual, minlength=n_u) for i in range(p)], axis=1)
    weights = np.linalg.solve(a + prior * np.eye(p)[None], b[:, :, None])[:, :, 0]
    return users.astype(np.int64), weights
