"""A ``--workers N`` worker stops when the ``homepage serve`` process that spawned it is gone.

uvicorn's workers hold the listening socket and outlive a supervisor killed with SIGKILL (an
OOM kill, a stop that timed out into ``kill -9``): they served on with no one to stop or replace
them, and the restarted ``serve`` found its port taken. A worker that sees its parent gone shuts
down gracefully (in-flight requests finish), as on SIGTERM. One worker has no such parent:
``serve`` runs it in its own process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

log = logging.getLogger(__name__)
CHECK_SECONDS = 1.0


async def stop_when_orphaned(every: float = CHECK_SECONDS) -> None:
    """Until cancelled, check that the process that spawned this one lives; once it is gone, SIGTERM this worker.

    Returns at once in a process multiprocessing did not spawn (one worker, the tests' app).
    """
    parent = multiprocessing.parent_process()  # uvicorn's supervisor; its sentinel closes when it dies, whatever the pid
    if parent is None:
        return
    while parent.is_alive():
        await asyncio.sleep(every)
    log.warning("the homepage serve process that started this worker (pid %s) is gone; this worker stops, freeing the port", parent.pid)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown, then the lifespan's clean-up
