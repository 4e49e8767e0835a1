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

from artwork.features import design, n_features, score
from artwork.feedback import LoggedFeedback
from artwork.variant_table import VariantTable
from homepage.errors import HomepageError

CHUNK = 16_384


@dataclass(frozen=True, slots=True)
class FittedWeights:
    """What training learns: the shared weights and the per-variant offsets (n_titles, K)."""

    theta: np.ndarray
    variant_bias: np.ndarray
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
    bias = np.zeros(table.emphasis.shape)
    if bias_prior < np.inf:
        pred = np.concatenate(
            [
                score(theta, contexts, rows[s : s + CHUNK], logs.title_idx[s : s + CHUNK], table)[
                    np.arange(min(CHUNK, n - s)), logs.action[s : s + CHUNK]
                ]
                for s in range(0, n, CHUNK)
            ]
        )
        cell = logs.title_idx * table.max_variants + logs.action
        size = bias.size
        resid = np.bincount(cell, weights=w * (logs.reward - pred), minlength=size)
        mass = np.bincount(cell, weights=w, minlength=size)
        bias = (resid / (mass + bias_prior)).reshape(bias.shape)
    return FittedWeights(theta, bias, n, float(logs.reward.mean()))
