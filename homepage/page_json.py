"""The API's JSON form of a page: one renderer for built pages, cached pages and fallback pages.

Rendering is plain dict building (no pydantic validation on the hot path) serialised by
orjson; the pydantic models in ``homepage.api.schemas`` document the same shape in the
OpenAPI schema. Everything per title that does not depend on the request (name, year,
default artwork, image URLs, the title id -> catalog index map) is computed once per
model version in ``TitleCards``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from homepage.catalog import Catalog
from homepage.domain import Page, PlacedRow, RowReason

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY  # numpy scalars are accepted, not an error
_INF = float("inf")


def absolute_url(url: str, public_url: str | None) -> str:
    """``url`` under ``public_url`` when it is site-relative (``/artwork/...``); any other URL as it is."""
    if public_url and url.startswith("/") and not url.startswith("//"):
        return public_url.rstrip("/") + url
    return url


@dataclass(frozen=True, eq=False)
class TitleCards:
    """Per-title display fields, precomputed once per model version (name, year, default artwork)."""

    catalog: Catalog
    names: tuple[str, ...]
    years: tuple[int | None, ...]
    default_variant: tuple[str | None, ...]
    image_url: dict[str, str]  # variant id -> image URL
    position: dict[int, int]  # title id -> catalog index

    @classmethod
    def from_catalog(cls, catalog: Catalog, public_url: str | None = None) -> TitleCards:
        """The cards of a catalog; with ``public_url``, site-relative image URLs become absolute under it."""
        images = {v.variant_id: absolute_url(v.image_url, public_url) for vs in catalog.variants for v in vs}
        return cls(
            catalog=catalog,
            names=tuple(catalog.names),
            years=tuple(int(y) or None for y in catalog.years),
            default_variant=tuple(vs[0].variant_id if vs else None for vs in catalog.variants),
            image_url=images,
            position={int(t): i for i, t in enumerate(catalog.title_ids.tolist())},
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
    """One row; titles missing from the catalog are left out (as the page builder never places them)."""
    position, names, years, default, images = cards.position, cards.names, cards.years, cards.default_variant, cards.image_url
    n = len(row.title_ids)
    variants = row.variant_ids or (None,) * n
    props = row.propensities or (None,) * n
    titles = []
    for tid, s, v, p in zip(row.title_ids, row.scores, variants, props):
        i = position.get(tid)
        if i is None:
            continue
        if not v:
            v = default[i]
        titles.append(
            {
                "title_id": tid,
                "name": names[i],
                "year": years[i],
                "variant_id": v,
                "image_url": images.get(v) if v else None,
                "score": round(s, 6) if s is not None and -_INF < s < _INF else None,  # NaN and +-inf: null
                "propensity": p,
            }
        )
    out: dict[str, Any] = {
        "row_id": row.row_id,
        "ranker": row.ranker,
        "display_title": row.display_title,
        "reason": reason_json(row.reason),
        "score": _finite(row.score),
        "titles": titles,
    }
    if row.features is not None:  # explain mode: where the row was placed, and why
        out["stage"] = row.stage
        out["forced_by"] = row.forced_by
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


def dumps(body: Any) -> bytes:
    """Compact JSON bytes (orjson; non-finite floats were already mapped to null, and orjson writes null for any left)."""
    return orjson.dumps(body, option=_JSON_OPTIONS)
