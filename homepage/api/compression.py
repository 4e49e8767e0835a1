"""Response compression for the clients that ask for it, at no cost to the ones that do not."""

from __future__ import annotations

from typing import Any

from starlette.middleware.gzip import GZipMiddleware

from homepage.api.asgi import HttpMiddleware


class GzipWhenAccepted(HttpMiddleware):
    """ASGI middleware: Starlette's gzip for a request whose ``Accept-Encoding`` names gzip; any other goes straight through.

    Starlette's middleware also wraps identity responses (to parse their headers and add
    ``Vary``), which cost 0.1 ms of CPU per request here, a fifth of a cached page's. Both kinds
    of response carry ``Vary: Accept-Encoding``, so no cache hands one to a client asking for the other.
    """

    def __init__(self, app: Any, minimum_size: int, compresslevel: int = 5) -> None:
        super().__init__(app)
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=compresslevel)

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if any(k == b"accept-encoding" and b"gzip" in v.lower() for k, v in scope.get("headers", ())):
            await self.gzip(scope, receive, send)
        else:

            async def send_varying(msg: dict[str, Any]) -> None:
                if msg["type"] == "http.response.start":  # a cache must not hand this copy to a client asking for gzip
                    msg["headers"] = [*msg.get("headers", ()), (b"vary", b"Accept-Encoding")]
                await send(msg)

            await self.app(scope, receive, send_varying)
