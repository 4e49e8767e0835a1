"""Top-k metrics over ranked lists: Recall@k, NDCG@k (binary gains), catalog coverage, novelty.

Ranked lists arrive as one (n_users, K) int64 matrix of title indices, best first, padded
with -1 where a list is shorter than K; positives as one array of title indices per user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hit_matrix(ranked: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """(n_users, K) bool: whether the title at each rank is one of the user's positives."""
    ranked = np.asarray(ranked, np.int64)
    out = np.zeros(ranked.shape, bool)
    for u, pos in enumerate(positives):
        out[u] = np.isin(ranked[u], pos) & (ranked[u] >= 0)
    return out


def recall_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    """Per user: hits in the top k / min(k, |positives|); NaN for users without positives."""
    denom = np.minimum(k, n_pos).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, hits[:, :k].sum(axis=1) / denom, np.nan)


def ndcg_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    """Per user: DCG of the top k with binary gains / the ideal DCG for min(k, |positives|) hits."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    h = hits[:, :k]
    dcg = (h * disc[: h.shape[1]]).sum(axis=1)
    ideal = np.concatenate(([0.0], np.cumsum(disc)))[np.minimum(k, n_pos)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), np.nan)


def coverage(ranked: np.ndarray, n_titles: int, k: int = 20) -> float:
    """Distinct titles recommended in anyone's top k / catalog size."""
    top = np.asarray(ranked)[:, :k]
    return float(np.unique(top[top >= 0]).size / max(n_titles, 1))


def novelty(ranked: np.ndarray, popularity: np.ndarray, k: int = 20) -> float:
    """Mean -log2(share of training interactions) of recommended titles in the top k; unseen titles count once."""
    top = np.asarray(ranked)[:, :k]
    top = top[top >= 0]
    if top.size == 0:
        return float("nan")
    pop = np.asarray(popularity, np.float64)
    share = np.maximum(pop, 1.0) / max(pop.sum(), 1.0)
    return float(np.mean(-np.log2(share[top])))


def summarise(
    ranked: np.ndarray, positives: Sequence[np.ndarray], popularity: np.ndarray, ks: Sequence[int] = (10, 20, 50)
) -> dict[str, float]:
    """Mean metrics over users: ``recall@k``, ``ndcg@k`` for each k, ``coverage`` and ``novelty`` at 20."""
    hits = hit_matrix(ranked, positives)
    n_pos = np.array([len(p) for p in positives], np.int64)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.nanmean(recall_at_k(hits, n_pos, k))) if len(positives) else float("nan")
        out[f"ndcg@{k}"] = float(np.nanmean(ndcg_at_k(hits, n_pos, k))) if len(positives) else float("nan")
    out["coverage"] = coverage(ranked, popularity.shape[0], 20)
    out["novelty"] = novelty(ranked, popularity, 20)
    out["users"] = float(len(positives))
    return out
