"""Write a file (or a directory) beside its final path, then rename it over that path.

A full disk, a file-size limit or a kill part-way through a write in place leaves a truncated
file that the next reader takes for the real one (a report, a log, a world snapshot). Written
beside it and renamed, the path holds the previous file or the complete new one, never half.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path in ``path``'s directory to write to; renamed over ``path`` when the block succeeds.

    The name is unique (two processes may write the same file at once: the last rename wins
    whole). On any error the temporary file is removed and ``path`` is left as it was.
    ``mode``: mkstemp's 0600 would hide the file from the group that reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def swap_in_dir(tmp: Path, out: Path) -> None:
    """Put the complete directory ``tmp`` (beside ``out``) at ``out`` with renames, deleting the previous ``out`` after.

    ``out`` is never a mix of an old run's files and a new one's; the caller checks first that
    ``out`` is something it may replace.
    """
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from the group that reads it
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
