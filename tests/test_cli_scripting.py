"""The CLI run from scripts (cron, CI, ``$(...)``, ``jq``): stdout holds the command's result and nothing else.

Progress bars and warnings belong on stderr: ``BUNDLE=$(homepage train ...)`` must capture the
bundle's path alone, with stdout a pipe, not a terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_fixtures import write_small_dataset


def homepage(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``homepage ARGV`` in a child process, stdout and stderr captured through pipes (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HOMEPAGE_", "REDIS_URL"))}
    env.update(HOMEPAGE_EMBEDDED_DIR=str(cwd / "redis"), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "homepage", *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("ds") / "small")


def test_train_prints_only_the_bundle_path_on_stdout(small: Path, tmp_path: Path) -> None:
    res = homepage("train", str(small), "--out", str(tmp_path / "models"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    assert Path(lines[0]).parent == tmp_path / "models" and (Path(lines[0]) / "manifest.json").is_file()
    assert "fit top_n" in res.stderr and "page model: stage data" in res.stderr  # the bars went to stderr


def test_generate_prints_only_its_summary_on_stdout(tmp_path: Path) -> None:
    res = homepage("generate", "--users", "30", "--titles", "20", "--out", str(tmp_path / "world"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [res.stdout.strip()] and res.stdout.startswith(f"{tmp_path / 'world'}: 30 users"), res.stdout
    assert "generating" in res.stderr


WRITE_OVER_THE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from homepage.errors import HomepageError
from homepage.strict_json import write_json

resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # Python ignores SIGXFSZ: writes fail with EFBIG
try:
    write_json(Path(sys.argv[1]), {"rows": list(range(10_000))}, "--json")
except HomepageError as e:
    print(e)
"""


def test_a_json_report_that_fails_mid_write_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    """A full disk (here a file-size limit) while writing ``--json``: the old report stays, no truncated JSON, no temp file."""
    report = tmp_path / "report.json"
    report.write_text('{"previous": true}')
    res = subprocess.run([sys.executable, "-c", WRITE_OVER_THE_SIZE_LIMIT, str(report)], capture_output=True, text=True, timeout=60)
    assert f"--json {report}: cannot write (File too large)" in res.stdout, res
    assert json.loads(report.read_text()) == {"previous": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_disabled_progress_bar_writes_nothing_off_a_terminal() -> None:
    """A disabled bar (publish, eval rankers, ingest --quiet, train) leaves no blank line before a command's one-line error."""
    import io

    from rich.console import Console
    from rich.progress import BarColumn

    from homepage.progress_bar import ProgressBar

    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    for transient in (True, False):
        with ProgressBar(BarColumn(), console=console, disable=True, transient=transient) as bar:
            bar.update(bar.add_task("x", total=3), completed=2)
    assert out.getvalue() == ""
    with ProgressBar(BarColumn(), console=console, transient=False) as bar:  # enabled, it still draws off a terminal
        bar.update(bar.add_task("x", total=3), completed=3)
    assert "━" in out.getvalue()
