"""Domain types shared by every package: catalog entries, events, request context, rows and pages.

Everything here is a frozen dataclass or a pydantic model; no package passes a dict
with string keys to another. Ids are integers (MovieLens ids); times are Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

LATEST_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z: the last Unix second a dataset may hold (later ones are milliseconds or garbage)


class EventKind(StrEnum):
    """What a user did. Codes (``EVENT_CODES``) are how kinds are stored in arrays."""

    PLAY = "play"
    RATING = "rating"
    IMPRESSION = "impression"


EVENT_CODES: dict[EventKind, int] = {EventKind.PLAY: 0, EventKind.RATING: 1, EventKind.IMPRESSION: 2}
KIND_BY_CODE: dict[int, EventKind] = {v: k for k, v in EVENT_CODES.items()}


@dataclass(frozen=True, slots=True)
class ArtworkVariant:
    """One image of a title, tagged with what it emphasises."""

    variant_id: str
    title_id: int
    emphasis_genre: str | None = None
    featured_cast: str | None = None
    tone: str = "neutral"
    image_url: str = ""


@dataclass(frozen=True, slots=True)
class Title:
    """A catalog entry."""

    title_id: int
    name: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    cast: tuple[str, ...] = ()
    director: tuple[str, ...] = ()
    maturity: str | None = None
    variants: tuple[ArtworkVariant, ...] = ()


class Event(BaseModel):
    """One event. Fields after ``stars`` are set only for events caused by a served page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: int = Field(ge=0, le=2**62)
    title_id: int = Field(ge=0, le=2**62)
    kind: EventKind
    ts: int = Field(ge=0, le=2**40, description="Unix seconds")
    watch_seconds: float | None = Field(default=None, ge=0, le=10**6)
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    stars: float | None = Field(default=None, ge=0.0, le=10.0)
    page_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    row_id: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
    row_index: int | None = Field(default=None, ge=0, le=1000)
    col_index: int | None = Field(default=None, ge=0, le=1000)
    variant_id: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    propensity: float | None = Field(default=None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _kind_fields(self) -> Event:
        if self.kind == EventKind.RATING and self.stars is None:
            raise ValueError("stars: required for a rating event")
        return self


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the client asked for; device and hour are optional page-builder features."""

    user_id: int
    now: int
    rows: int = 10
    cols: int = 10
    device: str | None = None
    hour: int | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class RowReason:
    """Why a row exists, machine-readable: e.g. the anchor of a "because you watched" row."""

    kind: str
    anchor_title_id: int | None = None
    genre: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class CandidateRow:
    """A ranker's proposal: an ordered list of titles with scores, best first."""

    row_id: str
    ranker: str
    display_title: str
    title_ids: np.ndarray  # int64, ordered best first, no repeats
    scores: np.ndarray  # float32, same length, non-increasing
    reason: RowReason
    row_score: float = 0.0  # the ranker's own confidence in the row as a whole

    def __len__(self) -> int:
        return int(self.title_ids.shape[0])


@dataclass(frozen=True, slots=True)
class PlacedRow:
    """A row placed on a page: the titles kept after de-duplication, with artwork."""

    row_id: str
    ranker: str
    display_title: str
    reason: RowReason
    title_ids: tuple[int, ...]
    scores: tuple[float, ...]
    stage: int
    score: float
    forced_by: str | None = None
    variant_ids: tuple[str, ...] = ()
    propensities: tuple[float, ...] = ()
    features: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A built homepage."""

    page_id: str
    user_id: int
    rows: tuple[PlacedRow, ...]
    policy: str
    model_version: str | None = None
    config_hash: str | None = None
    degraded: bool = False
    generated_at: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def grid(self) -> list[list[int]]:
        """Title ids row by row, as shown."""
        return [list(r.title_ids) for r in self.rows]
