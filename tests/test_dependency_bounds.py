"""The lower bounds pyproject.toml declares and the pins of .ci/min-versions.txt (the set they were checked with) agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    return {r.name.lower(): r for r in reqs}


def pins() -> dict[str, tuple[Version, str]]:
    out = {}
    for line in (ROOT / ".ci" / "min-versions.txt").read_text().splitlines():
        spec, _, comment = line.partition("#")
        if spec.strip():
            name, version = spec.strip().split("==")
            out[name.lower()] = (Version(version), comment.strip())
    return out


def test_every_dependency_is_pinned_at_its_lower_bound() -> None:
    """A bound raised (or a dependency added) without its pin, or the reverse, fails here: the oldest set stays checkable."""
    reqs, pinned = declared(), pins()
    assert set(reqs) == set(pinned), (sorted(set(reqs) - set(pinned)), sorted(set(pinned) - set(reqs)))
    for name, req in reqs.items():
        version, comment = pinned[name]
        assert req.specifier.contains(version, prereleases=False), (name, str(req.specifier), version)
        lower = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        assert len(lower) == 1, (name, "no single lower bound", str(req.specifier))
        assert version == lower[0] or comment.startswith("above the bound:"), (name, lower[0], version, "say why in a comment")
