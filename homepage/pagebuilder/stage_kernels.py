"""Compiled (numba) kernels of one page-builder stage: re-derive rows, page columns, place a row.

A stage touches every candidate row (K x L positions, a few thousand cells); as numpy
calls it was about 70 calls whose fixed cost dominated. Each kernel here is one pass over
the cells, called once a stage. ``StageFeatures`` owns the state and calls them; the
plain-Python reference in ``tests/test_pagebuilder_reference.py`` checks every feature.
"""

from __future__ import annotations

import numpy as np

from homepage.kernel_cache import cached_njit

# per-position signals (StageFeatures.signals), zero at padding
SIG_PERS, SIG_POP, SIG_TREND, SIG_FRESH, SIG_VALUE = range(5)


@cached_njit(nogil=True, inline="always")
def _popcount(x: np.uint64) -> np.int64:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@cached_njit(nogil=True)
def aggregate_rows(
    avail: np.ndarray,
    cols: int,
    head: int,
    signals: np.ndarray,
    disc_page: np.ndarray,
    disc_viewport: np.ndarray,
    bits: np.ndarray,
    has_pers: bool,
    has_value: bool,
    head_valid: np.ndarray,
    value_total: np.ndarray,
    X: np.ndarray,
    take: np.ndarray,
    csum: np.ndarray,
    n_eff: np.ndarray,
    row_bits: np.ndarray,
    c: np.ndarray,
) -> None:
    """Every row's effective titles (``take``, ``csum``) and title aggregates, written into ``X``.

    ``c`` is the column indices of (fill, dup_share, pers_mean, pop_mean, trend_mean,
    fresh_mean, pers_max, pers_first, value_disc, value_viewport, value_count, value_share).
    Sums accumulate in float64 in row order.
    """
    K, L = avail.shape
    for r in range(K):
        n = 0
        n_head = 0
        s_pers = s_pop = s_trend = s_fresh = 0.0
        s_value = s_disc = s_view = 0.0
        n_valued = 0
        first = np.nan
        best = -np.inf
        b = np.uint64(0)
        for j in range(L):
            t = False
            if avail[r, j]:
                n += 1
                if n <= cols:
                    t = True
                    if j < head:
                        n_head += 1
                    s_pers += signals[SIG_PERS, r, j]
                    s_pop += signals[SIG_POP, r, j]
                    s_trend += signals[SIG_TREND, r, j]
                    s_fresh += signals[SIG_FRESH, r, j]
                    v = signals[SIG_VALUE, r, j]
                    s_value += v
                    s_disc += v * disc_page[n - 1]
                    s_view += v * disc_viewport[n - 1]
                    if v > 0:
                        n_valued += 1
                    p = signals[SIG_PERS, r, j]
                    if n == 1:
                        first = p
                    if p > best:
                        best = p
                    b |= bits[r, j]
            take[r, j] = t
            csum[r, j] = n
        ne = min(n, cols)
        n_eff[r] = ne
        row_bits[r] = b
        denom = max(ne, 1)
        X[r, c[0]] = ne / cols
        X[r, c[1]] = (head_valid[r] - n_head) / max(head_valid[r], 1)
        X[r, c[3]] = s_pop / denom
        X[r, c[4]] = s_trend / denom
        X[r, c[5]] = s_fresh / denom
        if has_pers:
            X[r, c[2]] = s_pers / denom
            if L > 0:  # rows without titles keep NaN
                X[r, c[6]] = best if ne > 0 else np.nan
                X[r, c[7]] = first if ne > 0 else np.nan
        if has_value:
            X[r, c[8]] = s_disc
            X[r, c[9]] = s_view
            X[r, c[10]] = n_valued
            X[r, c[11]] = s_value / value_total[r] if value_total[r] > 0 else 0.0


@cached_njit(nogil=True)
def page_columns(
    X: np.ndarray,
    remaining: np.ndarray,
    stage: int,
    row_bits: np.ndarray,
    page_bits: np.uint64,
    unseen_viewport_bits: np.uint64,
    above_bits: np.ndarray,
    has_pers: bool,
    has_value: bool,
    c: np.ndarray,
) -> np.ndarray:
    """The remaining rows' features at ``stage``: their aggregates plus the page-dependent columns.

    ``c`` is the column indices of (stage, genre_sim_page, new_genres, genre_sim_max_above,
    pers_mean, pers_rel, value_disc, value_rel). Genre similarity is Jaccard over 64-bit
    genre sets: with the page as a share of the row's own genres, with each row above as
    intersection over union (its maximum).
    """
    k = remaining.size
    Xr = np.empty((k, X.shape[1]), dtype=X.dtype)
    top_pers = -np.inf
    top_value = -np.inf
    for i in range(k):
        r = remaining[i]
        Xr[i] = X[r]
        Xr[i, c[0]] = stage
        b = row_bits[r]
        own = _popcount(b)
        Xr[i, c[1]] = np.float32(_popcount(b & page_bits)) / np.float32(max(own, 1))
        Xr[i, c[2]] = _popcount(b & unseen_viewport_bits)
        sim = np.float32(0.0)
        for a in range(above_bits.size):
            inter = _popcount(b & above_bits[a])
            s = np.float32(inter) / np.float32(max(own + _popcount(above_bits[a]) - inter, 1))
            if s > sim:
                sim = s
        Xr[i, c[3]] = sim
        if Xr[i, c[4]] > top_pers:  # NaN personal means are left out of the maximum
            top_pers = Xr[i, c[4]]
        if Xr[i, c[6]] > top_value:
            top_value = Xr[i, c[6]]
    if has_pers or has_value:
        for i in range(k):
            Xr[i, c[5]] = Xr[i, c[4]] - top_pers
            Xr[i, c[7]] = Xr[i, c[6]] - top_value
    return Xr


@cached_njit(nogil=True)
def place_row(
    row: int,
    titles: np.ndarray,
    take: np.ndarray,
    avail: np.ndarray,
    shown: np.ndarray,
    ranker: np.ndarray,
    kind: np.ndarray,
    X: np.ndarray,
    same_ranker_col: int,
    same_kind_col: int,
) -> np.ndarray:
    """Mark ``row``'s effective titles shown, drop them from every row, count same ranker / kind above."""
    L = titles.shape[1]
    placed = np.empty(L, dtype=titles.dtype)
    n = 0
    for j in range(L):
        if take[row, j]:
            placed[n] = titles[row, j]
            shown[titles[row, j]] = True
            n += 1
    for r in range(titles.shape[0]):
        for j in range(L):
            if avail[r, j] and shown[titles[r, j]]:
                avail[r, j] = False
        if ranker[r] == ranker[row]:
            X[r, same_ranker_col] += 1
        if kind[r] == kind[row]:
            X[r, same_kind_col] += 1
    return placed[:n]
