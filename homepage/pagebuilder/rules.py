"""Business rules, configured declaratively and applied as constraints inside the page loop."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from homepage.errors import HomepageError

if TYPE_CHECKING:
    from homepage.catalog import Catalog
    from homepage.domain import PlacedRow
    from homepage.pagebuilder.candidates import CandidateMatrix

GENRE_BITS = 64  # the page builder's genre sets (``candidates.genre_bits``) hold the first 64 genres


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
    """A row is placed only if at least ``n`` of its titles are still new to the page.

    A pinned ranker's first row (the one the pin places) needs only one: "Continue watching"
    with a single unfinished title is still the row that user expects first. So do all rows
    of the rankers in ``exempt``.
    """

    rule: Literal["min_titles"] = "min_titles"
    n: int = Field(default=4, ge=1, le=100)
    exempt: tuple[str, ...] = Field(default=(), description="rankers whose rows need one new title (pinned rankers always do)")


class MinViewportGenresRule(_Rule):
    """At least ``k`` distinct genres among the titles the viewport shows: the first ``viewport_cols`` of each of the first ``viewport_rows`` rows."""

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
        MaxRowsRule(ranker="*", max=8),
        MinTitlesRule(n=4),
    )

    def check(self, rankers: set[str], stored: bool = False) -> None:
        """Reject rules that name rankers which are not configured.

        ``stored`` (a trained bundle's rules): the contradictions refused since 2026-12-08 are let through, so a
        bundle that served with one (the rule just went unmet) still loads.
        """
        for i, r in enumerate(self.rules):
            name = getattr(r, "ranker", None)
            named = ([name] if name not in (None, "*") else []) + list(getattr(r, "exempt", ()))
            unknown = [n for n in named if n not in rankers]
            if unknown:
                known = ", ".join(sorted(rankers))
                raise HomepageError(f"rules[{i}] ({r.rule}): unknown ranker {unknown[0]!r} (configured: {known})")
            if isinstance(r, PinRule) and r.within > 50:
                raise HomepageError(f"rules[{i}] (pin): within must be <= 50")
            if isinstance(r, MaxRowsRule) and r.ranker == "*" and r.max == 0:
                raise HomepageError(f"rules[{i}] (max_rows): max 0 for every ranker leaves every page empty")
            if isinstance(r, MaturityRule) and not r.allowed and not r.allow_unrated:
                raise HomepageError(f"rules[{i}] (maturity): allows no rating and no unrated title: every page would be empty")
            if isinstance(r, MinViewportGenresRule) and r.k > GENRE_BITS and not stored:
                raise HomepageError(f"rules[{i}] (min_viewport_genres): k {r.k} is more than the {GENRE_BITS} genres the page builder tracks")
        if not stored:
            self._check_pins_can_be_placed()

    def _check_pins_can_be_placed(self) -> None:
        """Reject a ``max_rows`` of 0 for a ranker a ``pin`` places: the two rules contradict each other."""
        pinned = {r.ranker: i for i, r in enumerate(self.rules) if isinstance(r, PinRule)}
        for i, r in enumerate(self.rules):
            if isinstance(r, MaxRowsRule) and r.max == 0 and r.ranker in pinned:
                raise HomepageError(f"rules[{i}] (max_rows): max 0 for {r.ranker!r}, which rules[{pinned[r.ranker]}] (pin) places on every page it has a row for")

    def refusing_only(self) -> PageRules:
        """The rules that only refuse rows (no pins, no viewport-genre forcing), each ranker still held to the same minimum.

        For replaying a logged row order: pins are dropped, so their rankers are named exempt
        from ``min_titles`` instead (all their rows, not only the first: the same for a one-row
        ranker such as continue watching).
        """
        pinned = tuple(r.ranker for r in self.rules if isinstance(r, PinRule))
        kept = tuple(
            r.model_copy(update={"exempt": (*r.exempt, *pinned)}) if isinstance(r, MinTitlesRule) else r
            for r in self.rules
            if isinstance(r, (MaxRowsRule, MinTitlesRule, MaturityRule))
        )
        return self.model_copy(update={"rules": kept})

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


def _min_titles_per_ranker(rules: list[MinTitlesRule], ranker_names: list[str], cols: int | None) -> np.ndarray:
    """New titles a row of each ranker code (last: unknown rankers) must add: the largest ``n`` of the rules not exempting it.

    Each rule's ``exempt`` holds for that rule only (a ranker exempt from one rule is still held to the others);
    a page narrower than ``n`` asks for full rows, not for none; every row adds at least one title.
    """
    need = np.ones(len(ranker_names) + 1, dtype=np.int64)
    for r in rules:
        n = r.n if cols is None else min(r.n, cols)
        held = np.array([name not in r.exempt for name in ranker_names] + [True])
        np.maximum(need, np.where(held, n, 1), out=need)
    return need


class RulePlan:
    """The row rules of a ``PageRules``, resolved once per page against the ranker codes.

    Row-count rules become one limit per ranker code, so a stage's eligibility is a couple
    of vector operations; pins come before viewport-genre rules (each kind in its configured order).
    """

    def __init__(self, rules: PageRules, ranker_names: list[str], cols: int | None = None, rows: int | None = None) -> None:
        self.viewport_rows = rules.viewport_rows
        min_titles: list[MinTitlesRule] = []
        limit = np.full(len(ranker_names) + 1, 2**62, dtype=np.int64)  # no limit; last: unknown rankers
        # ("pin", ranker code, stage, label) or ("genres", k, 0, label): pins, then genre rules, each in configured order
        self.ordered: list[tuple[str, int, int, str]] = []
        for r in rules.rules:
            if isinstance(r, MinTitlesRule):
                min_titles.append(r)
            elif isinstance(r, MaxRowsRule):
                if r.ranker == "*":
                    np.minimum(limit, r.max, out=limit)
                elif r.ranker in ranker_names:
                    code = ranker_names.index(r.ranker)
                    limit[code] = min(limit[code], r.max)
            elif isinstance(r, PinRule) and r.ranker in ranker_names:
                # a page shorter than ``within`` pins the row within its rows: a one-row page asked for
                # by a compact client is the continue-watching row, not a page without it
                last = r.within if rows is None else max(min(r.within, rows), 1)
                self.ordered.append(("pin", ranker_names.index(r.ranker), last - 1, f"pin:{r.ranker}"))
            elif isinstance(r, MinViewportGenresRule):
                self.ordered.append(("genres", r.k, 0, f"min_viewport_genres:{r.k}"))
        self.ordered.sort(key=lambda o: o[0] != "pin")  # pins first, whatever the configured order: a pin is kept, a genre target is a best effort
        self.limit = limit
        self.genre_rules = any(what == "genres" for what, *_ in self.ordered)
        self.n_pins = sum(what == "pin" for what, *_ in self.ordered)
        # per ranker code (last: unknown rankers), for its first row and for the rows after it:
        # a pinned ranker's first row (the one pinned) needs one new title
        self.min_titles_rest = _min_titles_per_ranker(min_titles, ranker_names, cols)
        self.min_titles_first = self.min_titles_rest.copy()
        for what, code, _, _ in self.ordered:
            if what == "pin":
                self.min_titles_first[code] = 1

    def eligible(
        self, stage: int, row_rankers: np.ndarray, n_effective: np.ndarray, new_genres: np.ndarray, ranker_count: np.ndarray, viewport_genre_count: int
    ) -> tuple[np.ndarray, str | None]:
        """Which remaining rows may be placed at ``stage``, and the rule forcing the choice if any.

        ``new_genres`` and ``viewport_genre_count`` count genres among the titles the viewport shows
        (the first ``viewport_cols`` of each of the first ``viewport_rows`` rows).
        """
        need = np.where(ranker_count[row_rankers] == 0, self.min_titles_first[row_rankers], self.min_titles_rest[row_rankers])
        ok = (n_effective >= need) & (ranker_count < self.limit)[row_rankers]
        forced: str | None = None
        for i, (what, a, b, label) in enumerate(self.ordered):
            if what == "pin":
                if ranker_count[a] == 0 and self._due_pin(stage, ok, row_rankers, ranker_count) == i:
                    return ok & (row_rankers == a), label
            elif stage < self.viewport_rows:
                need = a - viewport_genre_count
                if need > 0:
                    per_stage = math.ceil(need / (self.viewport_rows - stage))
                    better = ok & (new_genres >= per_stage)
                    if better.any() and not better.all():
                        ok, forced = better, label
        return ok, forced

    def _due_pin(self, stage: int, ok: np.ndarray, row_rankers: np.ndarray, ranker_count: np.ndarray) -> int | None:
        """The pin (index in ``ordered``) to place now so every pending pin still meets its row, or None.

        Pending: a pinned ranker with no row yet and an eligible row now, at its earliest deadline not yet past.
        When the pins due by some deadline fill every stage left up to it, the earliest due is placed
        (one pin: exactly at its last stage; two pins within 2: the second is not left to row 3).
        """
        first: dict[int, tuple[int, int]] = {}  # ranker code -> (its earliest deadline, index)
        for i, (what, a, b, _) in enumerate(self.ordered):
            # a deadline n_pins or more stages away cannot be due yet: skip the vector test (one pin: only at its stage, as before)
            if what == "pin" and stage <= b < stage + self.n_pins and ranker_count[a] == 0 and (a not in first or b < first[a][0]) and (ok & (row_rankers == a)).any():
                first[a] = (b, i)
        pending = sorted(first.values())
        for j, (b, _) in enumerate(pending):
            if stage + j == b:  # j + 1 pins due by stage b, and b - stage + 1 = j + 1 stages left for them
                return pending[0][1]
        return None


def eligible(
    rules: PageRules,
    stage: int,
    ranker_names: list[str],
    row_rankers: np.ndarray,
    n_effective: np.ndarray,
    new_genres: np.ndarray,
    ranker_count: np.ndarray,
    viewport_genre_count: int,
    cols: int | None = None,
    rows: int | None = None,
) -> tuple[np.ndarray, str | None]:
    """Which remaining rows may be placed at ``stage``, and the rule forcing the choice if any.

    ``row_rankers`` are codes into ``ranker_names`` (len(ranker_names) = unknown ranker).
    The page loop resolves the rules once per page with ``RulePlan``; this is the same check
    for a single stage.
    """
    return RulePlan(rules, ranker_names, cols, rows).eligible(stage, row_rankers, n_effective, new_genres, ranker_count, viewport_genre_count)


def unmet_rules(rules: PageRules, cm: CandidateMatrix, ranker_names: Sequence[str], placed: Sequence[PlacedRow], catalog: Catalog, rows: int) -> list[str]:
    """A note for each pin or ``min_viewport_genres`` rule the built page does not meet (the page's ``notes``)."""
    notes = []
    for i, r in enumerate(rules.rules):
        if isinstance(r, PinRule) and r.ranker in ranker_names:
            note = _unmet_pin(r, cm, ranker_names.index(r.ranker), placed, rows)
        elif isinstance(r, MinViewportGenresRule):
            note = _unmet_genres(r, rules, placed, catalog)
        else:
            continue
        if note:
            notes.append(f"rules[{i}] ({r.rule}) unmet: {note}")
    return notes


def _unmet_pin(r: PinRule, cm: CandidateMatrix, code: int, placed: Sequence[PlacedRow], rows: int) -> str | None:
    """Why the pinned ranker's row is not within its rows although it had a candidate row with a title, or None."""
    last = max(min(r.within, rows), 1)
    at = next((stage for stage, p in enumerate(placed) if p.ranker == r.ranker), None)
    if (at is not None and at < last) or not cm.valid[cm.ranker == code].any():
        return None
    where = "not on the page (no title of its row left new)" if at is None else f"on row {at + 1}"
    return f"{r.ranker} {where}, not within the first {last} rows"


def _unmet_genres(r: MinViewportGenresRule, rules: PageRules, placed: Sequence[PlacedRow], catalog: Catalog) -> str | None:
    """The viewport's genre count when below ``k``, or None."""
    shown = [t for p in placed[: rules.viewport_rows] for t in p.title_ids[: rules.viewport_cols]]
    idx = catalog.index_of(shown)
    n = int(catalog.genre_matrix[idx[idx >= 0]].any(axis=0).sum()) if shown else 0
    return None if n >= r.k else f"{n} genres among the titles the viewport shows ({rules.viewport_rows} x {rules.viewport_cols}), k {r.k}"
