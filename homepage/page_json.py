"""The API's JSON form of a page: one renderer for built pages, cached pages and fallback pages.

Rendering is plain dict building (no pydantic validation on the hot path); the pydantic
models in ``homepage.api.schemas`` document the same shape in the OpenAPI schema.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import Page, PlacedRow, RowReason


@dataclass(frozen=True, eq=False)
class TitleCards:
    """Per-title display fields, precomputed once per model version (name, year, default artwork)."""

    catalog: Catalog
    names: tuple[str, ...]
    years: tuple[int | None, ...]
    default_variant: tuple[str | None, ...]
    image_url: dict[str, str]  # variant id -> image URL

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> TitleCards:
        images = {v.variant_id: v.image_url for vs in catalog.variants for v in vs}
        return cls(
            catalog=catalog,
            names=catalog.names,
            years=tuple(int(y) or None for y in catalog.years),
            default_variant=tuple(vs[0].variant_id if vs else None for vs in catalog.variants),
            image_url=images,
        )

    def title(self, idx: int, score: float | None, variant: str | None, propensity: float | None) -> dict[str, Any]:
        v = variant if variant else self.default_variant[idx]
        return {
            "title_id": int(self.catalog.title_ids[idx]),
            "name": self.names[idx],
            "year": self.years[idx],
            "variant_id": v,
            "image_url": self.image_url.get(v) if v else None,
            "score": _finite(score),
            "propensity": propensity,
        }


def _finite(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), 6)


def reason_json(r: RowReason) -> dict[str, Any]:
    return {"kind": r.kind, "anchor_title_id": r.anchor_title_id, "genre": r.genre, "region": r.region}


def row_json(row: PlacedRow, cards: TitleCards) -> dict[str, Any]:
    idx = cards.catalog.index_of(np.asarray(row.title_ids, dtype=np.int64))
    variants = row.variant_ids or (None,) * len(idx)
    props = row.propensities or (None,) * len(idx)
    out: dict[str, Any] = {
        "row_id": row.row_id,
        "ranker": row.ranker,
        "display_title": row.display_title,
        "reason": reason_json(row.reason),
        "score": _finite(row.score),
        "titles": [cards.title(int(i), s, v, p) for i, s, v, p in zip(idx, row.scores, variants, props) if i >= 0],
    }
    if row.features is not None:
        out["features"] = {k: _finite(v) for k, v in row.features.items()}
    return out


def page_json(
    page: Page,
    cards: TitleCards,
    *,
    store_version: str | None,
    world_as_of: int | None,
    request: dict[str, Any],
) -> dict[str, Any]:
    """The response body of ``GET /homepage/{user}`` for a page."""
    return {
        "page_id": page.page_id,
        "user_id": page.user_id,
        "model_version": page.model_version,
        "store_version": store_version,
        "config_hash": page.config_hash,
        "policy": page.policy,
        "generated_at": page.generated_at,
        "world_as_of": world_as_of,
        "degraded": page.degraded,
        "request": request,
        "rows": [row_json(r, cards) for r in page.rows],
        "notes": list(page.notes),
    }


def dumps(body: dict[str, Any]) -> bytes:
    """Compact JSON bytes (non-finite floats were already mapped to null)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
