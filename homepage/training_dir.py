"""The hidden directory a training writes its bundle into before renaming it into place, and what a killed training left there.

A training killed outright (an OOM kill, a Kubernetes Job's deadline, a drained node: SIGKILL,
which no clean-up code sees) left its ``.<version>.tmp-*`` directory, a whole bundle's worth
(gigabytes at 25M events), and each retry of the Job could leave another: nothing removed them.
The directory is ``flock``ed while it is written (the lock goes with the process and with the
pool workers it forked), so the next training into the same models directory removes those whose
lock it can take: never one still being written, however long it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LEFTOVER = re.compile(r"^\.v[^/]+\.tmp-[A-Za-z0-9_]+$")  # tempfile.mkdtemp(prefix=".<version>.tmp-")
MIN_AGE_SECONDS = 60.0  # a directory this new may be one a training made and has not locked yet


@contextlib.contextmanager
def training_dir(out: Path, version: str) -> Iterator[Path]:
    """A new hidden directory under ``out`` for bundle ``version``, locked for as long as the block runs (and the process lives)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=out))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: then no training can take it either
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
    finally:
        os.close(fd)


def remove_abandoned(out: Path) -> list[str]:
    """Delete the directories under ``out`` that trainings killed mid-write left (no live process holds their lock); their names."""
    gone: list[str] = []
    if not out.is_dir():
        return gone
    for path in sorted(out.iterdir()):
        if LEFTOVER.match(path.name) and _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path.name)
    return gone


def _abandoned(path: Path) -> bool:
    """Whether ``path`` is an unlocked training directory at least ``MIN_AGE_SECONDS`` old (its lock is taken and let go at once)."""
    try:
        if path.is_symlink() or not path.is_dir() or time.time() - path.stat().st_mtime < MIN_AGE_SECONDS:
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to read
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a training is writing it (or the file system cannot tell: left alone)
        return False
    finally:
        os.close(fd)
    return True
