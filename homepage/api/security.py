"""API-key check for write and admin endpoints, and bounds on request bodies.

The key comes from ``HOMEPAGE_API_KEY`` and is compared in constant time; it is never
logged or echoed. With no key configured, writes are refused unless the development
flag ``HOMEPAGE_DEV=1`` says otherwise. Protected routers come from ``protected_router``:
the key is checked before the body is read, so a client without it learns nothing of how
bodies are validated.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from homepage.api.asgi import HttpMiddleware
from homepage.api.echo import quoted
from homepage.api.settings import ServeSettings

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="required by write and admin endpoints")


def check_api_key(settings: ServeSettings, presented: str | None) -> None:
    """Raise 401/403 unless ``presented`` is the configured key (or writes are open in development)."""
    configured = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if not configured:
        if settings.dev_allow_writes:
            return
        raise HTTPException(403, "writes are disabled: set HOMEPAGE_API_KEY (or HOMEPAGE_DEV=1 for development)")
    if presented is None or not hmac.compare_digest(presented.encode(), configured.encode()):
        raise HTTPException(401, "X-API-Key: missing or wrong", headers={"WWW-Authenticate": "APIKey"})


async def require_api_key(request: Request, presented: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """FastAPI dependency for write and admin routes (declared through ``Security``, so the OpenAPI schema has the scheme)."""
    check_api_key(request.app.state.settings, presented)


class KeyFirstRoute(APIRoute):
    """A route that checks the API key, then the body's Content-Type, before FastAPI reads and validates the body.

    FastAPI parses a JSON body before it runs any dependency, so with the check only in
    ``require_api_key`` a malformed body got its 422 (naming the character) without a key.
    The dependency stays declared: it puts the scheme in the OpenAPI schema (and checks again,
    which costs a constant-time compare). A body sent as another media type than JSON gets a
    415 naming the header (FastAPI takes it as bytes: "body: Input should be a valid dictionary").
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def key_first(request: Request) -> Response:
            check_api_key(request.app.state.settings, request.headers.get(API_KEY_HEADER))
            if takes_body and not json_content_type(ctype := request.headers.get("content-type")):
                got = "the header is missing" if ctype is None else f"not {quoted(ctype, 60)}"
                raise HTTPException(415, f"Content-Type: the body must be application/json, {got}")
            return await handler(request)

        return key_first


def json_content_type(value: str | None) -> bool:
    """Whether a Content-Type header lets FastAPI read the body as JSON (absent: it does not; FastAPI's
    strict content type answered a 422 "Input should be a valid dictionary" that named no header)."""
    if value is None:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def protected_router(**kwargs: Any) -> APIRouter:
    """A router whose every route needs the key, checked first (``KeyFirstRoute``) and declared in OpenAPI."""
    return APIRouter(route_class=KeyFirstRoute, dependencies=[Security(require_api_key)], **kwargs)


class BodyLimit(HttpMiddleware):
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await _reject(send, 413, f"request body: larger than {self.max_bytes} bytes")
                    return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return msg

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge as e:  # raised outside a route's body parsing (which answers it through the app's handler)
            await _reject(send, 413, e.detail)


class BodyTooLarge(HTTPException):
    """A streamed body passed the limit. An ``HTTPException`` so FastAPI's body parsing re-raises it
    (any other exception there becomes 400 "There was an error parsing the body")."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body: larger than {max_bytes} bytes")


async def _reject(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
