"""User context for the artwork bandit: genre and cast affinities from the user's history.

A context vector is ``[genre (G), recent genre (G), cast (A), cast by genre (A)]`` where G
is the catalog's genre vocabulary and A its cast vocabulary (everyone billed on a title or
featured on a variant). The first three blocks are smoothed log-lifts: how much more of
the user's recency-weighted history has that genre or actor than the catalog as a whole,
so an actor who is in many titles does not look loved by everyone. Most users have seen
few of an actor's titles, so the direct cast lift is sparse; the fourth block is the
user's genre lift averaged over the genres of the actor's titles ("likes the kind of film
this actor makes"), which every user with any history has for every actor. A cold user's
context is all zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from homepage.catalog import Catalog
from homepage.kernel_cache import cached_njit
from homepage.state import PLAY, RATING, UserState

DAY = 86_400.0


def cast_vocabulary(catalog: Catalog) -> tuple[str, ...]:
    """Everyone billed on a title or featured on one of its variants, sorted."""
    names = {a for c in catalog.cast for a in c}
    # isinstance: a frame-built catalog may carry NaN for "no featured cast"
    names |= {v.featured_cast for vs in catalog.variants for v in vs if isinstance(v.featured_cast, str)}
    return tuple(sorted(names))


@dataclass(frozen=True, eq=False)
class ContextLayout:
    """Where each block lives in a context vector; saved with a fitted selector and checked on load."""

    genres: tuple[str, ...]
    cast: tuple[str, ...]

    @property
    def n_genres(self) -> int:
        return len(self.genres)

    @property
    def dim(self) -> int:
        return 2 * len(self.genres) + 2 * len(self.cast)

    @property
    def genre_slice(self) -> slice:
        return slice(0, self.n_genres)

    @property
    def recent_slice(self) -> slice:
        return slice(self.n_genres, 2 * self.n_genres)

    @property
    def cast_slice(self) -> slice:
        return slice(2 * self.n_genres, 2 * self.n_genres + len(self.cast))

    @property
    def cast_genre_slice(self) -> slice:
        return slice(2 * self.n_genres + len(self.cast), self.dim)

    @classmethod
    def of(cls, catalog: Catalog) -> ContextLayout:
        return cls(tuple(catalog.genres), cast_vocabulary(catalog))


class UserContextBuilder:
    """Turns a :class:`UserState` into a context vector; ``prepare(catalog)`` once, then ``build``."""

    def __init__(self, half_life_days: float = 180.0, recent_half_life_days: float = 14.0, prior: float = 2.0):
        self.half_life_days = half_life_days
        self.recent_half_life_days = recent_half_life_days
        self.prior = prior

    def prepare(self, catalog: Catalog) -> UserContextBuilder:
        """Index the catalog: title x genre and title x actor matrices and their catalog-wide shares."""
        self.layout_ = ContextLayout.of(catalog)
        gm = catalog.genre_matrix.astype(np.float64)
        self.genre_of_title_ = sp.csr_matrix(gm)
        idx = {a: i for i, a in enumerate(self.layout_.cast)}
        rows = np.repeat(np.arange(len(catalog)), [len(c) for c in catalog.cast])
        cols = np.fromiter((idx[a] for c in catalog.cast for a in c), dtype=np.int64, count=rows.size)
        self.cast_of_title_ = sp.csr_matrix(
            (np.ones(rows.size), (rows, cols)), shape=(len(catalog), len(self.layout_.cast))
        )
        n = max(len(catalog), 1)
        # each actor's genre profile: the mean over their titles of the title's genres, each title summing to 1
        per_title = gm / np.maximum(gm.sum(axis=1, keepdims=True), 1.0)
        prof = np.asarray(self.cast_of_title_.T @ per_title)
        self.cast_genre_profile_ = prof / np.maximum(prof.sum(axis=1, keepdims=True), 1e-12)
        self.genre_base_ = np.maximum(gm.sum(axis=0) / n, 1e-6)
        self.cast_base_ = np.maximum(np.asarray(self.cast_of_title_.sum(axis=0)).ravel() / n, 1e-6)
        return self

    def _lift(self, weights: np.ndarray, titles: np.ndarray, of_title: sp.csr_matrix, base: np.ndarray) -> np.ndarray:
        total = weights.sum()
        mass = _weighted_row_sum(of_title.indptr, of_title.indices, of_title.data, titles, weights, base.size)
        # log((mass + prior * base) / (total + prior) / base): 0 with no history, >0 for over-represented
        return np.log((mass + self.prior * base) / ((total + self.prior) * base)).astype(np.float32)

    def build(self, state: UserState) -> np.ndarray:
        """The context vector (float32, ``layout_.dim``) of one user as of ``state.as_of``."""
        m = ((state.kinds == PLAY) | (state.kinds == RATING)) & (state.title_idx >= 0)
        titles = state.title_idx[m]
        age = np.maximum(state.as_of - state.ts[m], 0).astype(np.float64)
        strength = np.where(state.kinds[m] == RATING, np.nan_to_num(state.stars[m], nan=2.5) / 5.0, 1.0)
        w_long = strength * np.exp2(-age / (self.half_life_days * DAY))
        w_recent = strength * np.exp2(-age / (self.recent_half_life_days * DAY))
        genre = self._lift(w_long, titles, self.genre_of_title_, self.genre_base_)
        return np.concatenate(
            [
                genre,
                self._lift(w_recent, titles, self.genre_of_title_, self.genre_base_),
                self._lift(w_long, titles, self.cast_of_title_, self.cast_base_),
                (self.cast_genre_profile_ @ genre).astype(np.float32),
            ]
        )

    def build_many(self, states: list[UserState]) -> np.ndarray:
        """Context vectors of many users, stacked (n, dim)."""
        if not states:
            return np.zeros((0, self.layout_.dim), np.float32)
        return np.vstack([self.build(s) for s in states])


@cached_njit(nogil=True)
def _weighted_row_sum(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray, weights: np.ndarray, n_cols: int) -> np.ndarray:
    """``sum_i weights[i] * M[rows[i]]`` of a CSR matrix: the cost of the history, not of the catalog."""
    out = np.zeros(n_cols)
    for i in range(rows.size):
        r = rows[i]
        for k in range(indptr[r], indptr[r + 1]):
            out[indices[k]] += data[k] * weights[i]
    return out
