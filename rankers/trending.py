"""Trending now: exponentially time-decayed popularity, overall and in the user's region.

The decayed counts (``GlobalState.decayed``: the sum of 2^-(age / half_life) over a title's
viewers, each at their earliest play or rating of it: ``eventlog.first_of_pairs``) are computed as of any t by ``EventLog.global_state(t, half_life)`` offline and kept
up to date per event by the Redis store online; the half-life is the pipeline's
``trending_half_life_days``. A title must have at least ``min_recent`` decayed events so
that one stray play does not trend.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from homepage.domain import CandidateRow
from homepage.state import GlobalState
from rankers.base import RankerConfig, Ranker, RankRequest, StateNeed
from rankers.top_n import PopularityRows


class TrendingConfig(RankerConfig):
    """Configuration of :class:`TrendingRanker`."""

    max_rows: int = Field(default=2, ge=0, le=2, description="overall row, then regional row")
    min_recent: float = Field(default=2.0, ge=0.0, description="decayed event count a title needs to trend")
    overall: bool = True
    regional: bool = True
    exclude_seen: bool = True
    display_title: str = "Trending now"
    region_display_title: str = "Trending in your region"


class TrendingRanker(Ranker):
    """Titles with the highest decayed recent popularity; stateless (reads ``GlobalState``)."""

    name = "trending"
    Config = TrendingConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.PROFILE, StateNeed.TRENDING})
    config: TrendingConfig

    def __init__(self, config: TrendingConfig | dict | None = None) -> None:
        super().__init__(config)
        self._rows = PopularityRows(head=4 * self.config.row_length + 200)

    def scores(self, world: GlobalState, region: str | None) -> np.ndarray | None:
        """Decayed counts (-inf below ``min_recent``); None when the region is unknown."""
        if region is None:
            d = world.decayed
        elif region in world.region_decayed:
            d = world.region_decayed[region]
        else:
            return None
        d = np.asarray(d, dtype=np.float64)
        return np.where((d >= self.config.min_recent) & (d > 0), d, -np.inf)

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        return self._rows.overall_and_regional(self.scores, self.name, "trending", self.config, request)
