"""Bookkeeping for malformed input rows: stop at the first one, or skip and count them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from homepage.errors import HomepageError


@dataclass
class BadRows:
    """Collects malformed rows per file.

    Without ``skip`` the first bad row raises :class:`HomepageError` as
    ``<file>:<line>: <problem>``; with ``skip`` rows are counted and the first few line
    numbers kept for the manifest and the console.
    """

    skip: bool = False
    keep_lines: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    first_lines: dict[str, list[int]] = field(default_factory=dict)
    first_messages: dict[str, str] = field(default_factory=dict)

    def found(self, file: str, lines: np.ndarray | list[int], first_message: str) -> None:
        """Record bad rows of ``file``; ``lines`` ascending, ``first_message`` describes ``lines[0]``."""
        lines = np.asarray(lines, dtype=np.int64)
        if lines.size == 0:
            return
        if not self.skip:
            raise HomepageError(f"{file}:{int(lines[0])}: {first_message}")
        self.counts[file] = self.counts.get(file, 0) + int(lines.size)
        kept = self.first_lines.setdefault(file, [])
        kept.extend(int(x) for x in lines[: max(self.keep_lines - len(kept), 0)])
        self.first_messages.setdefault(file, f"{file}:{int(lines[0])}: {first_message}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, object]:
        """What goes into the manifest's ``extra``."""
        return {
            "total": self.total,
            "by_file": {
                f: {"count": c, "first_lines": self.first_lines.get(f, []), "first": self.first_messages.get(f)}
                for f, c in sorted(self.counts.items())
            },
        }
