"""Item-item similarity and top-k selection: co-occurrence and content, blended, top-k per title.

Everything here is plain numpy/scipy on arrays; the video-to-video ranker fits with it.
Item-item scores are computed a block of titles at a time (a sparse product for
co-occurrence, a dense one for content) and cut to the best ``k`` per title with
``argpartition`` at once, so memory stays at one block x n_titles whatever the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from homepage.catalog import Catalog


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best finite scores, best first, ties by lower index.

    ``exclude`` is a bool mask (or index array) of positions that may not be picked.
    Positions with a non-finite score are never picked.
    """
    s = np.asarray(scores)
    if s.dtype.kind != "f":  # float32 scores stay float32: a float64 copy orders and ties them the same, at twice the work
        s = s.astype(np.float64)
    if exclude is not None and len(exclude):
        s = s.copy()
        s[exclude] = -np.inf
    ok = np.isfinite(s)
    n_ok = int(ok.sum()) if s.size < 4096 else int(np.count_nonzero(ok))
    k = min(int(k), n_ok)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if n_ok < s.size and not (s[~ok] == -np.inf).all():  # NaN and +inf become -inf: never picked (a seen title's -inf is already)
        s = np.where(ok, s, -np.inf)
    part = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    # among equal scores at the cut, argpartition is deterministic but arbitrary: resolve
    # ties by index so the row is the same whatever the order of computation
    cut = s[part].min()
    tied_out = np.count_nonzero(s == cut) > np.count_nonzero(s[part] == cut)
    if tied_out:
        above = np.flatnonzero(s > cut)
        at = np.flatnonzero(s == cut)[: k - above.size]
        part = np.concatenate([above, at])
    part = np.sort(part)
    idx = part[np.argsort(-s[part], kind="stable")].astype(np.int64)  # stable on sorted indices: ties by index
    return idx, s[idx].astype(np.float32)


def mean_of(a: np.ndarray) -> float:
    """``float(np.mean(a))`` of a non-empty float array, without np.mean's per-call overhead (the same sum, division and rounding)."""
    total = np.add.reduce(a)
    return float(total.dtype.type(total / np.intp(a.size)))


def not_in(values: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """``~np.isin(values, excluded)`` for non-negative catalog indices, through a bool mask (a few times faster per request).

    Negative values (padding) are never excluded.
    """
    if excluded.size == 0 or values.size == 0:
        return np.ones(values.shape, bool)
    size = int(max(int(excluded.max()), int(values.max()))) + 1
    mask = np.zeros(size, bool)
    mask[excluded] = True
    return ~(mask[values] & (values >= 0))


def user_title_matrix(
    user_pos: np.ndarray, title_idx: np.ndarray, n_users: int, n_titles: int, max_per_user: int | None = None
) -> sp.csr_matrix:
    """Binary user x title matrix; with ``max_per_user``, only each user's latest distinct titles.

    Input rows must be in time order (as ``EventLog.interactions`` returns them). Capping
    heavy users bounds the co-occurrence cost (sum of squared degrees) and stops a few
    binge watchers from linking everything to everything.
    """
    u = np.asarray(user_pos, np.int64)
    t = np.asarray(title_idx, np.int64)
    if u.size == 0:
        return sp.csr_matrix((n_users, n_titles), dtype=np.float32)
    # keep the last event of each (user, title): sort by key, last in time wins
    key = u * n_titles + t
    rev = np.arange(key.size - 1, -1, -1)
    _, first = np.unique(key[rev], return_index=True)
    last_pos = rev[first]  # position in time order of each pair's last event
    u, t = u[last_pos], t[last_pos]
    if max_per_user is not None:
        order = np.lexsort((-last_pos, u))  # by user, newest first
        u, t = u[order], t[order]
        starts = np.searchsorted(u, u, side="left")
        rank = np.arange(u.size) - starts
        keep = rank < max_per_user
        u, t = u[keep], t[keep]
    m = sp.csr_matrix((np.ones(u.size, np.float32), (u, t)), shape=(n_users, n_titles))
    m.sum_duplicates()
    return m


@dataclass(frozen=True, eq=False)
class ContentFeatures:
    """Row-normalised content features, split into a dense part (genres, year) and a sparse one (people, tags).

    Each feature block is L2-normalised and scaled by sqrt(weight), so the dot product of
    two titles is the weighted sum of per-block cosines: a pair sharing everything scores 1.
    The split lets the dense part go through BLAS and the sparse part through a sparse product.
    """

    dense: np.ndarray  # float32 (n_titles, n_dense)
    sparse: sp.csr_matrix  # float32 (n_titles, n_tokens)

    def against(self, rows: slice, cols: np.ndarray) -> np.ndarray:
        """Dense (rows x cols) similarity."""
        out = self.dense[rows] @ self.dense[cols].T
        if self.sparse.nnz:
            out += (self.sparse[rows] @ self.sparse[cols].T).toarray()
        return out


def content_features(
    catalog: Catalog,
    genre_weight: float = 0.45,
    people_weight: float = 0.25,
    tag_weight: float = 0.15,
    year_weight: float = 0.15,
    year_scale: float = 10.0,
) -> ContentFeatures:
    """Content features of every title: genres, cast and director, tags and year, weighted."""
    n = len(catalog)
    people = [tuple(f"c:{c}" for c in cs) + tuple(f"d:{d}" for d in ds) for cs, ds in zip(catalog.cast, catalog.director)]
    dense = [
        _normalised(catalog.genre_matrix.astype(np.float32), genre_weight),
        _normalised(year_features(catalog.years, year_scale), year_weight),
    ]
    sparse = [
        sp.diags(_inv_norms(_token_matrix(people, n), people_weight)) @ _token_matrix(people, n),
        sp.diags(_inv_norms(_token_matrix(catalog.tags, n), tag_weight)) @ _token_matrix(catalog.tags, n),
    ]
    return ContentFeatures(
        dense=np.ascontiguousarray(np.hstack(dense), dtype=np.float32),
        sparse=sp.hstack(sparse, format="csr", dtype=np.float32),
    )


def _inv_norms(m: np.ndarray | sp.csr_matrix, weight: float) -> np.ndarray:
    sq = m.multiply(m).sum(axis=1) if sp.issparse(m) else (m * m).sum(axis=1)
    norms = np.sqrt(np.asarray(sq, dtype=np.float64).ravel())
    return np.where(norms > 0, np.sqrt(weight) / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def _normalised(m: np.ndarray, weight: float) -> np.ndarray:
    return m * _inv_norms(m, weight)[:, None]


def _token_matrix(tokens: tuple[tuple[str, ...], ...] | list[tuple[str, ...]], n: int) -> sp.csr_matrix:
    """Title x token incidence, idf-weighted; tokens seen on one title only are dropped."""
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, ts in enumerate(tokens):
        for tok in dict.fromkeys(ts):  # deduplicated in order: a set's order changes with each process's hash seed
            rows.append(i)
            cols.append(vocab.setdefault(tok, len(vocab)))
    if not vocab:
        return sp.csr_matrix((n, 1), dtype=np.float32)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, len(vocab)))
    df = np.asarray(m.sum(axis=0)).ravel()
    idf = np.where(df > 1, np.log((n + 1) / df), 0.0).astype(np.float32)
    return (m @ sp.diags(idf)).tocsr()


def year_features(years: np.ndarray, scale: float, step: float = 5.0) -> np.ndarray:
    """Gaussian bumps on a grid of years whose dot products fall off like exp(-dy^2 / (2 scale^2)).

    Putting year proximity into the content features keeps content similarity one matrix
    product. Unknown years (0) get no features, so they neither help nor hurt.
    """
    y = years.astype(np.float32)
    known = y > 0
    if not known.any():
        return np.zeros((y.size, 1), np.float32)
    centres = np.arange(y[known].min() - 2 * scale, y[known].max() + 2 * scale + step, step, dtype=np.float32)
    f = np.exp(-((y[:, None] - centres[None, :]) ** 2) / np.float32(scale * scale))
    f[~known] = 0.0
    return f.astype(np.float32)


def blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks covering range(n)."""
    for a in range(0, n, size):
        yield a, min(n, a + size)


def row_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) triplets of the ``k`` best columns of every row of a dense matrix."""
    kk = min(k, scores.shape[1])
    if kk <= 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < scores.shape[1] else np.tile(np.arange(kk), (scores.shape[0], 1))
    rows = np.repeat(np.arange(scores.shape[0]), kk)
    return rows, part.ravel().astype(np.int64), np.take_along_axis(scores, part, axis=1).ravel()


def neighbours(
    n_titles: int,
    k: int,
    block_candidates: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    block_size: int = 1024,
    on_block: Callable[[int], None] | None = None,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every title from candidate (row in block, title, score) triplets.

    ``block_candidates(a, b)`` scores titles a..b against any titles it likes (each pair at
    most once); the title itself and non-positive scores are never neighbours. Returns
    (idx int32, scores float32) of shape (n_titles, k), padded with -1 / 0, best first,
    ties by lower index. With ``threads`` > 1, that many blocks are scored at once in a
    thread pool (scipy's sparse product, BLAS, numpy's partition and sort release the GIL);
    blocks are independent, so the result does not depend on ``threads``.
    """
    idx = np.full((n_titles, k), -1, np.int32)
    val = np.zeros((n_titles, k), np.float32)
    spans = list(blocks(n_titles, block_size))
    if threads > 1 and len(spans) > 1:
        from concurrent.futures import ThreadPoolExecutor

        def run(span: tuple[int, int]) -> int:
            a, b = span
            _place(idx, val, a, k, *block_candidates(a, b))  # blocks write disjoint rows
            return b - a

        with ThreadPoolExecutor(threads) as pool:  # ``threads`` blocks in memory at a time
            for done in pool.map(run, spans):
                if on_block is not None:
                    on_block(done)
        return idx, val
    for a, b in spans:
        _place(idx, val, a, k, *block_candidates(a, b))
        if on_block is not None:
            on_block(b - a)
    return idx, val


def _place(idx: np.ndarray, val: np.ndarray, a: int, k: int, r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
    """Write the best ``k`` candidates of each row of the block starting at ``a`` into idx / val."""
    r, c, v = np.asarray(r, np.int64), np.asarray(c, np.int64), np.asarray(v, np.float32)
    ok = (v > 0) & (r + a != c)
    r, c, v = r[ok], c[ok], v[ok]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(r.size) - np.searchsorted(r, r, side="left")
    keep = rank < k
    idx[a + r[keep], rank[keep]] = c[keep]
    val[a + r[keep], rank[keep]] = v[keep]
