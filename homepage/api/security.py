"""API-key check for write and admin endpoints, and bounds on request bodies.

The key comes from ``HOMEPAGE_API_KEY`` and is compared in constant time; it is never
logged or echoed. With no key configured, writes are refused unless the development
flag ``HOMEPAGE_DEV=1`` says otherwise.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from homepage.api.settings import ServeSettings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required by write and admin endpoints")


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


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
