"""The base of the API's own ASGI middlewares: HTTP requests go to ``http``, anything else passes through untouched."""

from __future__ import annotations

from typing import Any


class HttpMiddleware:
    """An ASGI middleware that handles HTTP requests (``http``) and lets lifespan and other scopes through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Handle one HTTP request (``scope["type"] == "http"``)."""
        raise NotImplementedError
