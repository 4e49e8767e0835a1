"""Page-quality metrics over an R x C grid, with bootstrap confidence intervals.

Per request (a grid of catalog indices, -1 for empty slots, and the target titles):
- ``ndcg_2d``: hits discounted along rows and along columns, 1 / (log2(r + 2) * log2(c + 2)),
  normalised by the ideal page (the targets in the best-discounted slots), as in
  carousel-interface evaluation (Felicioni et al., UMAP 2021);
- ``viewport_recall`` / ``page_recall``: hits in the viewport / on the page over
  min(|targets|, slots there);
- ``duplicates``: titles shown more than once; ``viewport_genres``: distinct genres there;
- ``novelty``: mean self-information -log2(popularity share) of the titles shown;
- ``resume_recall``: of the titles the user had started and not finished by t and played
  again in the window (``Requests.resumes``), the share shown anywhere on the page; NaN for a
  request without any, so it is averaged over the requests that have some. Targets leave out
  titles seen by t, so this is the only metric that sees a "Continue watching" row's value.
  Requests are sampled where there is a new-title target, so a session that only resumed
  something is not among them (about 9% of candidate request times on world-small).
Across requests: ``coverage`` (distinct titles shown / catalog size) and the share of
hits from each ranker's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PER_REQUEST = ("ndcg_2d", "viewport_recall", "page_recall", "duplicates", "viewport_genres", "novelty")
RESUME = "resume_recall"  # per request too, but NaN where the request has no resumed title


def discounts(rows: int, cols: int) -> np.ndarray:
    r = 1.0 / np.log2(np.arange(rows) + 2.0)
    c = 1.0 / np.log2(np.arange(cols) + 2.0)
    return np.outer(r, c)


@dataclass(frozen=True, eq=False)
class PageScore:
    """Metrics of one page for one request."""

    values: dict[str, float]
    hits_grid: np.ndarray  # (R, C) bool
    hit_rankers: tuple[str, ...]  # the ranker of each hit's row


def score_page(
    grid: np.ndarray,
    row_rankers: list[str],
    targets: np.ndarray,
    genre_matrix: np.ndarray,
    self_info: np.ndarray,
    viewport: tuple[int, int],
    resumes: np.ndarray | None = None,
) -> PageScore:
    """Metrics of one page; ``grid`` is (R, C) catalog indices with -1 for empty slots.

    A target shown twice counts once (in ndcg_2d at its best-discounted slot; in the recalls
    once): a page cannot score by repeating a title.
    """
    R, C = grid.shape
    filled = grid >= 0
    hits = filled & np.isin(grid, targets)
    d = discounts(R, C)
    n_t = int(targets.size)
    ideal = np.sort(d.ravel())[::-1][: min(n_t, R * C)].sum()
    vr, vc = min(viewport[0], R), min(viewport[1], C)
    shown = grid[filled]
    _, counts = np.unique(shown, return_counts=True)
    vgrid = grid[:vr, :vc]
    vshown = vgrid[vgrid >= 0]
    viewport_hits = int(hits[:vr, :vc].sum())
    if counts.size and counts.max() > 1:
        hits = _best_slot_of_each_title(grid, hits, d)
        viewport_hits = int(np.intersect1d(vshown, targets).size)
    values = {
        "ndcg_2d": float((hits * d).sum() / ideal) if ideal > 0 else 0.0,
        "viewport_recall": float(viewport_hits / min(n_t, vr * vc)) if n_t else 0.0,
        "page_recall": float(hits.sum() / min(n_t, R * C)) if n_t else 0.0,
        "duplicates": float((counts - 1).sum()),
        "viewport_genres": float(genre_matrix[vshown].any(axis=0).sum()) if vshown.size else 0.0,
        "novelty": float(self_info[shown].mean()) if shown.size else 0.0,
        RESUME: float(np.isin(resumes, shown).mean()) if resumes is not None and resumes.size else float("nan"),
    }
    hit_rows = np.nonzero(hits)[0]
    return PageScore(values, hits, tuple(row_rankers[i] for i in hit_rows))


def _best_slot_of_each_title(grid: np.ndarray, hits: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``hits`` with each title's hit kept only at its best-discounted slot (first in row order on a tie)."""
    flat = np.flatnonzero(hits)
    order = flat[np.argsort(-d.ravel()[flat], kind="stable")]
    _, first = np.unique(grid.ravel()[order], return_index=True)
    out = np.zeros(hits.size, bool)
    out[order[first]] = True
    return out.reshape(hits.shape)


def resample_weights(n: int, n_boot: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, n) bootstrap weights: how often each of ``n`` requests is in each resample.

    Without ``groups`` requests are resampled one by one. With ``groups`` (one label per
    request, e.g. its user) whole groups are: a user's requests share the user's taste and
    often most of their targets (replay draws up to three request times per user, usually in
    one rating session), so they are not independent, and resampling them one by one
    narrows the interval as if there were more users than there are. The result is read-only and
    kept (up to 8 keys): a replay report asks for the same resamples for every metric.
    """
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.dtype.kind not in "biu":  # labels that are not plain numbers: no key to keep the weights under
        return _resample_weights(n, n_boot, seed, g)
    key = (n, n_boot, seed, None if g is None else (g.dtype.str, g.tobytes()))
    hit = _WEIGHTS.get(key)
    if hit is None:
        if len(_WEIGHTS) >= 8:
            _WEIGHTS.clear()
        hit = _WEIGHTS[key] = _resample_weights(n, n_boot, seed, g)
        hit.setflags(write=False)  # shared by every caller with the same key
    return hit


# (n, n_boot, seed, groups) -> weights: replay asks for the same resamples for every metric, policy and pair
_WEIGHTS: dict[tuple[object, ...], np.ndarray] = {}


def _resample_weights(n: int, n_boot: int, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """``resample_weights`` computed: one draw of ``n`` requests (or of the groups) per resample, in order."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]) if n else np.zeros((n_boot, 0), np.int64)
    _, codes = np.unique(groups, return_inverse=True)
    g = int(codes.max()) + 1 if codes.size else 0
    draws = np.stack([np.bincount(rng.integers(0, g, g), minlength=g) for _ in range(n_boot)]) if g else np.zeros((n_boot, 0), np.int64)
    return draws[:, codes]


def bootstrap_mean(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, groups: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap (1 - alpha) interval of per-request values.

    With ``groups`` (one label per value) the resampling unit is the group: the interval of a
    clustered sample (see ``resample_weights``); the mean is still over values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if groups is None:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, v.size, size=(n_boot, v.size))
        means = v[idx].mean(axis=1)
    else:
        w = resample_weights(v.size, n_boot, seed, groups).astype(np.float64)
        means = (w @ v) / w.sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(v.mean()), float(lo), float(hi)


def bootstrap_coverage(
    shown_per_request: list[np.ndarray], n_titles: int, n_boot: int = 200, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Catalog coverage with a bias-shifted percentile bootstrap interval over requests (or ``groups`` of them).

    A resample repeats requests, so it covers fewer distinct titles than the sample and
    the plain percentile interval would sit below the point estimate; the interval is
    shifted by that bootstrap bias (median resample minus point), keeping its spread.
    """
    from scipy import sparse

    n = len(shown_per_request)
    if n == 0:  # no requests: no coverage to speak of (null in the JSON, as every other metric), not 0
        return float("nan"), float("nan"), float("nan")
    rows = np.repeat(np.arange(n), [s.size for s in shown_per_request])
    cols = np.concatenate(shown_per_request) if n else np.zeros(0, np.int64)
    M = sparse.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(n, n_titles))
    point = float((np.asarray(M.sum(axis=0)).ravel() > 0).sum() / n_titles)
    W = resample_weights(n, n_boot, seed, groups)
    # (titles x resamples) per chunk: the whole table is 0.5 GB at 60k titles and 1,000 resamples
    covered = np.concatenate([np.asarray((M.T @ W[i : i + 100].T > 0).sum(axis=0)).ravel() for i in range(0, n_boot, 100)]) / n_titles
    q_lo, q_mid, q_hi = np.quantile(np.asarray(covered).ravel(), [0.025, 0.5, 0.975])
    bias = q_mid - point
    return point, float(max(0.0, q_lo - bias)), float(min(1.0, q_hi - bias))
