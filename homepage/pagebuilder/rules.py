"""Business rules, configured declaratively and applied as constraints inside the page loop."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from homepage.errors import HomepageError


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PinRule(_Rule):
    """A ranker's first row, if it has one, is placed within the first ``within`` rows."""

    rule: Literal["pin"] = "pin"
    ranker: str
    within: int = Field(default=2, ge=1, le=50)


class MaxRowsRule(_Rule):
    """At most ``max`` rows from ``ranker`` (``*``: from any single ranker)."""

    rule: Literal["max_rows"] = "max_rows"
    ranker: str = "*"
    max: int = Field(ge=0, le=100)


class MinTitlesRule(_Rule):
    """A row is placed only if at least ``n`` of its titles are still new to the page."""

    rule: Literal["min_titles"] = "min_titles"
    n: int = Field(default=4, ge=1, le=100)


class MinViewportGenresRule(_Rule):
    """At least ``k`` distinct genres among the titles of the viewport rows."""

    rule: Literal["min_viewport_genres"] = "min_viewport_genres"
    k: int = Field(ge=1, le=100)


class MaturityRule(_Rule):
    """Only titles whose maturity rating is in ``allowed`` are shown."""

    rule: Literal["maturity"] = "maturity"
    allowed: tuple[str, ...]
    allow_unrated: bool = True


Rule = Annotated[
    PinRule | MaxRowsRule | MinTitlesRule | MinViewportGenresRule | MaturityRule, Field(discriminator="rule")
]


class PageRules(BaseModel):
    """The page's shape and its business rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    viewport_rows: int = Field(default=4, ge=1, le=50)
    viewport_cols: int = Field(default=6, ge=1, le=100)
    rules: tuple[Rule, ...] = (
        PinRule(ranker="continue_watching", within=2),
        MaxRowsRule(ranker="*", max=5),
        MinTitlesRule(n=4),
    )

    def check(self, rankers: set[str]) -> None:
        """Reject rules that name rankers which are not configured."""
        for i, r in enumerate(self.rules):
            name = getattr(r, "ranker", None)
            if name is not None and name != "*" and name not in rankers:
                known = ", ".join(sorted(rankers))
                raise HomepageError(f"rules[{i}] ({r.rule}): unknown ranker {name!r} (configured: {known})")
            if isinstance(r, PinRule) and r.within > 50:
                raise HomepageError(f"rules[{i}] (pin): within must be <= 50")

    def content_only(self) -> PageRules:
        """The rules that filter titles, without those about rows (for single-list pages)."""
        return self.model_copy(update={"rules": tuple(r for r in self.rules if isinstance(r, MaturityRule))})

    def allowed_titles(self, maturity: tuple[str | None, ...]) -> np.ndarray | None:
        """Catalog mask of titles every maturity rule allows; None when no rule filters."""
        mask: np.ndarray | None = None
        for r in self.rules:
            if isinstance(r, MaturityRule):
                ok = np.array([(m in r.allowed) if m else r.allow_unrated for m in maturity], dtype=bool)
                mask = ok if mask is None else mask & ok
        return mask


def eligible(
    rules: PageRules,
    stage: int,
    ranker_names: list[str],
    row_rankers: np.ndarray,
    n_effective: np.ndarray,
    new_genres: np.ndarray,
    ranker_count: np.ndarray,
    viewport_genre_count: int,
) -> tuple[np.ndarray, str | None]:
    """Which remaining rows may be placed at ``stage``, and the rule forcing the choice if any.

    ``row_rankers`` are codes into ``ranker_names`` (len(ranker_names) = unknown ranker).
    """
    ok = n_effective > 0
    forced: str | None = None
    for r in rules.rules:
        if isinstance(r, MinTitlesRule):
            ok &= n_effective >= r.n
        elif isinstance(r, MaxRowsRule):
            if r.ranker == "*":
                ok &= ranker_count[row_rankers] < r.max
            elif r.ranker in ranker_names:
                code = ranker_names.index(r.ranker)
                ok &= ~((row_rankers == code) & (ranker_count[code] >= r.max))
    for r in rules.rules:
        if isinstance(r, PinRule) and r.ranker in ranker_names and stage == r.within - 1:
            code = ranker_names.index(r.ranker)
            mine = ok & (row_rankers == code)
            if ranker_count[code] == 0 and mine.any():
                return mine, f"pin:{r.ranker}"
        elif isinstance(r, MinViewportGenresRule) and stage < rules.viewport_rows:
            need = r.k - viewport_genre_count
            if need > 0:
                per_stage = math.ceil(need / (rules.viewport_rows - stage))
                better = ok & (new_genres >= per_stage)
                if better.any() and not better.all():
                    ok, forced = better, f"min_viewport_genres:{r.k}"
    return ok, forced
