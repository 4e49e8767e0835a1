"""HTTP protocol classes for uvicorn that set TCP_NODELAY on every accepted connection.

uvicorn's multi-worker path binds the listening socket without ``IPPROTO_TCP``, so asyncio
never enables TCP_NODELAY on accepted sockets and each keep-alive response waits ~40 ms
for the client's delayed ACK (uvicorn issue #3149). ``homepage serve`` passes one of these
classes as ``http=`` so 1 and N workers behave alike.
"""

from __future__ import annotations

import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def _nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        _nodelay(transport)
        super().connection_made(transport)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn uses h11
    HttpToolsProtocol = None


if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            _nodelay(transport)
            super().connection_made(transport)


def http_protocol() -> type:
    """The protocol class uvicorn would pick ("auto": httptools when installed), with TCP_NODELAY."""
    return NoDelayHttpToolsProtocol if HttpToolsProtocol is not None else NoDelayH11Protocol
