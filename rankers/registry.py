"""Ranker discovery through the ``homepage.rankers`` entry-point group.

Built-in rankers register there exactly as third-party ones do (see ``pyproject.toml``).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from homepage.errors import HomepageError
from pydantic import BaseModel, ConfigDict, Field

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
    """Name -> entry point for every installed ranker."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def ranker_class(name: str) -> type[Ranker]:
    """The class registered as ``name``; a clear error when missing or broken."""
    eps = registered()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise RankerNotFound(f"ranker {name!r} is not registered in entry-point group {GROUP!r} (registered: {known})")
    try:
        cls = eps[name].load()
    except Exception as e:  # an entry point can fail in any way its module can
        raise RankerNotFound(f"ranker {name!r} ({eps[name].value}) failed to import: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Ranker)):
        raise RankerNotFound(f"ranker {name!r} ({eps[name].value}) is not a rankers.base.Ranker subclass")
    if cls.name != name:
        raise RankerNotFound(f"ranker {name!r} ({eps[name].value}) declares name {cls.name!r}")
    return cls


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
