"""Request ids: every response carries ``X-Request-ID``, the client's own if it sent a usable one.

A client quotes it in a support ticket; the server's error log names it beside the route.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from homepage.api.asgi import HttpMiddleware

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode()
_USABLE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # echoed in a header and a log line: nothing else


def request_id(scope: dict[str, Any]) -> str | None:
    """The id ``RequestId`` gave this request (None outside it)."""
    return scope.get("state", {}).get("request_id")


class RequestId(HttpMiddleware):
    """ASGI middleware: take the client's ``X-Request-ID`` if it is short and plain, else draw one; send it back."""

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        rid = next((v for k, v in scope.get("headers", ()) if k == _HEADER), None)
        if rid is None or not _USABLE.fullmatch(rid):
            rid = secrets.token_hex(8).encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def send_with_id(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", ()), (_HEADER, rid)]
            await send(msg)

        await self.app(scope, receive, send_with_id)
