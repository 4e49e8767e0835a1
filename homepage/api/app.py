"""The FastAPI app factory: settings, the store connection and models in the lifespan, error handling.

``create_app()`` does no work; the lifespan connects to Redis (``REDIS_URL`` or the
embedded server), loads the active model bundle, reads the world state, and starts the
background refresh that follows newly published versions without a restart. If Redis
is down at start-up the app still starts: pages are degraded (the fallback of the last version
this models directory served, ``homepage.last_good``) until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from threadpoolctl import threadpool_limits

from homepage.api.asgi import HttpMiddleware
from homepage.api.compression import GzipWhenAccepted
from homepage.api.echo import MAX_MESSAGE, clip
from homepage.api.orphaned import stop_when_orphaned
from homepage.api.request_id import REQUEST_ID_HEADER, RequestId, request_id
from homepage.api.security import BodyLimit
from homepage.api.settings import ServeSettings, get_serve_settings
from homepage.errors import HomepageError
from homepage.log_throttle import LogThrottle
from homepage.metrics import ServingMetrics, method_label
from homepage.service import PageService
from homepage.settings import Settings, get_settings
from homepage.store import StoreRefused, StoreUnavailable, connect

log = logging.getLogger(__name__)
RETRY_AFTER = "1"


def create_app(settings: ServeSettings | None = None, store_settings: Settings | None = None) -> FastAPI:
    """The API; settings default to the environment's (``HOMEPAGE_*``, ``REDIS_URL``)."""
    serve = settings or get_serve_settings()
    base = store_settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a short socket timeout: a hung Redis must not hold a worker thread past a few deadlines
        s = base.model_copy(update={"socket_timeout": serve.redis_timeout, "connect_timeout": serve.redis_timeout})
        store = await asyncio.to_thread(connect, s)
        service = PageService(store, serve.service_config(), app.state.metrics)
        app.state.service = service
        await asyncio.to_thread(service.refresh)
        # one BLAS/OpenMP thread per worker, once the models' libraries are loaded: a page is a few
        # small matrix products, and a second BLAS thread spinning beside the other workers only
        # burns the cores they need (6x a ranker's CPU time on a busy 2-core box)
        blas = threadpool_limits(1)
        task = asyncio.create_task(_refresh_after(service))
        orphan_watch = asyncio.create_task(stop_when_orphaned())
        try:
            yield
        finally:
            blas.restore_original_limits()
            for t in (task, orphan_watch):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await asyncio.to_thread(service.close)  # waits for a refresh still running in its thread
            store.close()

    app = FastAPI(
        title="Homepage row ranking API",
        version="0.1.0",
        description="Personalised homepage rows, event ingestion and model versions, served from Redis.",
        lifespan=lifespan,
        # a trailing slash is a 404, not a redirect built from the client's Host header (a 307 that
        # would send a POST and its X-API-Key to wherever that header names)
        redirect_slashes=False,
    )
    app.state.settings = serve
    app.state.metrics = ServingMetrics()
    _install_handlers(app)
    from homepage.api import routes_admin, routes_artwork, routes_events, routes_pages, routes_viewer

    routers = [routes_pages.router, routes_events.router, routes_admin.router, routes_artwork.router]  # artwork: page image URLs name it
    if serve.viewer:
        routers.append(routes_viewer.router)
    for router in routers:
        app.include_router(router)
    app.state.routes_by_path = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]  # for a 405's Allow
    app.add_middleware(BodyLimit, max_bytes=serve.max_body_bytes)
    if serve.gzip_min_bytes:
        app.add_middleware(GzipWhenAccepted, minimum_size=serve.gzip_min_bytes)
    app.add_middleware(Timing)
    app.add_middleware(Unhandled)  # Timing counts the 500 as it propagates
    if origins := serve.cors_origin_list():  # outside Unhandled: a browser can read the 500 and its request id too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", REQUEST_ID_HEADER],
            expose_headers=["X-Cache", "X-Degraded", "Retry-After", REQUEST_ID_HEADER],
            max_age=600,
        )
    app.add_middleware(RequestId)  # outermost: every answer, the 500 included, carries the id
    return app


async def _refresh_after(service: PageService) -> None:
    await asyncio.sleep(service.config.refresh_seconds)
    await service.refresh_forever()


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_error(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
        body: dict[str, Any] = {"detail": detail, "errors": errors[:MAX_ERRORS]}
        if len(errors) > MAX_ERRORS:
            body["errors_omitted"] = len(errors) - MAX_ERRORS
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNPARSED_BODY and exc.__cause__ is not None:
            message = _unparsed_body(exc.__cause__)  # FastAPI's words name neither the field nor why
            return JSONResponse({"detail": f"body: {message}", "errors": [{"field": "body", "message": message}]}, status_code=422)
        detail = clip(str(exc.detail), MAX_MESSAGE)  # routes clip what they echo; this bounds any that forgot
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path; GET and HEAD are two routes
            allowed = sorted({m for route in request.app.state.routes_by_path if route.matches(request.scope)[0] != Match.NONE for m in route.methods})
            headers = {**(headers or {}), "Allow": ", ".join(allowed)} if allowed else headers
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    refused_writes = LogThrottle(60.0)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        _log_refused_write(request, exc, refused_writes)
        return JSONResponse({"detail": "storage unavailable, retry later"}, status_code=503, headers={"Retry-After": RETRY_AFTER})

    @app.exception_handler(StoreRefused)
    async def refused(request: Request, exc: StoreRefused) -> JSONResponse:
        # the server's ACL: not the client's error (a 400 quoting it), and no detail of the deployment for it
        _log_refused_write(request, exc, refused_writes)
        return JSONResponse({"detail": "storage unavailable, retry later"}, status_code=503, headers={"Retry-After": RETRY_AFTER})

    @app.exception_handler(HomepageError)
    async def user_error(request: Request, exc: HomepageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)


def _log_refused_write(request: Request, exc: Exception, throttle: LogThrottle) -> None:
    """Log, once a minute, a 503 given while Redis answers this worker's reads (a replica answering READONLY, memory full, an ACL).

    The refresh logs an outage when it starts and ends; a server that refuses only writes left
    nothing in the log while every event got 503.
    """
    service = getattr(request.app.state, "service", None)
    if service is None or not service.redis_ok or service.loaded is None:
        return  # an outage (the refresh said so) or no version yet
    held = throttle.admit("write")
    if held is not None:
        log.warning("%s %s got 503 while Redis answers reads (%d more since the last logged): %s",
                    request.method, getattr(request.scope.get("route"), "path", "?"), held, exc)


MAX_ERRORS = 20  # listed in a 422; ``errors_omitted`` counts the rest
UNPARSED_BODY = "There was an error parsing the body"  # FastAPI's 400 when the JSON parser raises something else than a decode error


def _unparsed_body(cause: BaseException) -> str:
    """Why a request body that is not a JSON syntax error could not be parsed, in the client's terms."""
    if isinstance(cause, UnicodeDecodeError):
        return f"malformed JSON: not UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "malformed JSON: nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "malformed JSON: a number with too many digits"
    return f"malformed JSON: {type(cause).__name__}"


def _error(e: Mapping[str, Any]) -> dict[str, str]:
    """One validation error as ``{field, message}``; malformed JSON names the body and the position.

    The error's ``input`` is never echoed; a field name can be input (an unknown JSON key) and
    is clipped, as is a message (some quote a value).
    """
    if e.get("type") == "json_invalid":
        loc = e.get("loc", ())
        pos = loc[-1] if loc and isinstance(loc[-1], int) else None
        reason = (e.get("ctx") or {}).get("error", "")
        message = f"malformed JSON at character {pos}: {reason}" if pos is not None else f"malformed JSON: {reason}"
        return {"field": "body", "message": clip(message, MAX_MESSAGE)}
    return {"field": clip(_field(e.get("loc", ()))), "message": clip(str(e.get("msg", "")), MAX_MESSAGE)}


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


class Unhandled(HttpMiddleware):
    """ASGI middleware: an error no handler took is logged once and answered 500, without its details.

    (Starlette's ``exception_handler(Exception)`` answers too, then re-raises so that the
    server logs the same traceback a second time.) The log names the route, not the path:
    paths hold user ids. At most one traceback a minute per route, with the count held back.
    """

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.throttle = LogThrottle(60.0)  # per route: a broken store or model fails every request alike

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def send_started(msg: dict[str, Any]) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, send_started)
        except Exception:
            route = getattr(scope.get("route"), "path", "unmatched")
            held = self.throttle.admit((scope["method"], route))
            if held is not None:
                log.exception("unhandled error on %s %s (request %s; %d more on this route since the last logged)", scope["method"], route, request_id(scope), held)
            if not started:
                await JSONResponse({"detail": "internal error"}, status_code=500)(scope, receive, send)


class Timing(HttpMiddleware):
    """ASGI middleware: per-endpoint latency histogram and status counts (route templates, not raw paths; known methods)."""

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        status = 500

        async def send_status(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            metrics: ServingMetrics = scope["app"].state.metrics
            metrics.latency.labels(endpoint, method_label(scope["method"])).observe(time.perf_counter() - t0)
            metrics.responses.labels(endpoint, str(status)).inc()
