"""Video to video: "Because you watched X" rows from precomputed item-item neighbours.

Fit: the cosine of titles over the binary user x title matrix up to ``until`` (each user's
latest ``max_user_titles`` titles, shrunk by ``shrinkage`` so rare pairs do not look
perfect) is blended with content similarity (genres, cast and director, tags, and year
proximity); the best ``n_neighbours`` of every title are kept. Content candidates
are the ``content_pool`` most interacted titles, which bounds fit cost at n_titles x pool
and keeps obscure titles out of these rows; co-watched titles outside the pool remain
candidates on their collaborative score alone.

Request: anchors are the user's recent, strongly engaged titles (rated >= ``min_stars``
or watched to ``min_progress``, and whose latest rating, if any, is not below ``min_stars``),
scored by engagement and recency; an anchor too similar to one already chosen (in its
neighbour list above ``max_anchor_similarity``, or sharing over ``max_anchor_overlap`` of its
neighbours) is skipped. Each anchor gives a row of its neighbours the user has not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import numpy as np
from pydantic import Field

from homepage.domain import CandidateRow, RowReason
from homepage.kernel_cache import cached_njit
from homepage.state import PLAY, RATING, UserState
from rankers.base import FitInput, RankerConfig, Ranker, RankRequest, StateNeed
from rankers.similarity import content_features, neighbours, not_in, row_top_k, user_title_matrix

DAY = 86_400.0


class VideoToVideoConfig(RankerConfig):
    """Configuration of :class:`VideoToVideoRanker`."""

    row_length: int = Field(default=30, ge=1, le=1000)
    max_rows: int = Field(default=3, ge=0, le=100)
    n_neighbours: int = Field(default=60, ge=1, le=1000, description="neighbours kept per title")
    collaborative_weight: float = Field(default=0.7, ge=0.0, le=1.0, description="the rest is content")
    shrinkage: float = Field(default=10.0, ge=0.0, description="added to the cosine denominator")
    max_user_titles: int = Field(default=200, ge=1, description="latest distinct titles per user used for co-occurrence")
    content_pool: int = Field(default=3000, ge=1, description="most interacted titles eligible as content neighbours")
    year_scale: float = Field(default=10.0, gt=0.0, description="year distance at which year similarity falls to 1/e")
    min_stars: float = Field(default=4.0, description="a rating at least this makes an anchor (or the top rating, when the data's scale stops below it)")
    min_progress: float = Field(default=0.8, ge=0.0, le=1.0, description="a play at least this far makes an anchor")
    anchor_half_life_days: float = Field(default=30.0, gt=0.0)
    anchor_pool: int = Field(default=50, ge=1, description="latest distinct titles considered as anchors")
    max_anchor_similarity: float = Field(default=0.3, ge=0.0)
    max_anchor_overlap: float = Field(default=0.4, ge=0.0, le=1.0)
    min_row_length: int = Field(default=3, ge=1)
    block_size: int = Field(default=1024, ge=16, le=65536, description="titles per block at fit")
    fit_threads: int = Field(default=2, ge=1, le=64, description="blocks scored at once at fit; the result does not depend on it")


class VideoToVideoRanker(Ranker):
    """Because-you-watched rows; learned: ``neighbours_`` and ``neighbour_scores_`` (n_titles, k)."""

    name = "video_to_video"
    Config = VideoToVideoConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.PROGRESS})
    config: VideoToVideoConfig

    def __init__(self, config: VideoToVideoConfig | dict | None = None) -> None:
        super().__init__(config)
        self.neighbours_: np.ndarray | None = None
        self.neighbour_scores_: np.ndarray | None = None
        self.anchor_stars_: float = self.config.min_stars

    # ------------------------------------------------------------------ fit
    def fit(self, data: FitInput, on_block: Callable[[int], None] | None = None) -> Self:
        """Precompute every title's neighbours; ``on_block(n)`` is told after each block of n titles."""
        super().fit(data)
        cfg = self.config
        n = len(data.catalog)
        user_pos, title_idx, _, _ = data.log.interactions(data.until)
        _, user_row = np.unique(user_pos, return_inverse=True)  # users with a play by until, as in personalized
        x = user_title_matrix(user_row, title_idx, int(user_row.max(initial=-1)) + 1, n, cfg.max_user_titles)
        xt = x.T.tocsr()
        n_i = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
        sq = np.sqrt(n_i)
        content = content_features(data.catalog, year_scale=cfg.year_scale)
        pool_idx = np.sort(np.argsort(-n_i, kind="stable")[: cfg.content_pool]) if cfg.collaborative_weight < 1 else np.zeros(0, np.int64)
        pool_idx = pool_idx[n_i[pool_idx] > 0]  # a title nobody had watched by until is not shown (CandidateMatrix.build)
        pool_pos = np.full(n, -1, np.int64)
        pool_pos[pool_idx] = np.arange(pool_idx.size)
        alpha = np.float32(cfg.collaborative_weight)
        k = cfg.n_neighbours

        def block_candidates(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            co = (xt[a:b] @ x).tocoo()
            r, c = co.row.astype(np.int64), co.col.astype(np.int64)
            cf = alpha * co.data / (sq[a + r] * sq[c] + np.float32(cfg.shrinkage) + np.float32(1e-9))
            if co.nnz > 0.05 * (b - a) * n:  # dense co-occurrence: score every pair
                s = np.zeros((b - a, n), np.float32)
                s[r, c] = cf
                if pool_idx.size:
                    s[:, pool_idx] += (1 - alpha) * content.against(slice(a, b), pool_idx)
                s[np.arange(b - a), np.arange(a, b)] = 0.0
                return row_top_k(s, k)
            if not pool_idx.size:
                return r, c, cf
            # sparse co-occurrence: content against the pool, co-watched titles outside it as they are
            d = (1 - alpha) * content.against(slice(a, b), pool_idx)
            inpool = pool_pos[c] >= 0
            d[r[inpool], pool_pos[c[inpool]]] += cf[inpool]
            self_pos = pool_pos[a:b]
            has = self_pos >= 0
            d[np.flatnonzero(has), self_pos[has]] = 0.0
            dr, dc, dv = row_top_k(d, k)
            out = ~inpool
            return np.concatenate([dr, r[out]]), np.concatenate([pool_idx[dc], c[out]]), np.concatenate([dv, cf[out]])

        self.neighbours_, self.neighbour_scores_ = neighbours(n, cfg.n_neighbours, block_candidates, cfg.block_size, on_block, threads=cfg.fit_threads)
        self.anchor_stars_ = data.stars_on_scale(cfg.min_stars)
        self._compile_anchor_pass()
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        if self.neighbours_ is None:
            return {}
        return {"neighbours": self.neighbours_, "neighbour_scores": self.neighbour_scores_, "anchor_stars": np.array([self.anchor_stars_], np.float64)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        if "neighbours" in arrays:
            self.neighbours_ = arrays["neighbours"]
            self.neighbour_scores_ = arrays["neighbour_scores"]
            # an artifact saved before the threshold followed the data's scale kept the configured one
            self.anchor_stars_ = float(arrays["anchor_stars"][0]) if "anchor_stars" in arrays else self.config.min_stars
            self._compile_anchor_pass()

    def _compile_anchor_pass(self) -> None:
        """Compile (or load from numba's disk cache) the anchor pass for these arrays' types now, not on a request."""
        if self.neighbours_ is not None and self.neighbour_scores_ is not None and self.neighbours_.shape[0]:
            _greedy_anchors(np.zeros(1, np.int64), self.neighbours_, self.neighbour_scores_, 1, 1, 1.0, 1.0)

    # ------------------------------------------------------------------ request
    def anchor_scores(self, user: UserState) -> tuple[np.ndarray, np.ndarray]:
        """(catalog index, anchor score) of the user's eligible anchors, best first."""
        cfg = self.config
        known = (user.title_idx >= 0) & (user.title_idx < self._n_fitted())
        if not known.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        idx, ts, kinds = user.title_idx[known], user.ts[known], user.kinds[known]
        stars, prog = user.stars[known], user.progress[known]
        strong = ((kinds == RATING) & (stars >= self.anchor_stars_)) | ((kinds == PLAY) & (prog >= cfg.min_progress))
        rated, last = user.latest_stars  # the latest rating decides: a title rated 5, then 1, is no anchor
        strong &= ~np.isin(idx, rated[last < self.anchor_stars_])
        if not strong.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        engagement = np.where(kinds == RATING, stars / 5.0, prog).astype(np.float64)
        idx, ts, engagement = idx[strong], ts[strong], engagement[strong]
        # latest strong event per title, then the latest ``anchor_pool`` titles
        r = idx[::-1]
        _, first = np.unique(r, return_index=True)
        keep = np.sort(idx.size - 1 - first)[-cfg.anchor_pool :]
        idx, ts, engagement = idx[keep], ts[keep], engagement[keep]
        age = np.maximum(user.as_of - ts, 0).astype(np.float64)
        score = engagement * (0.25 + 0.75 * np.exp2(-age / (cfg.anchor_half_life_days * DAY)))
        order = np.lexsort((-ts, -score))  # equal scores: the more recent first
        return idx[order], score[order]

    def choose_anchors(self, user: UserState) -> list[tuple[int, float]]:
        """Up to ``max_rows`` anchors, best first, none a near duplicate of one chosen before.

        A candidate nearly duplicates a chosen anchor when either lists the other among its
        neighbours with a score above ``max_anchor_similarity``, or their first ``row_length``
        neighbours overlap by more than ``max_anchor_overlap``. The overlap is score-weighted
        (sum over shared neighbours of the smaller score, over the smaller total), so weak tail
        neighbours shared by everything in a small catalog do not count. The greedy pass is one
        compiled loop over the candidates (``_greedy_anchors``): a candidate is kept when it is
        near no anchor kept before it.
        """
        cfg = self.config
        if self.neighbours_ is None or self.neighbour_scores_ is None or cfg.max_rows == 0:
            return []
        idx, score = self.anchor_scores(user)
        nbrs, nscores = self.neighbours_, self.neighbour_scores_
        has = nbrs[idx, 0] >= 0
        idx, score = idx[has], score[has]
        n = idx.size
        if n == 0:
            return []
        head = min(cfg.row_length, nbrs.shape[1])
        chosen = _greedy_anchors(idx, nbrs, nscores, head, cfg.max_rows, cfg.max_anchor_similarity, cfg.max_anchor_overlap)
        return [(int(idx[j]), float(score[j])) for j in chosen]

    def _n_fitted(self) -> int:
        return 0 if self.neighbours_ is None else int(self.neighbours_.shape[0])

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        cfg = self.config
        if self.neighbours_ is None or self.neighbour_scores_ is None or cfg.max_rows == 0:
            return []
        anchors = self.choose_anchors(request.user)
        if not anchors:
            return []
        n_cat = len(request.catalog)
        a = np.array([i for i, _ in anchors], np.int64)
        nb, ns = self.neighbours_[a], self.neighbour_scores_[a]  # (rows, k)
        ok = (nb >= 0) & (nb < n_cat)
        seen = request.user.known_titles
        if seen.size:
            ok &= not_in(nb, seen)  # one lookup for every anchor's neighbours
        out: list[CandidateRow] = []
        for j, (anchor, a_score) in enumerate(anchors):
            keep = np.flatnonzero(ok[j])[: cfg.row_length]
            if keep.size < cfg.min_row_length:
                continue
            idx, sc = nb[j, keep].astype(np.int64), ns[j, keep]
            tid = int(request.catalog.title_ids[anchor])
            out.append(
                CandidateRow(
                    row_id=f"video_to_video:{tid}",
                    ranker=self.name,
                    display_title=f"Because you watched {request.catalog.names[anchor]}",
                    title_ids=request.catalog.title_ids[idx].astype(np.int64),
                    scores=sc.astype(np.float32),
                    reason=RowReason(kind="because_you_watched", anchor_title_id=tid),
                    row_score=float(a_score),
                )
            )
        return out


@cached_njit(nogil=True)
def _greedy_anchors(
    idx: np.ndarray, nbrs: np.ndarray, nscores: np.ndarray, head: int, max_rows: int, max_similarity: float, max_overlap: float
) -> np.ndarray:
    """Positions in ``idx`` (best first) of the anchors kept: each near none kept before it.

    Near: either lists the other among its neighbours above ``max_similarity``, or the
    score-weighted overlap of their first ``head`` neighbours (sum of the smaller score over
    shared neighbours) exceeds ``max_overlap`` of the smaller head total.
    """
    n, k = idx.size, nbrs.shape[1]
    total = np.zeros(n)
    for c in range(n):
        for p in range(head):
            if nbrs[idx[c], p] >= 0:
                total[c] += nscores[idx[c], p]
    chosen = np.empty(min(n, max(max_rows, 0)), dtype=np.int64)
    m = 0
    threshold = np.float32(max_similarity)  # neighbour scores are float32: compare as float32
    for c in range(n):
        if m >= max_rows:
            break
        b = idx[c]
        near = False
        for i in range(m):
            j = chosen[i]
            a = idx[j]
            sim = np.float32(0.0)
            for p in range(k):
                if nbrs[a, p] == b:
                    sim = max(sim, nscores[a, p])
                    break
            for p in range(k):
                if nbrs[b, p] == a:
                    sim = max(sim, nscores[b, p])
                    break
            if sim > threshold:
                near = True
                break
            shared = 0.0
            for p in range(head):
                t = nbrs[a, p]
                if t < 0:
                    continue
                for q in range(head):
                    if nbrs[b, q] == t:
                        shared += min(nscores[a, p], nscores[b, q])
                        break
            if shared > max_overlap * max(min(total[c], total[j]), 1e-12):
                near = True
                break
        if not near:
            chosen[m] = c
            m += 1
    return chosen[:m]
