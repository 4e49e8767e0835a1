"""Item models behind the personalised ranker: implicit ALS, a pruned EASE item-item model, fold-in.

Everything here takes and returns plain numpy / scipy arrays and does no I/O. The user
side is never stored: a user's vector (MF) or score vector (item model) is computed at
request time from their history, so a new play changes the scores without refitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits


def interaction_matrix(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, values: np.ndarray | None = None
) -> sp.csr_matrix:
    """A (n_rows, n_cols) float32 CSR matrix with one entry per distinct (row, col); repeats keep the max value."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    vals = np.ones(rows.size, np.float32) if values is None else np.asarray(values, np.float32)
    key = rows * n_cols + cols
    order = np.lexsort((-vals, key))  # per key, the largest value first
    key, vals = key[order], vals[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    key, vals = key[first], vals[first]
    m = sp.csr_matrix((vals, (key // n_cols, key % n_cols)), shape=(n_rows, n_cols), dtype=np.float32)
    m.sort_indices()
    return m


def fit_ease(
    x: sp.csr_matrix, lam: float, *, min_count: int = 1, max_items: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """EASE (Steck 2019) on the items with at least ``min_count`` users: (item indices, dense B).

    B = I - P / diag(P) with P = (X^T X + lam I)^-1, zero diagonal. Restricting to items
    seen ``min_count`` times, and to the ``max_items`` most popular of those, bounds the
    dense inverse (memory n^2, time n^3) on long-tail catalogs. The inverse runs on one BLAS
    thread, so the weights are the same on any number of cores (6,000 items, the default cap:
    10.8 s on one thread and 9.8 s on two, measured on a busy 2-core machine).
    """
    counts = np.asarray(x.getnnz(axis=0)).ravel()
    items = np.flatnonzero(counts >= max(min_count, 1))
    if max_items is not None and items.size > max_items:
        keep = np.lexsort((items, -counts[items]))[:max_items]  # most popular, ties by index
        items = np.sort(items[keep])
    if items.size == 0:  # no title has min_count users yet (an early cut): no item-item weights
        return items, np.zeros((0, 0), np.float64)
    xs = x[:, items].astype(np.float64)
    g = (xs.T @ xs).toarray()
    g[np.diag_indices_from(g)] += lam
    with threadpool_limits(1, user_api="blas"):  # LAPACK splits the work by thread count: last bits (and ties) would follow the core count
        b = spd_inverse(g)
    b /= -np.diag(b)  # in place: B = P / -diag(P), without a second n x n array
    b[np.diag_indices_from(b)] = 0.0
    return items, b


def spd_inverse(g: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix via Cholesky (LAPACK potrf/potri): ~3x cheaper than LU.

    ``g`` is overwritten. The upper triangle LAPACK returns is mirrored in place (``mirror_upper``), so the
    inverse costs one n x n array, not four (fit_ease on ml-latest-small, 5,422 items: 702 MB traced before, 394 MB now).
    """
    c, info = lapack.dpotrf(g, lower=False, overwrite_a=True)
    if info != 0:
        return np.linalg.inv(g)
    p, info = lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri failed with info={info}")
    return mirror_upper(p)


def mirror_upper(p: np.ndarray, block: int = 256) -> np.ndarray:
    """``np.triu(p) + np.triu(p, 1).T`` in place, bit for bit, copying a band of ``block`` rows at a time.

    The trailing ``+= 0.0`` is the sum's own rounding of signed zeros (-0.0 + 0.0 is 0.0), so the
    weights, and the ties among them, are those of the four-array formula.
    """
    n = p.shape[0]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        below = np.tri(i1 - i0, i1, k=i0 - 1, dtype=bool)  # (i, j) with j < i in rows i0..i1
        np.copyto(p[i0:i1, :i1], p[:i1, i0:i1].T.copy(), where=below)
    p += 0.0
    return p


def prune_rows(b: np.ndarray, items: np.ndarray, n_titles: int, k: int, *, keep_negative: bool = False) -> sp.csr_matrix:
    """Keep the ``k`` largest weights in each row of ``b`` as a (n_titles, n_titles) CSR.

    Row i holds what a play of title ``items[i]`` adds to every other title's score. By
    default only positive weights are ranked and kept; ``keep_negative`` ranks by magnitude
    and keeps both signs (EASE's negative weights push down titles the history argues against).
    """
    n = b.shape[0]
    k = int(min(k, max(n - 1, 1)))
    if n == 0:
        return sp.csr_matrix((n_titles, n_titles), dtype=np.float32)
    top = _top_columns(b, k, keep_negative) if k < n else np.tile(np.arange(n), (n, 1))
    w = np.take_along_axis(b, top, axis=1)
    keep = w != 0 if keep_negative else w > 0
    r = np.repeat(items, keep.sum(axis=1))
    c = items[top[keep]]
    m = sp.csr_matrix((w[keep].astype(np.float32), (r, c)), shape=(n_titles, n_titles), dtype=np.float32)
    m.sort_indices()
    return m


def _top_columns(b: np.ndarray, k: int, keep_negative: bool, block: int = 256) -> np.ndarray:
    """(n, k) columns of each row's ``k`` largest weights (by magnitude with ``keep_negative``), as one argpartition would give.

    A band of ``block`` rows at a time: the ranking key and argpartition's (n, n) index array were two more
    n x n arrays beside ``b`` (the peak of ``homepage train``); each row's partition depends on that row alone.
    """
    top = np.empty((b.shape[0], k), dtype=np.intp)
    for r0 in range(0, b.shape[0], block):
        band = b[r0 : r0 + block]
        key = -np.abs(band) if keep_negative else -band
        top[r0 : r0 + block] = np.argpartition(key, k - 1, axis=1)[:, :k]
    return top


def fit_als(
    x: sp.csr_matrix, *, factors: int, regularization: float, alpha: float, iterations: int, seed: int, threads: int = 1
) -> np.ndarray:
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) via ``implicit``: the item factors (n_items, f) float32.

    ``threads`` only changes speed: implicit's CPU solver updates each user (then each item)
    independently of the others given the other side's factors, and the Gram matrix comes
    from BLAS held to one thread here, so factors are bitwise identical for any thread count
    and any number of cores (``tests/test_personalized.py``). (Setting ``OPENBLAS_NUM_THREADS``
    here did nothing: numpy had loaded OpenBLAS long before, with a thread per core.)
    """
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(1, user_api="blas"):  # implicit checks the BLAS threads when the model is made
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=threads,
        )
        model.fit(x, show_progress=False)
    return np.ascontiguousarray(model.item_factors, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class FoldIn:
    """What folding a user into a fitted ALS model needs: item factors and their Gram matrix."""

    item_factors: np.ndarray  # (n_titles, f) float32
    gram: np.ndarray  # (f, f) float64, Y^T Y
    regularization: float
    alpha: float

    @classmethod
    def of(cls, item_factors: np.ndarray, regularization: float, alpha: float) -> FoldIn:
        y = item_factors.astype(np.float64)
        return cls(item_factors, y.T @ y, regularization, alpha)

    def user_vector(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The exact ALS user solve for a history ``items`` with confidence weights in [0, 1]: (f,) float32.

        u = (Y^T Y + Y_I^T (C_I - I) Y_I + reg I)^-1 Y_I^T C_I 1, with C_I = 1 + alpha * w.
        """
        f = self.gram.shape[0]
        if items.size == 0:
            return np.zeros(f, np.float32)
        yi = self.item_factors[items].astype(np.float64)
        conf = 1.0 + self.alpha * weights
        a = self.gram + (yi.T * (conf - 1.0)) @ yi
        a[np.diag_indices(f)] += self.regularization
        return np.linalg.solve(a, yi.T @ conf).astype(np.float32)


def sparse_scores(b: sp.csr_matrix, items: np.ndarray, weights: np.ndarray, n_titles: int) -> np.ndarray:
    """sum_i weights[i] * b[items[i], :] as a dense float64 vector, without scipy slicing overhead."""
    starts = b.indptr[items]
    lens = b.indptr[items + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(n_titles)
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens) + np.arange(total)
    return np.bincount(b.indices[offs], weights=b.data[offs] * np.repeat(weights, lens), minlength=n_titles)


def dense_scores(b: np.ndarray, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sparse_scores`` on a dense (n, n) item model: the same sums, row by row in ``items`` order (identical floats)."""
    if items.size == 0:
        return np.zeros(b.shape[1])
    rows = b[items].astype(np.float64)
    rows *= weights[:, None]
    return np.add.reduce(rows, axis=0)
