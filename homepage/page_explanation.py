"""A built page explained row by row, for ``homepage explain``: why each row is where it is, and what the user played.

Plain data in, plain data out: the page (built with ``explain=True``), the catalog, and the
titles the user played after the request (the replay's targets), if any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import Page, RowReason

# the features the table shows (all of them go to the JSON): the row's value to this user, what is
# already above it, and how popular its titles are
TABLE_FEATURES: tuple[str, ...] = ("value_disc", "dup_share", "pers_mean", "pop_mean", "genre_sim_max_above", "same_ranker_above")


def reason_text(reason: RowReason) -> str:
    """``because_you_watched (anchor 89904)``, ``genre (Action)``, ``top_n``."""
    detail = f"anchor {reason.anchor_title_id}" if reason.anchor_title_id is not None else reason.genre or reason.region
    return f"{reason.kind} ({detail})" if detail else reason.kind


@dataclass(frozen=True)
class RowExplanation:
    """One placed row: where and why it was placed, its features at that stage, its titles and the user's later plays among them."""

    stage: int
    row_id: str
    ranker: str
    display_title: str
    reason: str
    forced_by: str | None
    score: float
    features: dict[str, float | None]
    title_ids: tuple[int, ...]
    title_names: tuple[str, ...]
    hits: tuple[int, ...]  # columns (0-based) of titles the user played after the request

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "row_id": self.row_id,
            "ranker": self.ranker,
            "display_title": self.display_title,
            "reason": self.reason,
            "forced_by": self.forced_by,
            "score": self.score,
            "features": self.features,
            "titles": [{"title_id": t, "name": n} for t, n in zip(self.title_ids, self.title_names)],
            "hit_columns": list(self.hits),
        }


def explain_rows(page: Page, catalog: Catalog, played_after: Sequence[int] | np.ndarray = ()) -> list[RowExplanation]:
    """Every row of ``page`` (built with ``explain=True``) in page order; ``played_after`` holds title ids."""
    played = {int(t) for t in np.asarray(played_after, dtype=np.int64).tolist()}
    out = []
    for row in page.rows:
        ids = tuple(int(t) for t in row.title_ids)
        idx = catalog.index_of(np.asarray(ids, dtype=np.int64)) if ids else np.zeros(0, np.int64)
        features = {k: (None if v is None or v != v else float(v)) for k, v in (row.features or {}).items()}
        out.append(
            RowExplanation(
                stage=row.stage,
                row_id=row.row_id,
                ranker=row.ranker,
                display_title=row.display_title,
                reason=reason_text(row.reason),
                forced_by=row.forced_by,
                score=float(row.score),
                features=features,
                title_ids=ids,
                title_names=tuple(catalog.names[int(i)] if i >= 0 else "" for i in idx.tolist()),
                hits=tuple(c for c, t in enumerate(ids) if t in played),
            )
        )
    return out
