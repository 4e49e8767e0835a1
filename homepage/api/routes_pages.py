"""Read endpoints: homepage, titles, health, metrics (and the benchmark floor when enabled)."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import parse_qsl

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from homepage.api import app_state
from homepage.api.schemas import (
    COMMON_RESPONSES,
    ErrorOut,
    Health,
    PageOut,
    PageQuery,
    SimilarOut,
    TitleCard,
    TitleId,
    TitleOut,
    UserId,
    query_parameters,
)
from homepage.service import PageParams
from homepage.store import StoreUnavailable

router = APIRouter(responses=COMMON_RESPONSES)
JSON = "application/json"



_DEFAULT_PAGE_PARAMS = PageParams()


def page_params(query_string: bytes) -> PageParams:
    """The page parameters of a request's query string; 422 naming the field when one is invalid.

    FastAPI validates declared query parameters one by one, ~30 us a request on this
    route, a sixth of a whole cache hit; one pass of ``PageQuery`` costs ~3 us, and a request
    without a query string none. The OpenAPI schema still lists them (``openapi_extra``). An
    invalid ``user_id`` is reported alone: FastAPI rejects the path before this runs.
    """
    if not query_string:
        return _DEFAULT_PAGE_PARAMS
    values = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))  # the last of repeats, as Starlette
    try:
        q = PageQuery.model_validate(values)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("query", *err["loc"])} for err in e.errors(include_url=False)]) from None
    return PageParams(q.rows, q.cols, q.device, q.region, q.explain)


@router.get(
    "/homepage/{user_id}",
    response_model=PageOut,
    responses={200: {"model": PageOut}},
    summary="The user's homepage: rows of titles with artwork",
    openapi_extra={"parameters": query_parameters(PageQuery)},
)
async def homepage(request: Request, user_id: UserId) -> Response:
    """A personalised page within the deadline, or the popular fallback marked ``degraded``. Never an error for unknown users."""
    result = await app_state.service(request).page(user_id, page_params(request.scope["query_string"]))
    # personal: no shared cache may keep it; the server's own cache is invalidated by the user's events
    headers = {"X-Cache": "hit" if result.cache_hit else "miss", "Cache-Control": "private, no-store"}
    if result.degraded:
        headers["X-Degraded"] = result.reason or "1"
    return Response(result.body, media_type=JSON, headers=headers)



@router.get("/titles/{title_id}", response_model=TitleOut, responses={404: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def title(request: Request, title_id: TitleId) -> TitleOut:
    """A catalog entry with its artwork variants."""
    cur = app_state.loaded(request)
    cat = cur.models.catalog
    idx = app_state.title_index(cat, title_id)
    t = cat.title(idx)
    return TitleOut(
        title_id=t.title_id,
        name=t.name,
        year=t.year,
        genres=list(t.genres),
        cast=list(t.cast),
        director=list(t.director),
        maturity=t.maturity,
        variants=[TitleCard(title_id=t.title_id, name=t.name, year=t.year, variant_id=v.variant_id, image_url=cur.cards.image_url.get(v.variant_id) or None) for v in t.variants],
    )


@router.get("/titles/{title_id}/similar", response_model=SimilarOut, responses={404: {"model": ErrorOut}, 503: {"model": ErrorOut}})
async def similar(request: Request, title_id: TitleId, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> SimilarOut:
    """Titles similar to one (the video-to-video neighbours: co-occurrence blended with content)."""
    cur = app_state.loaded(request)
    cat = cur.models.catalog
    idx = app_state.title_index(cat, title_id)
    v2v = next((r for r in cur.models.rankers if getattr(r, "neighbours_", None) is not None), None)
    if v2v is None or idx >= v2v.neighbours_.shape[0]:
        return SimilarOut(title_id=title_id, similar=[])
    nb = np.asarray(v2v.neighbours_[idx])
    sc = np.asarray(v2v.neighbour_scores_[idx])
    ok = (nb >= 0) & (nb != idx)
    cards = [cur.cards.title(int(j), float(s), None, None) for j, s in zip(nb[ok][:limit], sc[ok][:limit])]
    return SimilarOut(title_id=title_id, similar=[TitleCard(**c) for c in cards])


# GET and HEAD as two routes, not one api_route: one route gives both operations the same OpenAPI operationId,
# which client generators refuse
@router.get("/health/live", response_model=Health)
@router.head("/health/live", response_model=Health)  # load-balancer probes
async def live() -> Health:
    """The process is up."""
    return Health(status="live")


@router.get("/health/ready", response_model=Health, responses={503: {"model": Health}})
@router.head("/health/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(request: Request, response: Response) -> Health:
    """200 when Redis answers and a model is loaded; 503 otherwise."""
    service = app_state.service(request)
    cur = service.loaded
    try:
        ok = await asyncio.wait_for(service.run(service.store.ping), timeout=1.0)
    except (StoreUnavailable, TimeoutError):
        ok = False
    error = None if ok else "redis unavailable"
    if cur is None:
        error = service.last_error or "model not loaded"
    elif ok and service.last_error:
        error = service.last_error
    if error:
        response.status_code = 503
    return Health(
        status="ready" if not error else "unavailable",
        store_version=cur.store_version if cur else None,
        model_version=cur.models.version if cur else None,
        error=error,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this worker."""
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/bench/floor/{user_id}", include_in_schema=False)
async def floor(request: Request, user_id: int) -> Response:
    """Benchmark floor: a precomputed page of the same size, read straight from Redis (one GET)."""
    if not request.app.state.settings.bench_endpoints:
        raise HTTPException(404, "Not Found")
    service = app_state.service(request)
    body = await service.run(service.store.get_floor_page)
    if body is None:
        raise HTTPException(404, "no floor page stored")
    return Response(body, media_type=JSON)
