"""What an install ships besides the code: the PEP 561 marker, so a user's type checker reads the package's hints."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_installed_package_is_marked_typed() -> None:
    """Without ``py.typed`` mypy skips an installed package ("missing library stubs or py.typed marker")."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [p.rstrip("*") for p in tool["packages"]["find"]["include"]]
    assert packages
    for package in packages:
        assert (ROOT / package / "py.typed").is_file(), f"{package}/py.typed missing"
        assert "py.typed" in tool.get("package-data", {}).get(package, []), f"pyproject.toml: package-data does not ship {package}/py.typed"
