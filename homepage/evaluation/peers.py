"""Peer baselines from other libraries and the literature, fitted on the same train matrix as our rankers.

Each peer takes a (users, titles) CSR matrix of training interactions and returns, for some
users, their top-k title indices with the titles they already have in the matrix excluded:
most-popular, EASE (Steck 2019, numpy), and ``implicit``'s ALS, BPR and item-item cosine.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from rankers.factorization import fit_ease


def top_k_masked(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """(n, k) best title indices per row of ``scores`` with ``seen`` entries excluded; -1 pads."""
    s = np.array(scores, np.float64, copy=True)
    r, c = seen.nonzero()
    s[r, c] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(ps, order, axis=1)), top, -1)


class Peer(ABC):
    """A baseline: ``fit`` on the train matrix, ``recommend`` top-k unseen titles for some of its users."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, x: sp.csr_matrix) -> Self: ...

    @abstractmethod
    def recommend(self, users: np.ndarray, x_users: sp.csr_matrix, k: int) -> np.ndarray:
        """(len(users), k) title indices; ``users`` are row numbers of the fitted matrix."""

    def params(self) -> dict[str, float | int]:
        return {}


class MostPopular(Peer):
    """Titles by number of training users."""

    name = "most_popular"

    def fit(self, x: sp.csr_matrix) -> Self:
        self.counts_ = np.asarray(x.getnnz(axis=0), np.float64).ravel()
        return self

    def recommend(self, users: np.ndarray, x_users: sp.csr_matrix, k: int) -> np.ndarray:
        return top_k_masked(np.tile(self.counts_, (len(users), 1)), x_users, k)


class EASE(Peer):
    """Embarrassingly Shallow Autoencoder (Steck 2019): dense item-item weights, closed form."""

    name = "ease"

    def __init__(self, lam: float = 500.0, min_count: int = 1) -> None:
        self.lam = lam
        self.min_count = min_count

    def fit(self, x: sp.csr_matrix) -> Self:
        self.items_, self.b_ = fit_ease(x, self.lam, min_count=self.min_count)
        self.n_titles_ = x.shape[1]
        return self

    def recommend(self, users: np.ndarray, x_users: sp.csr_matrix, k: int) -> np.ndarray:
        s = np.zeros((len(users), self.n_titles_))
        s[:, self.items_] = np.asarray(x_users[:, self.items_] @ self.b_)
        s[:, np.setdiff1d(np.arange(self.n_titles_), self.items_)] = -1e9  # below any modelled title
        return top_k_masked(s, x_users, k)

    def params(self) -> dict[str, float | int]:
        return {"lambda": self.lam, "min_count": self.min_count}


class _Implicit(Peer):
    """Shared wrapper: ``implicit`` models recommend with their own already-liked filter."""

    def __init__(self, **params: float | int) -> None:
        self.kw = params

    @abstractmethod
    def _model(self) -> object: ...

    def fit(self, x: sp.csr_matrix) -> Self:
        # implicit's solvers call BLAS per user: a BLAS thread per core only contends with them
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):  # implicit warns about its own coo -> csr conversions
            warnings.simplefilter("ignore")
            self.model_ = self._model()
            self.model_.fit(x, show_progress=False)  # type: ignore[attr-defined]
        return self

    def recommend(self, users: np.ndarray, x_users: sp.csr_matrix, k: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids, scores = self.model_.recommend(users, x_users, N=k, filter_already_liked_items=True)  # type: ignore[attr-defined]
        ids = np.asarray(ids, np.int64)
        return np.where(np.isfinite(scores) & (scores > -1e30), ids, -1)

    def params(self) -> dict[str, float | int]:
        return dict(self.kw)


class ImplicitALS(_Implicit):
    name = "implicit_als"

    def _model(self) -> object:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(num_threads=1, random_state=0, **self.kw)


class ImplicitBPR(_Implicit):
    name = "implicit_bpr"

    def _model(self) -> object:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(num_threads=1, random_state=0, **self.kw)


class ImplicitCosine(_Implicit):
    name = "implicit_cosine"

    def _model(self) -> object:
        from implicit.nearest_neighbours import CosineRecommender

        return CosineRecommender(num_threads=1, **self.kw)


def default_peers(ease_lambda: float = 500.0) -> list[Peer]:
    """The peers of the standard comparison, with library-default-like settings."""
    return [
        MostPopular(),
        EASE(lam=ease_lambda),
        ImplicitALS(factors=64, regularization=0.05, iterations=15, alpha=1.0),
        ImplicitBPR(factors=64, learning_rate=0.05, regularization=0.01, iterations=100),
        ImplicitCosine(K=100),
    ]
