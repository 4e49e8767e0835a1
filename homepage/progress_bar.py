"""A rich progress bar that is silent when disabled, on every rich release the project supports."""

from __future__ import annotations

from rich.progress import Progress


class ProgressBar(Progress):
    """rich's ``Progress``; disabled, it prints nothing. Before rich 14.3 a disabled bar still printed a
    newline when it stopped off a terminal: a blank line on stderr before a command's one-line error."""

    def stop(self) -> None:
        if not self.disable:
            super().stop()
