"""Where numba keeps the compiled kernels: beside the source as usual, else a private directory under the temp dir.

numba refuses to define a ``cache=True`` kernel when it can write neither the source tree's
``__pycache__`` nor ``~/.cache``: in a read-only image run under an arbitrary uid with no home
(Kubernetes' ``readOnlyRootFilesystem`` and ``runAsUser``), every command died at import with
numba's traceback "cannot cache function ...: no locator available". ``NUMBA_CACHE_DIR`` set by
the deployer wins (numba then never gets here).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numba

from homepage.errors import HomepageError

F = TypeVar("F", bound=Callable[..., Any])
CACHE_ENV = "NUMBA_CACHE_DIR"
NO_LOCATOR = "no locator available"


def cached_njit(**options: Any) -> Callable[[F], Any]:
    """``numba.njit(cache=True, **options)``; where numba finds no place to cache, the cache moves to ``private_cache_dir()``."""

    def decorate(func: F) -> Any:
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as e:
            if NO_LOCATOR not in str(e) or os.environ.get(CACHE_ENV):
                raise
        try:
            where = private_cache_dir()
        except OSError as e:  # no writable temporary directory either (a read-only root file system without a /tmp volume)
            raise HomepageError(
                f"numba has nowhere to cache the compiled kernels: not beside the source ({func.__module__}), not in ~/.cache, "
                f"not in a temporary directory ({e.strerror or e}); set NUMBA_CACHE_DIR or TMPDIR to a writable directory"
            ) from None
        use_cache_dir(where)
        return numba.njit(cache=True, **options)(func)

    return decorate


def private_cache_dir(base: Path | None = None) -> Path:
    """``<temp dir>/homepage-numba-<uid>``, made here, this user's only (numba's cache index is a pickle: another user's would run their code).

    A directory of that name not owned by this user, or writable by others, is left alone for a fresh one of its own.
    """
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    path = root / f"homepage-numba-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return Path(tempfile.mkdtemp(prefix="homepage-numba-", dir=root))
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return Path(tempfile.mkdtemp(prefix="homepage-numba-", dir=root))
    return path


def use_cache_dir(path: Path) -> None:
    """Point numba's cache (this process's and the processes it starts: uvicorn's and the pool's workers) at ``path``."""
    from numba.core import config

    os.environ[CACHE_ENV] = str(path)
    config.reload_config()  # numba read its environment at import
