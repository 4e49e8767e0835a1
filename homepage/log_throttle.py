"""Rate limits for log lines that a broken component would repeat on every request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable


class LogThrottle:
    """Lets a message through once per ``period`` seconds per key, and counts the ones held back.

    A plug-in ranker that raises on every request would otherwise write one traceback per page
    (thousands a second under load, or per replayed request); the first one says why, the
    counts (and the metrics) say how often.
    """

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self._state: dict[Hashable, tuple[float, int]] = {}  # key -> (last let through, held back since)
        self._lock = threading.Lock()

    def admit(self, key: Hashable) -> int | None:
        """None to hold this one back; else how many were held back since the last one let through."""
        now = self.clock()
        with self._lock:
            last = self._state.get(key)
            if last is not None and now - last[0] < self.period:
                self._state[key] = (last[0], last[1] + 1)
                return None
            self._state[key] = (now, 0)
            return 0 if last is None else last[1]


class RepeatedWarnings:
    """A logging filter: a logger's warnings pass once per ``period`` seconds per message, the next one counting those held back.

    For uvicorn's ``uvicorn.error``, which warns once per malformed request ("Invalid HTTP request
    received.": a TLS handshake or a scanner on the HTTP port; "Unsupported upgrade request."): any
    peer could write log lines as fast as it opens connections (400 junk connections, 500 lines).
    Other levels pass untouched.
    """

    def __init__(self, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.throttle = LogThrottle(period, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        held = self.throttle.admit(str(record.msg))  # uvicorn's messages are constants: a bounded set of keys
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} (and {held:,} times since the last line; they are logged once a minute)"
        return True
