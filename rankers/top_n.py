"""Top-N: the most popular titles overall and in the user's region; also serves cold start.

Popularity is the count of users who played or rated a title (each once), or, with
``bayesian``, the mean rating shrunk toward the global mean by ``prior_count`` pseudo-ratings
(an IMDb-style weighted rating), among titles with at least ``min_count`` such users. The regional row ranks by regional
counts (the world keeps no regional ratings). The ranking of a world is computed once
and cached for as long as that ``GlobalState`` object lives, so a request only filters it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from typing import Any

import numpy as np
from pydantic import Field

from homepage.domain import CandidateRow, RowReason
from homepage.state import GlobalState, UserState
from rankers.base import RankerConfig, Ranker, RankRequest, StateNeed, safe_id
from rankers.similarity import mean_of, not_in, top_k


class TopNConfig(RankerConfig):
    """Configuration of :class:`TopNRanker`."""

    max_rows: int = Field(default=2, ge=0, le=2, description="overall row, then regional row")
    min_count: int = Field(default=5, ge=0, description="interactions a title needs to be ranked")
    bayesian: bool = Field(default=True, description="rank by Bayesian-average rating instead of count")
    prior_count: float = Field(default=20.0, ge=0.0, description="pseudo-ratings at the global mean")
    overall: bool = True
    regional: bool = True
    exclude_seen: bool = True
    display_title: str = "Top 10 today"
    region_display_title: str = "Top in your region"


Score = Callable[[GlobalState, str | None], "np.ndarray | None"]


class PopularityRows:
    """Per-world cache of the head of a popularity ranking, filtered per user. Shared with trending.

    The head (a few times the row length) is computed once per ``GlobalState`` object and
    kept while that object lives; a user who has seen most of it gets a full recomputation
    with their titles excluded, so the row is always the true top-k of what they may see.
    The scoring function comes with each call: kept here, a ranker's bound method made a
    reference cycle (ranker -> rows -> method -> ranker) that only a full garbage collection
    frees, and the service freezes loaded models out of the collector's reach.
    """

    def __init__(self, head: int) -> None:
        self._head = head
        self._cache: weakref.WeakKeyDictionary[GlobalState, dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray | None]]]
        self._cache = weakref.WeakKeyDictionary()

    def _entry(self, score: Score, world: GlobalState, region: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        per_world = self._cache.get(world)
        if per_world is None:
            per_world = {}
            self._cache[world] = per_world
        if region not in per_world:
            s = score(world, region)
            if s is None:
                e = np.zeros(0, np.int64)
                per_world[region] = (e, np.zeros(0, np.float32), None)
            else:
                idx, sc = top_k(s, self._head)
                per_world[region] = (idx, sc, s if idx.size == self._head else None)
        return per_world[region]

    def overall_and_regional(self, score: Score, ranker: str, kind: str, cfg: Any, request: RankRequest) -> list[CandidateRow]:
        """The overall row (reason ``kind``), then the user's regional row (``kind``_region), as configured, by ``score``.

        ``cfg`` carries ``overall``, ``regional``, ``max_rows``, ``row_length``, ``exclude_seen``,
        ``display_title`` and ``region_display_title`` (the top-N and trending configs both do).
        """
        out: list[CandidateRow] = []
        if cfg.overall and len(out) < cfg.max_rows:
            idx, sc = self.row(score, request.world, None, request.user, cfg.row_length, cfg.exclude_seen)
            if idx.size:
                out.append(make_row(ranker, kind, cfg.display_title, RowReason(kind=kind), request, idx, sc))
        region = user_region(request)
        if cfg.regional and region is not None and len(out) < cfg.max_rows:
            idx, sc = self.row(score, request.world, region, request.user, cfg.row_length, cfg.exclude_seen)
            if idx.size:
                reason = RowReason(kind=f"{kind}_region", region=region)
                out.append(make_row(ranker, f"{kind}:region:{safe_id(region)}", cfg.region_display_title, reason, request, idx, sc))
        return out

    def row(
        self, score: Score, world: GlobalState, region: str | None, user: UserState, k: int, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Catalog indices and scores (``score``'s, cached per world) of the best ``k`` titles the user may be shown."""
        idx, sc, full = self._entry(score, world, region)
        seen = user.known_titles if exclude_seen else np.zeros(0, np.int64)
        if seen.size:
            keep = not_in(idx, seen)
            if full is not None and int(keep.sum()) < k:  # the head ran out: rank everything
                return top_k(full, k, exclude=seen)
            idx, sc = idx[keep], sc[keep]
        return idx[:k], sc[:k]


def user_region(request: RankRequest) -> str | None:
    """The request's region when given, else the user's profile region."""
    return request.context.region or request.user.region


def make_row(
    ranker: str, row_id: str, display: str, reason: RowReason, request: RankRequest, idx: np.ndarray, sc: np.ndarray
) -> CandidateRow:
    """A candidate row from catalog indices; the row score is the mean of the top scores, squashed to (0, 1)."""
    mean = mean_of(sc) if sc.size else 0.0
    return CandidateRow(
        row_id=row_id,
        ranker=ranker,
        display_title=display,
        title_ids=request.catalog.title_ids[idx].astype(np.int64),
        scores=sc.astype(np.float32),
        reason=reason,
        row_score=mean / (1.0 + abs(mean)),
    )


class TopNRanker(Ranker):
    """Most popular titles overall and per region; stateless (reads ``GlobalState``)."""

    name = "top_n"
    Config = TopNConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.PROFILE, StateNeed.POPULARITY})
    config: TopNConfig

    def __init__(self, config: TopNConfig | dict | None = None) -> None:
        super().__init__(config)
        self._rows = PopularityRows(head=4 * self.config.row_length + 200)

    def scores(self, world: GlobalState, region: str | None) -> np.ndarray | None:
        """Popularity of every title (-inf where not rankable); None when the region is unknown."""
        cfg = self.config
        if region is None:
            counts = world.counts.astype(np.float64)
            rs, rc = world.rating_sum, world.rating_count.astype(np.float64)
            if cfg.bayesian and rc.sum() > 0:
                mean = rs.sum() / rc.sum()
                s = (rs + cfg.prior_count * mean) / (rc + cfg.prior_count) if cfg.prior_count > 0 else rs / np.maximum(rc, 1)
                # ties (e.g. titles with no ratings) go to the more watched title
                s = s + 1e-6 * counts / max(counts.max(), 1.0)
                s = np.where(rc > 0, s, -np.inf) if cfg.prior_count == 0 else s
            else:
                s = counts.copy()
        else:
            if region not in world.region_counts:
                return None
            counts = world.region_counts[region].astype(np.float64)
            s = counts.copy()
        s[(counts < max(cfg.min_count, 1))] = -np.inf
        return s

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        return self._rows.overall_and_regional(self.scores, self.name, "top_n", self.config, request)
