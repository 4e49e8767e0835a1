"""Erasure requests (``DELETE /users/{id}``) applied to a dataset's tables.

Redis forgets an erased user at once, but datasets are files: a later publish from a dataset
that still holds the user's events would bring them back. The store records each erasure's
time; publish and ``merge-events`` drop the user's events from before that time, and their
users-table row (region, created) when it was created before it. Events after the erasure are
the user's new activity and stay. Pure: frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Erased:
    """A dataset's tables without what erasures cover, and how many rows went."""

    events: pd.DataFrame
    users: pd.DataFrame
    events_dropped: int
    users_dropped: int


def drop_erased(events: pd.DataFrame, users: pd.DataFrame, erasures: Mapping[int, int]) -> Erased:
    """Drop each erased user's events with ``ts <=`` their erasure time, and their users row created by then."""
    if not erasures:
        return Erased(events, users, 0, 0)
    ids = np.fromiter(erasures.keys(), np.int64, len(erasures))
    times = np.fromiter(erasures.values(), np.int64, len(erasures))
    order = np.argsort(ids)
    ids, times = ids[order], times[order]

    def covered(user_ids: pd.Series, ts: pd.Series) -> np.ndarray:
        u = user_ids.to_numpy(np.int64)
        pos = np.clip(np.searchsorted(ids, u), 0, len(ids) - 1)
        return (ids[pos] == u) & (ts.to_numpy(np.int64) <= times[pos])

    ev_drop = covered(events["user_id"], events["ts"]) if len(events) else np.zeros(0, bool)
    us_drop = covered(users["user_id"], users["created"].fillna(0)) if len(users) else np.zeros(0, bool)
    if not ev_drop.any() and not us_drop.any():
        return Erased(events, users, 0, 0)
    return Erased(
        events[~ev_drop].reset_index(drop=True),
        users[~us_drop].reset_index(drop=True),
        int(ev_drop.sum()),
        int(us_drop.sum()),
    )
