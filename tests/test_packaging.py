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


def test_the_loaders_hints_take_a_string_path() -> None:
    """A notebook writes ``load_dataset("data/mlsmall")``: the loaders take a str (they always did), and say so to a type checker."""
    import typing

    from homepage.bundle import load_bundle, resolve
    from homepage.dataset import dataset_info, load_dataset, read_manifest

    for fn in (load_dataset, dataset_info, read_manifest, load_bundle, resolve):
        hint = typing.get_type_hints(fn)["path"]
        assert str in typing.get_args(hint), f"{fn.__module__}.{fn.__name__}(path: {hint})"
    world = ROOT / "fixtures" / "world-small"
    assert len(load_dataset(str(world), columns=["user_id"]).events) == read_manifest(str(world)).counts["events"] > 0
