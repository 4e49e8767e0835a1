"""Output paths given on the command line, checked before any work: a wrong kind of path fails at once, not after minutes of work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console

from homepage.errors import HomepageError


def _first_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def check_output_file(path: Path | None, option: str) -> None:
    """``option``'s value must be a file to write: not a directory, and not under a path that is a file."""
    if path is None:
        return
    if path.is_dir():
        raise HomepageError(f"{option} {path}: is a directory; give the path of a file to write")
    above = _first_existing(path.parent)
    if not above.is_dir():
        raise HomepageError(f"{option} {path}: {above} is not a directory")
    _check_writable(above, path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise HomepageError(f"{option} {path}: exists and cannot be written")


def _check_writable(directory: Path, path: Path, option: str) -> None:
    """Create and remove a file in ``directory``: a path that cannot be written fails now, not after the work."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".homepage-write-check-", dir=directory)
    except OSError as e:
        raise HomepageError(f"{option} {path}: cannot write in {directory} ({e.strerror or e})") from e
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: Path | None, option: str) -> None:
    """``option``'s value must be a directory to write into (new or existing), not a file."""
    if path is None:
        return
    above = _first_existing(path)
    if not above.is_dir():
        raise HomepageError(f"{option} {path}: {above} is a file, not a directory")
    _check_writable(above, path, option)


def check_dataset_out(path: Path, option: str) -> None:
    """``option``'s value must be a writable place for a dataset: new, or a dataset it may replace (never a bundle)."""
    from homepage.dataset import check_replaceable

    check_output_dir(path, option)
    check_replaceable(path)


def table_console() -> Console:
    """A console for result tables: the terminal's width, or 160 columns in logs and pipes (rich would squeeze them to 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)
