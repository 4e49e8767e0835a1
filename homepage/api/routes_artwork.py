"""Placeholder artwork: ``GET /artwork/{title}/{variant}.svg``, the image of a variant that has no image of its own.

Generated catalogs (the synthetic world, MovieLens without poster metadata) name their
variants' images by this route, so page ``image_url`` values point here; it is served
whether or not the viewer is on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam

from homepage.api import app_state
from homepage.api.schemas import COMMON_RESPONSES, ErrorOut, TitleId
from homepage.artwork_svg import placeholder_svg
from homepage.domain import ArtworkVariant

DEFAULT_VARIANT = "default"  # the placeholder of a title that has no artwork variants
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"

router = APIRouter(responses=COMMON_RESPONSES, tags=["artwork"])


ARTWORK_PATH = "/artwork/{title_id}/{variant_id}.svg"
ARTWORK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {}}},
    404: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


# two routes, as /health/*: one route for both methods gives them the same OpenAPI operationId
@router.get(ARTWORK_PATH, response_class=Response, responses=ARTWORK_RESPONSES)
@router.head(ARTWORK_PATH, response_class=Response, responses=ARTWORK_RESPONSES)  # clients that check an image first
async def artwork(
    request: Request,
    title_id: TitleId,
    variant_id: Annotated[str, PathParam(max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")],
) -> Response:
    """A placeholder poster for an artwork variant: title, year, and the variant's emphasis by colour and label."""
    cat = app_state.loaded(request).models.catalog
    idx = app_state.title_index(cat, title_id)
    variants = cat.variants[idx]
    variant: Any = next((v for v in variants if v.variant_id == variant_id), None)
    if variant is None and variant_id == DEFAULT_VARIANT and not variants:
        variant = ArtworkVariant(variant_id=DEFAULT_VARIANT, title_id=title_id)
    if variant is None:
        raise HTTPException(404, f"variant_id: {variant_id!r} is not an artwork variant of title {title_id}")
    year = int(cat.years[idx]) or None
    svg = placeholder_svg(cat.names[idx], year, variant)
    headers = {"Cache-Control": "public, max-age=3600", "Content-Security-Policy": SVG_CSP, "X-Content-Type-Options": "nosniff"}
    return Response(svg, media_type="image/svg+xml", headers=headers)
