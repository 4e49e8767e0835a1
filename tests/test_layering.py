"""The layering the README states, checked on the source: a new import that breaks it fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("homepage", "rankers", "artwork", "fixtures")


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports stay inside their package)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _area(module: str) -> str:
    """``homepage.replay.run`` -> ``homepage.replay``; ``rankers.base`` -> ``rankers``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "homepage" and len(parts) > 1 else parts[0]


def _our_imports(package: str) -> dict[str, set[str]]:
    """file (relative to the repository) -> the areas of our code it imports."""
    return {
        str(f.relative_to(ROOT)): {_area(m) for m in _imports(f) if m.split(".")[0] in OURS}
        for f in sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    }


def test_only_the_store_imports_redis() -> None:
    found = [
        str(f.relative_to(ROOT))
        for pkg in ("homepage", "rankers", "artwork")
        for f in (ROOT / pkg).rglob("*.py")
        if any(m == "redis" or m.startswith("redis.") for m in _imports(f))
    ]
    assert found and all(f.startswith("homepage/store/") for f in found), found


LOW = {"homepage.domain", "homepage.errors", "homepage.catalog", "homepage.state", "homepage.eventlog", "homepage.replaced_file", "homepage.forked_pool", "homepage.kernel_cache", "homepage.progress_bar"}


@pytest.mark.parametrize(
    ("package", "allowed", "exceptions"),
    [
        ("rankers", LOW | {"rankers"}, {}),
        ("homepage.pagebuilder", LOW | {"rankers", "homepage.pagebuilder", "homepage.config"}, {
            # the page model is trained on pages built and scored by the replay machinery (one code path)
            "homepage/pagebuilder/training.py": {"homepage.page", "homepage.replay"},
        }),
        ("artwork", LOW | {"artwork", "homepage.dataset"}, {
            # the bandit experiments and their simulated logs browse the synthetic world
            "artwork/experiment.py": {"fixtures"},
            "artwork/logs.py": {"fixtures"},
        }),
    ],
)
def test_imports_point_down(package: str, allowed: set[str], exceptions: dict[str, set[str]]) -> None:
    """Rankers, the page builder and the artwork selector import only what lies below them (and the listed exceptions)."""
    wrong = {
        f: sorted(areas - allowed - exceptions.get(f, set()))
        for f, areas in _our_imports(package).items()
        if areas - allowed - exceptions.get(f, set())
    }
    assert wrong == {}
