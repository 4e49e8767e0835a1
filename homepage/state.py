"""The state that rankers and the page builder receive: one user's, and the world's, as of t.

Online it is read from Redis (``homepage.store``); offline it is rebuilt from the event
log (``homepage.eventlog``). Both produce these same types. Arrays are read-only, so a
ranker that tries to mutate its input fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import numpy as np

from homepage.domain import EVENT_CODES, EventKind

PLAY = EVENT_CODES[EventKind.PLAY]
RATING = EVENT_CODES[EventKind.RATING]


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a``."""
    v = a.view()
    v.setflags(write=False)
    return v


@dataclass(frozen=True, eq=False)
class UserState:
    """One user's interactions (plays and ratings) up to and including ``as_of``, oldest first."""

    user_id: int
    as_of: int
    region: str | None
    title_ids: np.ndarray  # int64
    title_idx: np.ndarray  # int64 catalog index, -1 when the title is not in the catalog
    ts: np.ndarray  # int64
    kinds: np.ndarray  # int8 event codes
    stars: np.ndarray  # float32, NaN when not a rating
    progress: np.ndarray  # float32, NaN when unknown
    favourite_genres: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.title_ids.shape[0])

    @property
    def is_cold(self) -> bool:
        return len(self) == 0

    @cached_property
    def latest_progress(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(title_idx, progress, ts) of the latest play with known progress per known title."""
        m = (self.kinds == PLAY) & ~np.isnan(self.progress) & (self.title_idx >= 0)
        if not m.any():
            e = np.zeros(0, np.int64)
            return e, np.zeros(0, np.float32), e
        idx, prog, ts = self.title_idx[m], self.progress[m], self.ts[m]
        # last occurrence of each title: reverse, unique keeps first
        r_idx = idx[::-1]
        _, first = np.unique(r_idx, return_index=True)
        keep = np.sort(len(idx) - 1 - first)
        return frozen(idx[keep]), frozen(prog[keep]), frozen(ts[keep])

    @cached_property
    def latest_stars(self) -> tuple[np.ndarray, np.ndarray]:
        """(title_idx, stars) of the latest rating per rated catalog title: the user's current word on it."""
        m = (self.kinds == RATING) & (self.title_idx >= 0)
        r_idx, r_stars = self.title_idx[m][::-1], self.stars[m][::-1]  # latest first
        idx, first = np.unique(r_idx, return_index=True)
        return frozen(idx.astype(np.int64)), frozen(r_stars[first].astype(np.float32))

    @cached_property
    def known_titles(self) -> np.ndarray:
        """Distinct catalog indices the user interacted with, most recently interacted with first."""
        idx = self.title_idx[self.title_idx >= 0]
        if idx.size == 0:
            return frozen(np.zeros(0, np.int64))
        r = idx[::-1]
        _, first = np.unique(r, return_index=True)
        return frozen(r[np.sort(first)])

    @staticmethod
    def empty(user_id: int, as_of: int, region: str | None = None, favourite_genres: tuple[str, ...] = ()) -> UserState:
        z = frozen(np.zeros(0, np.int64))
        f = frozen(np.zeros(0, np.float32))
        return UserState(user_id, as_of, region, z, z, z, frozen(np.zeros(0, np.int8)), f, f, favourite_genres)


@dataclass(frozen=True, eq=False)
class GlobalState:
    """World statistics as of ``as_of`` over plays and ratings, indexed by catalog title index; a user counts once per title."""

    as_of: int
    half_life: float  # seconds, for ``decayed``
    counts: np.ndarray  # int64 users per title (a user counts once: ``eventlog.first_of_pairs``)
    decayed: np.ndarray  # float64 sum of 2^-(age/half_life) of each user's earliest event of the title
    rating_sum: np.ndarray  # float64 of each user's earliest rating of the title
    rating_count: np.ndarray  # int64
    region_counts: Mapping[str, np.ndarray] = field(default_factory=dict)
    region_decayed: Mapping[str, np.ndarray] = field(default_factory=dict)
    n_users: int = 0

    def __post_init__(self) -> None:
        # shared by every request of a world state: read-only, so no ranker can change another's page
        for name in ("counts", "decayed", "rating_sum", "rating_count"):
            a = getattr(self, name)
            if a.flags.writeable:
                object.__setattr__(self, name, frozen(a))
        for name in ("region_counts", "region_decayed"):
            d = getattr(self, name)
            object.__setattr__(self, name, MappingProxyType({k: frozen(v) if v.flags.writeable else v for k, v in d.items()}))

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __reduce__(self) -> tuple[type[GlobalState], tuple[object, ...]]:
        """Picklable (a worker process, a saved state): the region mappings travel as dicts, read-only again when rebuilt."""
        return GlobalState, (
            self.as_of, self.half_life, self.counts, self.decayed, self.rating_sum, self.rating_count,
            dict(self.region_counts), dict(self.region_decayed), self.n_users,
        )
