"""Output paths given on the command line, checked before any work: a wrong kind of path fails at once, not after minutes of work."""

from __future__ import annotations

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


def check_output_dir(path: Path | None, option: str) -> None:
    """``option``'s value must be a directory to write into (new or existing), not a file."""
    if path is None:
        return
    above = _first_existing(path)
    if not above.is_dir():
        raise HomepageError(f"{option} {path}: {above} is a file, not a directory")


def table_console() -> Console:
    """A console for result tables: the terminal's width, or 160 columns in logs and pipes (rich would squeeze them to 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)
