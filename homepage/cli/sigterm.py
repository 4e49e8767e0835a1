"""SIGTERM as exit 143 through clean-up code, for commands that write temporary outputs (train, replay, publish).

Python runs a signal handler wherever the main thread happens to be, and some places drop what the
handler raises: a ctypes callback prints it and goes on (threadpoolctl listing the loaded
libraries, which implicit and the rankers do on every fit), C code that calls Python and clears the
error (``PyDict_GetItem`` around a key's ``__eq__``), a library's bare ``except``. Once seen in CI:
``homepage train`` got SIGTERM, ran on for 25 s and exited 0. So the first SIGTERM also starts a
thread that sends it again every ``RESEND_SECONDS`` until the command ends; a resent signal that
finds the first one's clean-up running (a ``Terminated`` being handled) lets it finish.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

RESEND_SECONDS = 1.0
REDELIVER_SECONDS = 0.01  # after a dropped exception was reported: sent from inside the hook, it would be dropped there again


class Terminated(SystemExit):
    """``SystemExit(128 + signum)`` raised by the SIGTERM handler."""


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as ``SystemExit(143)``: clean-up code runs (temporary outputs removed) instead of the process just dying."""
    raise Terminated(128 + signum)


def handling_terminated() -> bool:
    """Whether the code now running handles a ``Terminated``: an ``except``/``finally`` block or ``__exit__`` on its way out."""
    exc = sys.exc_info()[1]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # an error raised during clean-up has the Terminated as its context
        if isinstance(exc, Terminated):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


class _Resender:
    """Sends the first SIGTERM again until stopped, at once when told the exception was dropped."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.stopped = threading.Event()
        self.dropped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sigterm-resend", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            if self.dropped.wait(RESEND_SECONDS):
                self.dropped.clear()
                time.sleep(REDELIVER_SECONDS)
            if not self.stopped.is_set():
                os.kill(os.getpid(), self.signum)

    def stop(self) -> None:
        self.stopped.set()
        self.dropped.set()
        self.thread.join()  # before the caller restores the default action, which a late resend would meet


def install_sigterm_exit() -> Callable[[], None]:
    """Make SIGTERM exit with 143 through clean-up code, in the main thread; returns what undoes it (call it last)."""
    resender: list[_Resender] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if resender and handling_terminated():
            return  # the first one's clean-up is running: let it finish
        if not resender:
            resender.append(_Resender(signum))
        raise Terminated(128 + signum)

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    # a blocked signal mask survives exec: a parent that blocked SIGTERM would make the handler deaf
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    previous_hook = sys.unraisablehook

    def quiet_and_resend(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Terminated):
            if resender:
                resender[0].dropped.set()
            return
        previous_hook(unraisable)

    sys.unraisablehook = quiet_and_resend

    def restore() -> None:
        if resender:
            resender[0].stop()
        signal.signal(signal.SIGTERM, previous_handler)
        sys.unraisablehook = previous_hook

    return restore
