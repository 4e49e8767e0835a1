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
        if any(k == b"accept-encoding" and accepts_gzip(v) for k, v in scope.get("headers", ())):
            await self.gzip(scope, receive, send)
        else:

            async def send_varying(msg: dict[str, Any]) -> None:
                if msg["type"] == "http.response.start":  # a cache must not hand this copy to a client asking for gzip
                    msg["headers"] = [*msg.get("headers", ()), (b"vary", b"Accept-Encoding")]
                await send(msg)

            await self.app(scope, receive, send_varying)


def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether an ``Accept-Encoding`` value names gzip with a q above 0 (RFC 9110).

    A substring test gave gzip to ``gzip;q=0`` (gzip refused) and to ``identity, notgzip``.
    (``*`` alone is not taken as gzip: Starlette's middleware compresses only for a named gzip.)
    """
    best = 0.0
    for item in accept_encoding.decode("latin-1").lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() not in ("gzip", "x-gzip"):
            continue
        q = 1.0
        for p in params.split(";"):
            key, _, value = p.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best > 0
