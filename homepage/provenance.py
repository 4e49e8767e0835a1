"""What a model bundle was made from, beyond its config: the code, the data's bytes, the environment.

A figure is reproduced from the same code (commit, and whether the tree had uncommitted
changes), the same dataset (the SHA-256 of its tables, not its path or row counts: a dataset
re-ingested or merged into keeps its path), and the same numerical libraries and BLAS kernels
(which move ranked results by several thousandths between CPUs).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# the distributions whose versions can change a bundle's numbers
PACKAGES = ("numpy", "scipy", "pandas", "pyarrow", "lightgbm", "implicit", "numba", "threadpoolctl")
# the files a dataset's contents live in (``homepage.dataset``); manifest.json holds a creation time
DATASET_TABLES = ("events", "titles", "variants", "users", "tag_events")
HERE = Path(__file__).resolve().parent


def _git(where: Path, *args: str) -> str | None:
    """``git ARGS`` run in ``where``; its stdout, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(where: Path = HERE) -> str | None:
    """The commit of the code doing the training, or None outside a git checkout."""
    out = _git(where, "rev-parse", "HEAD")
    return (out.strip() or None) if out is not None else None


def git_dirty(where: Path = HERE) -> bool | None:
    """Whether tracked files differ from that commit (the commit alone does not give the code); None outside git."""
    out = _git(where, "status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def dataset_sha256(path: Path) -> str:
    """One SHA-256 over a dataset's tables (name and bytes of each present), independent of where it lies."""
    h = hashlib.sha256()
    for name in DATASET_TABLES:
        file = Path(path) / f"{name}.parquet"
        if not file.is_file():
            continue
        h.update(f"{name}.parquet\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def environment() -> dict[str, Any]:
    """Python, machine, the numerical packages' versions and the BLAS in use (its kernels differ by CPU)."""
    from threadpoolctl import threadpool_info

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
        "blas": sorted(blas, key=lambda b: tuple(str(v) for v in b.values())),
    }


def run_provenance(dataset: Path) -> dict[str, Any]:
    """What a report's figures came from besides its bundle: the dataset read, the code and the environment."""
    return {
        "dataset": str(Path(dataset).resolve()),
        "dataset_sha256": dataset_sha256(dataset),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "environment": environment(),
    }
