"""The process pool replay and page-model training fork: a pool that SIGTERM can close without hanging.

The CLI handles SIGTERM in Python (``cli.sigterm``: clean-up runs, exit 143), and closing a pool
on the way out (``Pool.terminate``) hung in two ways, both seen on 2026-12-07:

- a forked worker inherited that handler. ``Pool.terminate`` sends each worker SIGTERM; when the
  kernel delivered it to one of the worker's native threads (OpenBLAS, OpenMP) while its main
  thread slept in a semaphore wait, only a flag was set and the worker lived on. Workers start
  with the default action again: SIGTERM ends them whichever thread receives it.
- a worker killed while it sent a large result (stage data: megabytes) left part of a message in
  the results pipe; the pool's result thread waited for the rest, and ``terminate`` joined it for
  ever. Once the workers are dead and the stop messages written, this pool closes its own end of that pipe: the thread reads
  end-of-file and stops.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import wait
from multiprocessing.pool import Pool
from typing import Any


class _ForkedPool(Pool):
    """``Pool`` whose termination ends the result thread once every worker is dead."""

    @classmethod
    def _terminate_pool(  # type: ignore[override]
        cls, taskqueue: Any, inqueue: Any, outqueue: Any, pool: list[Any], change_notifier: Any, worker_handler: threading.Thread,
        task_handler: threading.Thread, *rest: Any,
    ) -> None:
        stop_sent = threading.Event()
        writers_done = (worker_handler, task_handler)
        ender = threading.Thread(target=_end_results_when_workers_gone, args=(outqueue, pool, writers_done, stop_sent), daemon=True)
        try:
            ender.start()
        except RuntimeError:  # at interpreter shutdown (a pool never closed): no new threads, the plain termination
            pass
        queue = _StopSentinelWatch(outqueue, stop_sent)
        super()._terminate_pool(taskqueue, inqueue, queue, pool, change_notifier, worker_handler, task_handler, *rest)


class _StopSentinelWatch:
    """The results queue as ``Pool._terminate_pool`` sees it: tells when its stop message (``put(None)``) is written.

    Workers often exit of their own before that write (the task thread's stop messages reach idle
    ones), and the pipe closed under it made ``Pool.terminate`` raise ``OSError: handle is closed``.
    """

    def __init__(self, queue: Any, sent: threading.Event) -> None:
        self._queue = queue
        self._sent = sent

    def put(self, obj: Any) -> None:
        try:
            self._queue.put(obj)
        finally:
            self._sent.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def _end_results_when_workers_gone(outqueue: Any, pool: list[Any], writers: tuple[threading.Thread, ...], stop_sent: threading.Event) -> None:
    """Close the parent's write end of the results pipe once nothing writes to it any more (a result half sent stays half).

    Its writers: the workers, the task thread (its stop message to the result thread) and the
    terminating thread (``stop_sent``). The worker thread first: until it has stopped, it may replace a dead worker.
    """
    for thread in writers:
        thread.join()
    pending = [p.sentinel for p in pool]  # each ready once its process has ended; nothing is reaped here
    while pending:
        ready = wait(pending)
        pending = [s for s in pending if s not in ready]
    stop_sent.wait()
    outqueue._writer.close()


def forked_pool(workers: int) -> Pool:
    """A pool of ``workers`` forked processes (they share the parent's loaded models) that SIGTERM can close."""
    ctx = mp.get_context("fork")
    return _ForkedPool(workers, initializer=_default_sigterm, context=ctx)


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
