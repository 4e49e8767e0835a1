"""Benchmarks that read ../shared/data say what is missing when it is, in one line, instead of a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize(
    ("script", "args", "folder", "hint"),
    [
        ("store_publish_read.py", [], "movielens-latest-small", "grouplens.org"),
        ("rankers_speed.py", [], "movielens-latest-small", "--skip-movielens"),
        ("artwork_ope.py", ["--json", "out.json"], "open-bandit-dataset-small", "zr-obp"),
    ],
)
def test_a_benchmark_without_the_shared_data_names_it_and_exits_2(tmp_path: Path, script: str, args: list[str], folder: str, hint: str) -> None:
    checkout = tmp_path / "checkout"  # a checkout with no ../shared beside it, as on a user's machine
    shutil.copytree(BENCH, checkout / "bench")
    res = subprocess.run([sys.executable, str(checkout / "bench" / script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert str(tmp_path / "shared" / "data" / folder) in lines[0] and hint in lines[0], lines[0]
    assert res.stdout == "" and not (tmp_path / "out.json").exists()  # it stopped before measuring anything
