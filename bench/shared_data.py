"""Where the benchmarks find the public datasets: ``../shared/data`` beside the checkout.

A benchmark that needs one and finds it missing exits with one line naming the folder, where
the data comes from, and the flag that runs it without (a traceback told a user none of that).
"""

from __future__ import annotations

import sys
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SOURCES = {
    "movielens-latest-small": "GroupLens's ml-latest-small.zip from https://grouplens.org/datasets/movielens/, unpacked under this name",
    "open-bandit-dataset-small": "the Open Bandit Dataset's small sample: the obd/ folder of github.com/st-tech/zr-obp",
}


def shared_dataset(name: str, *, script: str, without: str | None = None) -> Path:
    """``../shared/data/<name>``, or exit 2 with a message saying what is missing and what to do."""
    path = SHARED_DATA / name
    if path.is_dir():
        return path
    hint = f"; {without}" if without else ""
    print(f"error: {script} needs {path} ({SOURCES.get(name, 'a public dataset')}){hint}", file=sys.stderr)
    sys.exit(2)
