"""The models directory that several worker processes unpack published bundles into: who may swap a bundle, who reads.

``homepage serve --workers N`` runs N processes on one ``HOMEPAGE_MODELS_DIR``; each unpacks
the active bundle there at a publish. A reader-writer lock on the directory (``flock`` on a
lock file, released when the process dies) lets a bundle directory be replaced only while no
process is loading from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from typing import BinaryIO
from pathlib import Path

LOCK_FILE = ".unpack.lock"
PREFIX = "unpacked-"  # a worker unpacks a bundle into PREFIX + its version + its store's tag: never an operator's own directory
MARK = ".unpacked-from-redis"  # written into every bundle directory a worker unpacks, naming its store: the only ones it ever deletes
# what a worker killed mid-write leaves: an unpack's directory (``.<bundle>.tmp-<pid>-<ns>``) or a
# last-good file's temporary copy (``.last-good-<tag>.npz.tmp-<random>.npz``)
LEFTOVER = re.compile(r"^\..+\.tmp-\d+-\d+$|^\.last-good-.+\.npz\.tmp-.+\.npz$")
LEFTOVER_SECONDS = 3600.0  # no unpack nor last-good write takes this long: an older one's writer is gone
log = logging.getLogger(__name__)


@contextlib.contextmanager
def models_dir_lock(models_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the models directory's lock: exclusive to replace a bundle directory, shared to load one.

    Where it cannot be taken (a read-only directory, a file system without ``flock``: some
    NFS, FUSE or CIFS mounts), loads go on without it, as they did before the lock, and one
    warning says so: a directory that cannot be locked is usually one no worker writes to.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    f = _locked(models_dir, exclusive)
    try:
        yield
    finally:
        if f is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()


def _locked(models_dir: Path, exclusive: bool) -> BinaryIO | None:
    """The lock file, locked; None (after one warning per directory) where it cannot be."""
    try:
        f = open(models_dir / LOCK_FILE, "a+b")
    except OSError as e:
        _warn_unlocked(models_dir, e)
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except OSError as e:
        f.close()
        _warn_unlocked(models_dir, e)
        return None
    return f


_warned: set[Path] = set()


def _warn_unlocked(models_dir: Path, error: OSError) -> None:
    if models_dir not in _warned:
        _warned.add(models_dir)
        log.warning("models directory %s cannot be locked (%s): bundles are unpacked and loaded without the lock", models_dir, error)


def store_tag(store_id: str) -> str:
    """A short name of a store (server and key prefix) for file names in a models directory several deployments share."""
    return hashlib.sha256(store_id.encode()).hexdigest()[:12]


def prune_unpacked(models_dir: Path, keep: Path, store_id: str) -> list[str]:
    """Delete the bundle directories store ``store_id`` unpacked under ``models_dir`` other than ``keep`` (the one just put live); their names.

    Each publish unpacks a bundle here and nothing else removed the ones replaced: daily retrains
    filled the disk, and copies of artwork weights of users erased since stayed on it. A worker
    still on another version has it in memory; at a rollback it is unpacked again from Redis.
    Only directories named ``PREFIX...`` and holding ``MARK`` are deleted: the directory may also
    hold an operator's own bundles. An unpack in progress (a ``.``-directory) is left alone, and so
    is what another deployment's workers (another key prefix or Redis) unpacked into the same
    directory: its ``MARK`` names that store. (A deployment put its new bundle live and deleted
    the one the other was serving.) An empty ``MARK`` is from a release before stores were named.
    What a worker killed mid-write left (``LEFTOVER``, untouched for ``LEFTOVER_SECONDS``) goes
    too: nothing else ever finished or removed it, a whole bundle each time.
    """
    gone: list[str] = []
    with models_dir_lock(models_dir, exclusive=True):
        for p in models_dir.iterdir():
            if p.is_dir() and p.name.startswith(PREFIX) and _unpacked_by(p, store_id) and p.resolve() != keep.resolve():
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
            elif _abandoned(p):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                gone.append(p.name)
    return sorted(gone)


def _abandoned(path: Path) -> bool:
    """Whether ``path`` is a temporary copy a worker killed mid-write left behind (not one being written now)."""
    if not LEFTOVER.match(path.name):
        return False
    try:
        return time.time() - path.stat().st_mtime > LEFTOVER_SECONDS
    except OSError:  # gone meanwhile
        return False


def _unpacked_by(bundle_dir: Path, store_id: str) -> bool:
    """Whether a worker of store ``store_id`` (or of a release before stores were named) unpacked ``bundle_dir``."""
    try:
        return (bundle_dir / MARK).read_text() in ("", store_id)
    except (OSError, UnicodeDecodeError):  # no mark: an operator's directory
        return False
