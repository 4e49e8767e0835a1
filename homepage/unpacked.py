"""The models directory that several worker processes unpack published bundles into: who may swap a bundle, who reads.

``homepage serve --workers N`` runs N processes on one ``HOMEPAGE_MODELS_DIR``; each unpacks
the active bundle there at a publish. A reader-writer lock on the directory (``flock`` on a
lock file, released when the process dies) lets a bundle directory be replaced only while no
process is loading from it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".unpack.lock"


@contextlib.contextmanager
def models_dir_lock(models_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the models directory's lock: exclusive to replace a bundle directory, shared to load one."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / LOCK_FILE, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
