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


MAX_HEAD_BYTES = 64 * 1024  # request line and headers (or a chunked body's trailers); h11 refuses past its own 16 KB limit
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: 54\r\n\r\n" b'{"detail":"request line and headers over 65536 bytes"}'
)

if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """httptools with TCP_NODELAY and a bound on what is not body: httptools buffers a header (or a
        chunked body's trailer) it has not seen the end of without limit, so one connection sending an
        endless one grew the worker by what it sent. Bytes received count until the parser hands them
        over as body; a chunk or a message completed starts the count again."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            _nodelay(transport)
            self._unparsed = 0
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            self._unparsed += len(data)
            super().data_received(data)
            if self._unparsed > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

        def on_body(self, body: bytes) -> None:
            self._unparsed -= len(body)
            super().on_body(body)

        def on_chunk_complete(self) -> None:
            self._unparsed = 0

        def on_message_complete(self) -> None:
            self._unparsed = 0
            super().on_message_complete()


def http_protocol() -> type:
    """The protocol class uvicorn would pick ("auto": httptools when installed), with TCP_NODELAY."""
    return NoDelayHttpToolsProtocol if HttpToolsProtocol is not None else NoDelayH11Protocol
