"""The README and docs/ against the code: links and anchors resolve, named settings are read, shown flags exist.

Cheap checks of what drifts as the code changes under the prose; each failure names the file and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import typer

from homepage.api.routes_viewer import ViewerSettings
from homepage.api.settings import ServeSettings
from homepage.cli import _register, app
from homepage.log_setup import LogSettings
from homepage.settings import OTHER_VARIABLES, Settings, variables_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "new_releases_ranker" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
END = re.compile(r"[`|;#]|&&")  # where a shown command ends: code span, pipe, comment, next command
GROUPS = ("artwork", "config", "dataset", "ingest", "eval", "logs")


def lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), 1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    in_code = False
    for _, line in lines(path):
        in_code ^= line.startswith("```")
        if not in_code and (m := re.match(r"#{1,6}\s+(.*)", line)):
            s = slug(m.group(1))
            seen[s] = seen.get(s, -1) + 1
    return frozenset(s if n == 0 else f"{s}-{k}" for s, n in seen.items() for k in range(n + 1))


def test_links_and_anchors_resolve() -> None:
    bad = []
    for doc in DOCS:
        for n, line in lines(doc):
            for link in LINK.findall(line):
                if re.match(r"[a-z]+:", link):
                    continue
                path, _, frag = link.partition("#")
                target = (doc.parent / path).resolve() if path else doc
                if not target.exists():
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: {link}: no such file")
                elif frag and target.suffix == ".md" and frag not in anchors(target):
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: {link}: no heading #{frag} in {target.name}")
    assert not bad, "\n".join(bad)


def test_every_homepage_variable_named_is_read() -> None:
    known = variables_of(Settings) | variables_of(ServeSettings) | variables_of(ViewerSettings) | variables_of(LogSettings) | OTHER_VARIABLES
    bad = []
    for doc in DOCS:
        for n, line in lines(doc):
            for name in re.findall(r"\bHOMEPAGE_[A-Z0-9_]*[A-Z0-9]\b", line):
                # the README quotes the misspelling the warning catches, and names families by prefix
                if name not in known and name != "HOMEPAGE_DEADLINE" and not any(k.startswith(name + "_") for k in known):
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: {name} is read by no setting")
    assert not bad, "\n".join(bad)


@cache
def command_options(words: tuple[str, ...]) -> frozenset[str] | None:
    """The options of ``homepage WORDS...``, or None when there is no such command."""
    _register()
    cmd = typer.main.get_command(app)
    for w in words:
        sub = getattr(cmd, "commands", {}).get(w)  # typer vendors click: no isinstance against click's Group
        if sub is None:
            return None
        cmd = sub
    return frozenset({"--help"}).union(o for p in cmd.params for o in (*p.opts, *p.secondary_opts))


def test_every_flag_shown_for_a_command_exists() -> None:
    """``homepage CMD ... --flag`` in the prose and code blocks, continuation lines included."""
    assert {"--until", "--out"} <= (command_options(("train",)) or set()) and command_options(("logs", "export")) == {"--out", "--help"}
    bad = []
    for doc in DOCS:
        pending: tuple[str, ...] | None = None
        for n, line in lines(doc):
            uses = []
            if pending is not None:
                uses.append((pending, END.split(line)[0]))
            for m in re.finditer(r"homepage ((?:%s) [a-z-]+|[a-z][a-z-]*)" % "|".join(GROUPS), line):
                rest = END.split(line[m.end() :])[0]
                uses.append((tuple(m.group(1).split()), rest))
            pending = None
            for words, text in uses:
                options = command_options(words)
                if options is None:
                    continue
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text):
                    if flag not in options:
                        bad.append(f"{doc.relative_to(ROOT)}:{n}: homepage {' '.join(words)} has no option {flag}")
                if text.rstrip().endswith("\\"):
                    pending = words
    assert not bad, "\n".join(bad)


def test_every_command_shown_exists() -> None:
    bad = []
    for doc in DOCS:
        for n, line in lines(doc):
            for m in re.finditer(r"`homepage ((?:%s) [a-z-]+|[a-z][a-z-]*)" % "|".join(GROUPS), line):
                if command_options(tuple(m.group(1).split())) is None:
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: no command homepage {m.group(1)}")
    assert not bad, "\n".join(bad)



def test_every_benchmark_shown_exists_with_its_flags() -> None:
    """``python bench/NAME.py --flag``: the script exists and declares the flag (argparse, read as text: no imports)."""
    bad = []
    for doc in DOCS:
        for n, line in lines(doc):
            for m in re.finditer(r"bench/([a-z_]+)\.py", line):
                script = ROOT / "bench" / f"{m.group(1)}.py"
                if not script.is_file():
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: no {script.relative_to(ROOT)}")
                    continue
                source = script.read_text(encoding="utf-8")
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", END.split(line[m.end() :])[0]):
                    if f'"{flag}"' not in source:
                        bad.append(f"{doc.relative_to(ROOT)}:{n}: {script.relative_to(ROOT)} has no option {flag}")
    assert not bad, "\n".join(bad)


def test_ci_runs_the_readmes_test_command() -> None:
    """``.ci/run`` is the README's second command (``-q`` on pip aside): an install step or pytest flag changed in one only fails here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    shown = next(line for line in readme if line.endswith("# the whole test suite")).rsplit("#", 1)[0].strip()
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line.startswith("python3 -m pip")]
    assert [c.replace("pip install -q ", "pip install ") for c in ci] == [shown], (ci, shown)
