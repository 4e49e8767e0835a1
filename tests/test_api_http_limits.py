"""The HTTP protocol ``homepage serve`` runs (``homepage.api.nodelay.http_protocol``) bounds a request's head.

httptools buffers a header it has not seen the end of without limit: one connection sending an
endless header grew the worker's memory by what it sent. A real uvicorn server on a free port,
raw sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from redis_fixtures import free_port

from homepage.api.nodelay import MAX_HEAD_BYTES, http_protocol


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app: answers 200 with the body's length."""
    if scope["type"] != "http":
        return
    n, more = 0, True
    while more:
        msg = await receive()
        n += len(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = str(n).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    p = free_port()
    server = uvicorn.Server(uvicorn.Config(echo_length, host="127.0.0.1", port=p, http=http_protocol(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield p
    server.should_exit = True
    thread.join(timeout=10)


def exchange(port: int, *chunks: bytes, reads: int = 1) -> list[bytes]:
    """Send ``chunks`` on one connection; return the responses read (until ``reads`` of them or the close)."""
    out: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for c in chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        buf = b""
        while len(out) < reads:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                break
            buf += data
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = int(next((ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")), b"0"))
                if len(rest) < length:
                    break
                out.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
        if len(out) < reads:
            s.settimeout(2)
            try:
                out.append(b"closed" if s.recv(1) == b"" else b"open")
            except (TimeoutError, ConnectionResetError):
                out.append(b"closed")
    return out


def test_an_endless_header_gets_431_and_the_connection_closes(port: int) -> None:
    head = b"GET / HTTP/1.1\r\nhost: x\r\nx-a: "
    filler = [b"a" * 16384] * (3 * MAX_HEAD_BYTES // 16384)  # never ends its line
    got = exchange(port, head, *filler, reads=1)
    assert got[0].startswith(b"HTTP/1.1 431 ") and b"over 65536 bytes" in got[0], got[0][:200]


def test_headers_under_the_bound_and_a_large_body_are_served(port: int) -> None:
    big_header = b"x-a: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    body = b"b" * (4 * MAX_HEAD_BYTES)  # the body is not the head: not counted
    req = b"POST / HTTP/1.1\r\nhost: x\r\n" + big_header + b"content-length: %d\r\n\r\n" % len(body) + body
    # keep-alive: three such requests on one connection, each counted from its own start
    got = exchange(port, req, req, req, reads=3)
    assert [r.split(b"\r\n", 1)[0] for r in got] == [b"HTTP/1.1 200 OK"] * 3, got
    assert all(r.endswith(str(len(body)).encode()) for r in got)


def test_an_endless_trailer_after_a_chunked_body_gets_431_too(port: int) -> None:
    """Trailers follow the last chunk and were never counted: 40 MB of one unfinished trailer grew the worker by 40 MB."""
    head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\nx-t: "
    got = exchange(port, head, *[b"t" * 16384] * (3 * MAX_HEAD_BYTES // 16384), reads=1)
    assert got[0].startswith(b"HTTP/1.1 431 "), got[0][:200]


def test_a_chunked_body_of_many_chunks_is_served(port: int) -> None:
    """Chunk framing is not the head: a body sent as many small chunks, well past the bound in all, is served."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (10, b"c" * 10) for _ in range(20_000))  # 200 KB of body, 100 KB of framing
    req = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\nx-t: done\r\n\r\n"
    got = exchange(port, req, req, reads=2)
    assert [r.split(b"\r\n", 1)[0] for r in got] == [b"HTTP/1.1 200 OK"] * 2 and all(r.endswith(b"200000") for r in got), got
