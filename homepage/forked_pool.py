"""The process pool replay and page-model training fork: workers that die on SIGTERM, as ``Pool.terminate`` needs.

The CLI handles SIGTERM in Python (``cli.sigterm``: clean-up runs, exit 143), and a
forked worker inherits that handler. ``Pool.terminate``, which closing the pool calls, sends each
idle worker SIGTERM while the worker blocks in a semaphore wait; when the kernel delivered the
signal to one of the worker's native threads (OpenBLAS, OpenMP), only a flag was set, the main
thread never woke to act on it, and ``homepage train`` waited for that worker for ever. Workers
start with the default action again: SIGTERM ends them whichever thread receives it.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.pool import Pool


def forked_pool(workers: int) -> Pool:
    """A pool of ``workers`` forked processes (they share the parent's loaded models) that SIGTERM ends."""
    return mp.get_context("fork").Pool(workers, initializer=_default_sigterm)


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
