"""The fallback page: popular rows held in memory, served when Redis or the model cannot answer in time.

It is computed from the last world state read while healthy (no I/O at request time) and
needs no user state, so it can always be served within the deadline.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import Page, PlacedRow, RowReason
from homepage.state import GlobalState


def _order(values: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Title indices with a positive value, best first (ties by index: deterministic)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v > 0
    if allowed is not None:
        ok &= allowed
    idx = np.flatnonzero(ok)
    return idx[np.lexsort((idx, -v[idx]))]


@dataclass(frozen=True, eq=False)
class FallbackPages:
    """Orderings of the catalog by trending and popularity (overall and per region)."""

    catalog: Catalog
    trending: np.ndarray
    popular: np.ndarray
    region_popular: dict[str, np.ndarray]
    as_of: int
    version: str | None = None

    @classmethod
    def from_world(
        cls, world: GlobalState, catalog: Catalog, allowed: np.ndarray | None = None, version: str | None = None
    ) -> FallbackPages:
        return cls(
            catalog=catalog,
            trending=_order(world.decayed, allowed),
            popular=_order(world.counts, allowed),
            region_popular={r: _order(c, allowed)[:100] for r, c in world.region_counts.items()},
            as_of=int(world.as_of),
            version=version,
        )

    def page(self, user_id: int, rows: int, cols: int, region: str | None = None, reason: str = "") -> Page:
        """A degraded page: top in the region (when known), trending, then popular titles, no repeats."""
        plan: list[tuple[str, str, str, np.ndarray, str | None]] = []
        if region is not None and region in self.region_popular:
            plan.append((f"fallback:top_n:{region}", "top_n", f"Top in {region}", self.region_popular[region], region))
        plan.append(("fallback:trending", "trending", "Trending now", self.trending, None))
        plan.append(("fallback:popular", "top_n", "Popular on Homepage", self.popular, None))
        shown = np.zeros(len(self.catalog), dtype=bool)
        placed: list[PlacedRow] = []
        kinds = {"trending": "trending", "top_n": "popular"}
        for row_id, ranker, title, order, reg in plan:
            more = 0
            while len(placed) < rows:
                fresh = order[~shown[order]][:cols]
                if fresh.size == 0:
                    break
                shown[fresh] = True
                kind = "popular_region" if reg is not None else kinds[ranker]
                placed.append(
                    PlacedRow(
                        row_id=row_id if more == 0 else f"{row_id}:{more}",
                        ranker=ranker,
                        display_title=title if more == 0 else f"More {title.lower()}",
                        reason=RowReason(kind=kind, region=reg),
                        title_ids=tuple(int(t) for t in self.catalog.title_ids[fresh]),
                        scores=tuple(float("nan") for _ in fresh),
                        stage=len(placed),
                        score=float("nan"),
                        forced_by="fallback",
                    )
                )
                more += 1
                if ranker != "top_n" or reg is not None:
                    break  # one trending row and one region row; popular fills the rest
        return Page(
            page_id=f"fb-{secrets.token_hex(6)}",
            user_id=int(user_id),
            rows=tuple(placed),
            policy="fallback",
            model_version=self.version,
            degraded=True,
            notes=(reason,) if reason else (),
        )


def empty_page(user_id: int, reason: str) -> Page:
    """The page served before any model and world state could be loaded: no rows, degraded."""
    return Page(page_id=f"fb-{secrets.token_hex(6)}", user_id=int(user_id), rows=(), policy="fallback", degraded=True, notes=(reason,))
