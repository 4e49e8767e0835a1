"""The replay protocol: which (user, time) requests are replayed and what counts as a hit.

Seeded and temporal. Requests are drawn from the held-out period after the split time
T: for a sampled user, a request time t is one second before one of their held-out
events (the moment they opened the app); the targets are the distinct titles they
played or rated in (t, t + horizon], minus titles they had already seen by t. Users
with no history before t form the cold-start slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from homepage.eventlog import DAY, EventLog


class ReplayProtocol(BaseModel):
    """Parameters of a replay; stamped on every report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split_time: int | None = Field(default=None, description="T; default: the split_quantile of event times")
    split_quantile: float = Field(default=0.8, gt=0.0, lt=1.0)
    horizon_days: float = Field(default=30.0, gt=0.0, description="targets are events in (t, t + horizon]")
    requests_per_user: int = Field(default=3, ge=1, le=1000)
    max_requests: int = Field(default=2000, ge=1)
    seed: int = 0
    rows: int = Field(default=10, ge=1, le=100)
    cols: int = Field(default=10, ge=1, le=100)
    viewport_rows: int = Field(default=4, ge=1)
    viewport_cols: int = Field(default=6, ge=1)
    world_granularity: int = Field(default=3600, ge=1, description="seconds; the global state is taken at t rounded down")

    def resolve_split(self, log: EventLog) -> int:
        return self.split_time if self.split_time is not None else log.quantile_time(self.split_quantile)


@dataclass(frozen=True, eq=False)
class Requests:
    """Sampled requests, in a deterministic order."""

    user_ids: np.ndarray  # int64
    times: np.ndarray  # int64
    targets: tuple[np.ndarray, ...]  # catalog indices per request
    cold: np.ndarray  # bool

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])


def sample_requests(log: EventLog, protocol: ReplayProtocol, until: int | None = None) -> Requests:
    """Requests in (split, until]; targets never reach past ``until`` (default: the end of the log)."""
    split = protocol.resolve_split(log)
    end = until if until is not None else (log.last_ts or split)
    horizon = int(protocol.horizon_days * DAY)
    rng = np.random.default_rng(protocol.seed)
    users, times, targets, cold = [], [], [], []
    for pos, uid in enumerate(log.user_ids):
        a, b = int(log.user_ptr[pos]), int(log.user_ptr[pos + 1])
        ts = log.u_ts[a:b]
        lo, hi = np.searchsorted(ts, [split, end], side="right")
        if hi <= lo:
            continue
        distinct_times = np.unique(ts[lo:hi])
        n = min(protocol.requests_per_user, distinct_times.size)
        picks = np.sort(rng.choice(distinct_times, size=n, replace=False))
        for event_t in picks:
            t = int(event_t) - 1
            seen_end = int(np.searchsorted(ts, t, side="right"))
            stop = int(np.searchsorted(ts, min(t + horizon, end), side="right"))
            tgt = log.u_title_idx[a + seen_end : a + stop]
            seen = log.u_title_idx[a : a + seen_end]
            tgt = np.setdiff1d(tgt[tgt >= 0], seen)
            if tgt.size == 0:
                continue
            users.append(int(uid))
            times.append(t)
            targets.append(tgt)
            cold.append(seen_end == 0)
    order = np.arange(len(users))
    if len(order) > protocol.max_requests:
        order = np.sort(rng.choice(order, size=protocol.max_requests, replace=False))
    return Requests(
        user_ids=np.array(users, dtype=np.int64)[order],
        times=np.array(times, dtype=np.int64)[order],
        targets=tuple(targets[i] for i in order),
        cold=np.array(cold, dtype=bool)[order],
    )
