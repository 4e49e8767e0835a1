"""Compiled kernels where numba can cache beside neither the source nor the home directory (a read-only image, an arbitrary uid)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from homepage.kernel_cache import private_cache_dir

ROOT = Path(__file__).resolve().parents[1]

KERNEL = textwrap.dedent(
    """
    from homepage.kernel_cache import cached_njit

    @cached_njit(nogil=True)
    def double(x):
        return 2 * x
    """
)


def _unwritable_place(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A source directory whose ``__pycache__`` cannot be made (a file holds the name: root too is refused) and an environment with no usable home cache."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "kern.py").write_text(KERNEL)
    (src / "__pycache__").write_text("a file, not a directory")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(HOME=str(blocker), XDG_CACHE_HOME=str(blocker / "cache"), TMPDIR=str(temp),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(src)]))
    return temp, env


def test_a_kernel_compiles_and_caches_with_no_writable_source_tree_nor_home(tmp_path: Path) -> None:
    """numba's "no locator available" at import (every command dead in a read-only container) becomes a cache under TMPDIR."""
    temp, env = _unwritable_place(tmp_path)
    code = "import os, kern; print(kern.double(21)); print(os.environ['NUMBA_CACHE_DIR'])"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    answer, cache = run.stdout.split()
    assert answer == "42"
    assert Path(cache) == temp / f"homepage-numba-{os.getuid()}"
    assert list(Path(cache).rglob("*.nbi")), "the kernel was cached there"
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.split() == ["42", cache]


def test_a_cache_dir_set_by_the_deployer_wins(tmp_path: Path) -> None:
    temp, env = _unwritable_place(tmp_path)
    mine = tmp_path / "mine"
    env["NUMBA_CACHE_DIR"] = str(mine)
    run = subprocess.run([sys.executable, "-c", "import kern; print(kern.double(2))"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "4", run.stderr[-2000:]
    assert list(mine.rglob("*.nbi")) and not list(temp.iterdir())


def test_the_private_dir_is_this_users_only(tmp_path: Path) -> None:
    """numba's cache index is a pickle: a directory of the expected name that others can write is not used."""
    first = private_cache_dir(tmp_path)
    assert first == tmp_path / f"homepage-numba-{os.getuid()}"
    assert stat.S_IMODE(first.stat().st_mode) & 0o077 == 0
    assert private_cache_dir(tmp_path) == first
    first.chmod(0o777)
    other = private_cache_dir(tmp_path)
    assert other != first and other.parent == tmp_path and stat.S_IMODE(other.stat().st_mode) & 0o077 == 0


def test_the_projects_kernels_use_it() -> None:
    """Every ``cache=True`` kernel goes through ``cached_njit`` (a plain ``numba.njit(cache=True)`` dies in a read-only image)."""
    sources = [p for pkg in ("homepage", "rankers", "artwork", "fixtures") for p in (ROOT / pkg).rglob("*.py") if p.name != "kernel_cache.py"]
    assert [str(p.relative_to(ROOT)) for p in sources if "cache=True" in p.read_text()] == []
    assert sum("@cached_njit(" in p.read_text() for p in sources) >= 4


def test_no_writable_temporary_directory_either_is_one_line_naming_the_variables(tmp_path: Path) -> None:
    """A read-only root file system with no /tmp volume: a one-line error (the CLI's) naming what to set, not a traceback from tempfile."""
    _, env = _unwritable_place(tmp_path)
    code = (
        "import tempfile, sys; tempfile.tempdir = sys.argv[1]\n"
        "from homepage.errors import HomepageError\n"
        "try:\n    import kern\nexcept HomepageError as e:\n    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "not-a-dir" / "tmp")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "nowhere to cache the compiled kernels" in run.stdout and "set NUMBA_CACHE_DIR or TMPDIR" in run.stdout
