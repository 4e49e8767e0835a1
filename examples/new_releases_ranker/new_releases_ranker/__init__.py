"""An example plug-in ranker: "New releases", the titles of the latest years, most watched first.

It shows the whole contract in one page: a pydantic config, declared state needs, a
``fit`` that learns arrays, ``arrays``/``restore`` for the artifact, and a pure ``rows``.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from pydantic import Field

from homepage.domain import CandidateRow, RowReason
from rankers.base import FitInput, RankerConfig, Ranker, RankRequest, StateNeed


class NewReleasesConfig(RankerConfig):
    """How recent counts as new, and what the row is called."""

    row_length: int = Field(default=30, ge=1, le=1000)
    window_years: int = Field(default=2, ge=0, le=100, description="years before the newest that still count as new")
    exclude_seen: bool = True
    display_title: str = "New releases"


class NewReleasesRanker(Ranker):
    """One row of the newest titles; learned: ``release_order_`` (catalog indices, newest first)."""

    name = "new_releases"
    Config = NewReleasesConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.POPULARITY})
    config: NewReleasesConfig

    def __init__(self, config: NewReleasesConfig | dict | None = None) -> None:
        super().__init__(config)
        self.release_order_: np.ndarray | None = None

    def fit(self, data: FitInput) -> Self:
        """Remember which titles are new as of the catalog: years within the window of the newest."""
        super().fit(data)
        years = data.catalog.years.astype(np.int64)
        known = years > 0
        if not known.any():
            self.release_order_ = np.zeros(0, np.int64)
            return self
        new = np.flatnonzero(known & (years >= years[known].max() - self.config.window_years))
        self.release_order_ = new[np.lexsort((new, -years[new]))]
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.release_order_ is None else {"release_order": self.release_order_}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.release_order_ = arrays.get("release_order")

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        cfg = self.config
        order = self.release_order_
        if order is None or order.size == 0 or cfg.max_rows == 0:
            return []
        order = order[order < len(request.catalog)]
        if cfg.exclude_seen and request.user.known_titles.size:
            order = order[~np.isin(order, request.user.known_titles)]
        # most watched first among the new titles; ties keep the newest-first order
        counts = request.world.counts[order] if len(request.world) else np.zeros(order.size)
        pick = np.argsort(-counts, kind="stable")[: cfg.row_length]
        idx = order[pick]
        if idx.size == 0:
            return []
        scores = np.log1p(counts[pick]).astype(np.float32)
        return [
            CandidateRow(
                row_id="new_releases",
                ranker=self.name,
                display_title=cfg.display_title,
                title_ids=request.catalog.title_ids[idx].astype(np.int64),
                scores=scores,
                reason=RowReason(kind="new_releases"),
                row_score=float(scores.mean()) / (1.0 + float(scores.mean())),
            )
        ]
