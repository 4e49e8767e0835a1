"""Ranker discovery through the ``homepage.rankers`` entry-point group.

Built-in rankers register there exactly as third-party ones do (see ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from homepage.errors import HomepageError
from rankers.base import Ranker

GROUP = "homepage.rankers"


class RankerNotFound(HomepageError):
    """A configured ranker is not registered, or its entry point fails to import."""


class RankerSpec(BaseModel):
    """One configured ranker: its registered name and its config."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    config: dict[str, Any] = Field(default_factory=dict)


@cache
def registered() -> dict[str, EntryPoint]:
    """Name -> entry point for every installed ranker (see ``collisions`` for a name registered twice)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


@cache
def collisions() -> dict[str, tuple[str, ...]]:
    """Name -> "distribution (module:Class)" of each installed package registering it, for names two register differently.

    ``registered()`` keeps one of them, and which one follows the order of ``sys.path`` and of
    site-packages' directory listing: a plug-in named like a built-in (or like another plug-in)
    would silently replace it on one machine and never run on another.
    """
    seen: dict[str, dict[str, str]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        seen.setdefault(ep.name, {}).setdefault(ep.value, dist)
    return {name: tuple(f"{dist} ({value})" for value, dist in by.items()) for name, by in seen.items() if len(by) > 1}


def ranker_class(name: str) -> type[Ranker]:
    """The class registered as ``name``; a clear error when missing, broken or registered by two packages."""
    eps = registered()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise RankerNotFound(f"ranker {name!r} is not registered in entry-point group {GROUP!r} (registered: {known})")
    if name in collisions():
        raise RankerNotFound(
            f"ranker {name!r} is registered by more than one installed package: {', '.join(collisions()[name])}; "
            "which one loads would depend on install order: give the plug-in a name of its own (its class's `name` "
            "and its entry point), or uninstall one"
        )
    cls = load_entry_point(eps[name])
    if cls.name != name:
        raise RankerNotFound(
            f"ranker {name!r} ({eps[name].value}) declares name {cls.name!r}: the entry-point name and the class's "
            f"`name` must be equal (rename the entry point in pyproject.toml, or set name = {name!r})"
        )
    return cls


def load_entry_point(ep: EntryPoint) -> type[Ranker]:
    """The ``Ranker`` subclass ``ep`` points at (what ``ep.load()`` gives), with errors naming the file.

    A missing attribute in a module that imports is either a wrong entry-point value or, when
    the module is a namespace package, shadowing: run from a directory holding a folder named
    like the package (a plug-in's project directory, say), Python imports that folder instead
    of the installed package. The error hints at the one that applies.
    """
    where = f"ranker {ep.name!r} ({ep.value})"
    try:
        module = importlib.import_module(ep.module)
    except Exception as e:  # an entry point can fail in any way its module can
        raise RankerNotFound(f"{where} failed to import module {ep.module!r}{_origin(ep.module)}: {type(e).__name__}: {e}") from e
    obj: Any = module
    for part in (ep.attr or "").split("."):
        if not part:
            continue
        try:
            obj = getattr(obj, part)
        except Exception as e:
            if getattr(module, "__file__", None):  # the installed module itself: the entry point names the wrong thing
                hint = f'check the entry point\'s value ("module:Class") in the plug-in\'s pyproject.toml, group {GROUP!r}'
            else:
                hint = f"is it shadowed, e.g. by a directory named like the package in the current directory ({os.getcwd()})?"
            raise RankerNotFound(
                f"{where}: module {ep.module!r} imported from {_module_file(module)} has no attribute {ep.attr!r} "
                f"({type(e).__name__}: {e}); {hint}"
            ) from e
    if not (isinstance(obj, type) and issubclass(obj, Ranker)):
        raise RankerNotFound(f"{where} is not a rankers.base.Ranker subclass (module file: {_module_file(module)})")
    return obj


def _module_file(module: ModuleType) -> str:
    """Where a module came from: its file, or the directories of a namespace package."""
    file = getattr(module, "__file__", None)
    if file:
        return repr(file)
    path = list(getattr(module, "__path__", []) or [])
    return f"{path!r} (a namespace package: a directory without __init__.py)" if path else "an unknown location"


def _origin(module_name: str) -> str:
    """`` (file X)`` for a module that exists but failed to import; empty when there is nothing to name."""
    try:
        spec = importlib.util.find_spec(module_name)
    except Exception:  # noqa: BLE001 - best effort: the import error itself is reported anyway
        return ""
    if spec is None:
        return ""
    if spec.origin and spec.has_location:
        return f" (file {spec.origin!r})"
    locations = list(spec.submodule_search_locations or [])
    return f" (directories {locations!r})" if locations else ""


def build_rankers(specs: list[RankerSpec]) -> list[Ranker]:
    """Instantiate configured rankers (unfitted); fails on the first bad name or config."""
    out: list[Ranker] = []
    for spec in specs:
        cls = ranker_class(spec.name)
        try:
            out.append(cls(spec.config))
        except Exception as e:
            raise RankerNotFound(f"ranker {spec.name!r}: invalid config: {e}") from e
    return out
