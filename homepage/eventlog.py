"""The event log held in memory as sorted numpy columns, answering "state as of t".

An event at time ``ts`` is visible at ``t`` iff ``ts <= t``. Nothing after ``t`` leaks
into a state: every query slices the sorted arrays at ``searchsorted(ts, t, "right")``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.state import PLAY, RATING, GlobalState, UserState, frozen

DAY = 86_400


@dataclass(frozen=True, eq=False)
class EventLog:
    """Interactions (plays and ratings) sorted two ways: by (user, ts) and by ts."""

    n_titles: int
    # by (user, ts)
    user_ids: np.ndarray  # unique users, sorted
    user_ptr: np.ndarray  # offsets into the by-user arrays, len(user_ids) + 1
    u_title_ids: np.ndarray
    u_title_idx: np.ndarray
    u_ts: np.ndarray
    u_kinds: np.ndarray
    u_stars: np.ndarray
    u_progress: np.ndarray
    # by ts (only events of titles in the catalog)
    t_ts: np.ndarray
    t_title_idx: np.ndarray
    t_region: np.ndarray  # int32 code into ``regions``, -1 unknown
    t_stars: np.ndarray
    t_kinds: np.ndarray
    t_user_pos: np.ndarray  # position of the event's user in ``user_ids``
    t_first: np.ndarray  # bool: the earliest event of its (user, title): what popularity counts (``first_of_pairs``)
    t_first_rating: np.ndarray  # bool: the earliest rating of its (user, title): what the rating sums count
    regions: tuple[str, ...]
    user_region: dict[int, str]
    # stated favourite genres (a profile's, as ``PUT /users`` sets them); like the region, one value per user, not timed
    user_favourites: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    # ---------------------------------------------------------------- build
    @classmethod
    def from_frame(cls, events: pd.DataFrame, catalog: Catalog, users: pd.DataFrame | None = None) -> EventLog:
        """Build from a dataset's events table; impressions are left out of the state."""
        kinds = events["kind"].to_numpy(np.int8)
        keep = (kinds == PLAY) | (kinds == RATING)
        user = events["user_id"].to_numpy(np.int64)[keep]
        tid = events["title_id"].to_numpy(np.int64)[keep]
        ts = events["ts"].to_numpy(np.int64)[keep]
        kinds = kinds[keep]
        stars = _float_col(events, "stars", keep)
        progress = _float_col(events, "progress", keep)
        tidx = catalog.index_of(tid)

        order = np.lexsort((ts, user))
        u_sorted = user[order]
        user_ids, starts = np.unique(u_sorted, return_index=True)
        user_ptr = np.append(starts, u_sorted.size).astype(np.int64)

        region_of: dict[int, str] = {}
        if users is not None and len(users):
            reg = users["region"]
            region_of = {int(u): str(r) for u, r in zip(users["user_id"], reg) if r is not None and r == r}
        favourites: dict[int, tuple[str, ...]] = {}
        if users is not None and len(users) and "favourite_genres" in users.columns:
            favourites = {int(u): tuple(str(g) for g in gs) for u, gs in zip(users["user_id"], users["favourite_genres"]) if _listed(gs)}
        regions = tuple(sorted(set(region_of.values())))
        rcode = {r: i for i, r in enumerate(regions)}
        user_rcode = np.array([rcode.get(region_of.get(int(u), ""), -1) for u in user_ids], dtype=np.int32)

        t_order = np.argsort(ts, kind="stable")
        t_order = t_order[tidx[t_order] >= 0]
        t_user_pos = np.searchsorted(user_ids, user[t_order])
        t_first, t_first_rating = first_of_pairs(t_user_pos, tidx[t_order], kinds[t_order] == RATING, len(catalog))
        return cls(
            n_titles=len(catalog),
            user_ids=frozen(user_ids),
            user_ptr=frozen(user_ptr),
            u_title_ids=frozen(tid[order]),
            u_title_idx=frozen(tidx[order]),
            u_ts=frozen(ts[order]),
            u_kinds=frozen(kinds[order]),
            u_stars=frozen(stars[order]),
            u_progress=frozen(progress[order]),
            t_ts=frozen(ts[t_order]),
            t_title_idx=frozen(tidx[t_order]),
            t_region=frozen(user_rcode[t_user_pos] if user_ids.size else np.zeros(0, np.int32)),
            t_stars=frozen(stars[t_order]),
            t_kinds=frozen(kinds[t_order]),
            t_user_pos=frozen(t_user_pos.astype(np.int64)),
            t_first=frozen(t_first),
            t_first_rating=frozen(t_first_rating),
            regions=regions,
            user_region=region_of,
            user_favourites=favourites,
        )

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self.u_ts.shape[0])

    @property
    def first_ts(self) -> int | None:
        return int(self.t_ts[0]) if self.t_ts.size else None

    @property
    def last_ts(self) -> int | None:
        return int(self.t_ts[-1]) if self.t_ts.size else None

    def quantile_time(self, q: float) -> int:
        """The q-quantile of event times: the default split is ``quantile_time(0.8)``."""
        if not self.t_ts.size:
            raise ValueError("empty event log has no time quantiles")
        return int(np.quantile(self.t_ts, q, method="lower"))

    def user_span(self, user_id: int) -> tuple[int, int]:
        """(start, end) offsets of one user's events in the by-user arrays."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= self.user_ids.size or self.user_ids[pos] != user_id:
            return 0, 0
        return int(self.user_ptr[pos]), int(self.user_ptr[pos + 1])

    def user_state(self, user_id: int, t: int, favourite_genres: tuple[str, ...] | None = None) -> UserState:
        """The user's state as of ``t``; an empty state for unknown users. Favourite genres: the users table's, unless given."""
        a, b = self.user_span(user_id)
        region = self.user_region.get(int(user_id))
        if favourite_genres is None:
            favourite_genres = self.user_favourites.get(int(user_id), ())
        if a == b:
            return UserState.empty(int(user_id), int(t), region, favourite_genres)
        b = a + int(np.searchsorted(self.u_ts[a:b], t, side="right"))
        return UserState(
            user_id=int(user_id),
            as_of=int(t),
            region=region,
            title_ids=self.u_title_ids[a:b],
            title_idx=self.u_title_idx[a:b],
            ts=self.u_ts[a:b],
            kinds=self.u_kinds[a:b],
            stars=self.u_stars[a:b],
            progress=self.u_progress[a:b],
            favourite_genres=favourite_genres,
        )

    def user_states(self, user_ids: Iterable[int], t: int) -> list[UserState]:
        return [self.user_state(int(u), t) for u in user_ids]

    def after(self, user_id: int, t: int, horizon: int | None = None) -> np.ndarray:
        """Catalog indices the user interacted with in ``(t, t + horizon]``: replay targets."""
        a, b = self.user_span(user_id)
        ts = self.u_ts[a:b]
        lo = int(np.searchsorted(ts, t, side="right"))
        hi = b - a if horizon is None else int(np.searchsorted(ts, t + horizon, side="right"))
        idx = self.u_title_idx[a + lo : a + hi]
        return idx[idx >= 0]

    def global_state(self, t: int, half_life: float = 7 * DAY) -> GlobalState:
        """World statistics over every event with ``ts <= t``."""
        n = int(np.searchsorted(self.t_ts, t, side="right"))
        first = self.t_first[:n]
        tidx = self.t_title_idx[:n][first]
        w = np.exp2(-(t - self.t_ts[:n][first]).astype(np.float64) / half_life)
        is_rating = self.t_first_rating[:n]
        rcounts: dict[str, np.ndarray] = {}
        rdecayed: dict[str, np.ndarray] = {}
        if self.regions:
            reg = self.t_region[:n][first]
            ok = reg >= 0
            flat = reg[ok].astype(np.int64) * self.n_titles + tidx[ok]
            size = len(self.regions) * self.n_titles
            c = np.bincount(flat, minlength=size).reshape(len(self.regions), self.n_titles)
            d = np.bincount(flat, weights=w[ok], minlength=size).reshape(len(self.regions), self.n_titles)
            for i, r in enumerate(self.regions):
                rcounts[r] = frozen(c[i])
                rdecayed[r] = frozen(d[i])
        return GlobalState(
            as_of=int(t),
            half_life=float(half_life),
            counts=frozen(np.bincount(tidx, minlength=self.n_titles).astype(np.int64)),
            decayed=frozen(np.bincount(tidx, weights=w, minlength=self.n_titles)),
            rating_sum=frozen(np.bincount(self.t_title_idx[:n][is_rating], weights=self.t_stars[:n][is_rating], minlength=self.n_titles)),
            rating_count=frozen(np.bincount(self.t_title_idx[:n][is_rating], minlength=self.n_titles).astype(np.int64)),
            region_counts=rcounts,
            region_decayed=rdecayed,
            n_users=int(np.count_nonzero(np.bincount(self.t_user_pos[:n], minlength=self.user_ids.size))),
        )

    def advance_global_state(self, base: GlobalState, t: int) -> GlobalState:
        """``base`` (a state at an earlier time) carried forward to ``t``: work in proportion to the
        events in (base.as_of, t], not to the whole log. Counts are exact; decayed sums equal
        ``global_state(t)`` up to float rounding."""
        if t < base.as_of:
            raise ValueError(f"cannot advance a state as of {base.as_of} back to {t}")
        a = int(np.searchsorted(self.t_ts, base.as_of, side="right"))
        b = int(np.searchsorted(self.t_ts, t, side="right"))
        first = self.t_first[a:b]
        tidx = self.t_title_idx[a:b][first]
        w = np.exp2(-(t - self.t_ts[a:b][first]).astype(np.float64) / base.half_life)
        fade = float(np.exp2(-(t - base.as_of) / base.half_life))
        is_rating = self.t_first_rating[a:b]
        rcounts: dict[str, np.ndarray] = {}
        rdecayed: dict[str, np.ndarray] = {}
        if self.regions:
            reg = self.t_region[a:b][first]
            ok = reg >= 0
            flat = reg[ok].astype(np.int64) * self.n_titles + tidx[ok]
            size = len(self.regions) * self.n_titles
            c = np.bincount(flat, minlength=size).reshape(len(self.regions), self.n_titles)
            d = np.bincount(flat, weights=w[ok], minlength=size).reshape(len(self.regions), self.n_titles)
            zeros_i, zeros_f = np.zeros(self.n_titles, np.int64), np.zeros(self.n_titles)
            for i, r in enumerate(self.regions):
                rcounts[r] = frozen(base.region_counts.get(r, zeros_i) + c[i])
                rdecayed[r] = frozen(base.region_decayed.get(r, zeros_f) * fade + d[i])
        return GlobalState(
            as_of=int(t),
            half_life=base.half_life,
            counts=frozen(base.counts + np.bincount(tidx, minlength=self.n_titles)),
            decayed=frozen(base.decayed * fade + np.bincount(tidx, weights=w, minlength=self.n_titles)),
            rating_sum=frozen(base.rating_sum + np.bincount(self.t_title_idx[a:b][is_rating], weights=self.t_stars[a:b][is_rating], minlength=self.n_titles)),
            rating_count=frozen(base.rating_count + np.bincount(self.t_title_idx[a:b][is_rating], minlength=self.n_titles)),
            region_counts=rcounts,
            region_decayed=rdecayed,
            n_users=int(np.searchsorted(self._first_event_ts, t, side="right")),
        )

    @functools.cached_property
    def _first_event_ts(self) -> np.ndarray:
        """Sorted time of each user's first event (how many users exist at t is one search)."""
        _, first = np.unique(self.t_user_pos, return_index=True)  # events are in time order
        return np.sort(self.t_ts[first])

    def interactions(self, until: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user position, title index, ts, stars) of known-title events with ``ts <= until``: fitting input."""
        n = self.t_ts.size if until is None else int(np.searchsorted(self.t_ts, until, side="right"))
        return self.t_user_pos[:n], self.t_title_idx[:n], self.t_ts[:n], self.t_stars[:n]

    def firsts(self, until: int | None = None) -> np.ndarray:
        """Which of ``interactions(until)`` is its (user, title)'s earliest event: what popularity counts (``first_of_pairs``)."""
        n = self.t_ts.size if until is None else int(np.searchsorted(self.t_ts, until, side="right"))
        return self.t_first[:n]


def first_of_pairs(user_pos: np.ndarray, title_idx: np.ndarray, is_rating: np.ndarray, n_titles: int) -> tuple[np.ndarray, np.ndarray]:
    """(earliest event of its (user, title), earliest rating of its (user, title)) per event, for events in time order.

    Popularity counts a viewer once per title: repeated plays, progress heartbeats, resumes,
    rewatches and re-ratings add nothing to the world counters, so one account cannot push a
    title into everyone's "Trending now" or "Top 10" (the store applies the same rule per event).
    Ties in time go to the event first in the log, as they do online to the one that came first.
    """
    key = user_pos.astype(np.int64) * max(int(n_titles), 1) + title_idx.astype(np.int64)
    first = np.zeros(key.shape, bool)
    first[np.unique(key, return_index=True)[1]] = True
    first_rating = np.zeros(key.shape, bool)
    rated = np.flatnonzero(is_rating)
    first_rating[rated[np.unique(key[rated], return_index=True)[1]]] = True
    return first, first_rating


def _float_col(events: pd.DataFrame, name: str, keep: np.ndarray) -> np.ndarray:
    if name not in events.columns:
        return np.full(int(keep.sum()), np.nan, np.float32)
    return events[name].to_numpy(np.float32, na_value=np.nan)[keep]


def _listed(genres: object) -> bool:
    """A non-empty list of genres in a users table cell (None, NaN and empty lists are not)."""
    return genres is not None and not isinstance(genres, float) and len(genres) > 0  # type: ignore[arg-type]
