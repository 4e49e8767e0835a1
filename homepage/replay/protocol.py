"""The replay protocol: which (user, time) requests are replayed and what counts as a hit.

Seeded and temporal. Requests are drawn from the held-out period after the split time
T: for a sampled user, a request time t is one second before one of their held-out
events (the moment they opened the app); the targets are the distinct titles they
played or rated in (t, t + horizon], minus titles they had already seen by t. Users
with no history before t form the cold-start slice. Titles started and not finished by t
and played again in the window are the request's resumes (``resume_recall``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from homepage.eventlog import DAY, EventLog
from homepage.state import PLAY

# a title counts as started and unfinished when its latest play's progress is in [0.05, 0.9):
# the continue-watching ranker's defaults, fixed here so the metric does not move with its config
RESUME_FROM, RESUME_BELOW = 0.05, 0.9


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
    # per request: titles started and unfinished by t and played again in the window; () without progress data
    resumes: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def take(self, index: np.ndarray) -> Requests:
        """The requests at ``index``, in that order."""
        idx = np.asarray(index, np.int64).tolist()
        return Requests(
            self.user_ids[idx], self.times[idx], tuple(self.targets[i] for i in idx), self.cold[idx],
            tuple(self.resumes[i] for i in idx) if self.resumes else (),
        )


def sample_requests(log: EventLog, protocol: ReplayProtocol, until: int | None = None) -> Requests:
    """Requests in (split, until]; targets never reach past ``until`` (default: the end of the log).

    Per user (in log order) with events in the window, up to ``requests_per_user`` of their
    distinct event times there are drawn; a request is kept if it has a target; then at most
    ``max_requests`` are drawn from those kept. The draws are per user, but finding each
    user's window, each request's target span and whether it has a target is done for all
    users at once, so sampling costs seconds at 25M events.
    """
    split = protocol.resolve_split(log)
    end = until if until is not None else (log.last_ts or split)
    horizon = int(protocol.horizon_days * DAY)
    rng = np.random.default_rng(protocol.seed)
    ptr, ts, titles = log.user_ptr, log.u_ts, log.u_title_idx
    starts = ptr[:-1]
    empty = Requests(np.zeros(0, np.int64), np.zeros(0, np.int64), (), np.zeros(0, bool))
    if ts.size == 0:
        return empty
    # each user's window [lo, hi): events with split < ts <= end (ts is sorted within a user)
    lo = starts + _per_user_count(ts <= split, ptr)
    hi = starts + _per_user_count(ts <= end, ptr)
    mark = np.zeros(ts.size + 1, np.int64)
    np.add.at(mark, lo, 1)
    np.add.at(mark, hi, -1)
    in_window = np.cumsum(mark[:-1]) > 0
    # the first event of each distinct time in a window: where a request at that time - 1 has seen up to
    first_of_time = in_window.copy()
    first_of_time[1:] &= ts[1:] != ts[:-1]
    first_of_time[lo[hi > lo]] = True
    distinct_at = np.flatnonzero(first_of_time)
    n_distinct = _per_user_count(first_of_time, ptr)
    offsets = np.concatenate(([0], np.cumsum(n_distinct)))
    per_user = protocol.requests_per_user
    seen_end_parts, user_parts = [], []
    for pos in np.flatnonzero(n_distinct).tolist():
        d = int(n_distinct[pos])
        picks = np.sort(rng.choice(d, size=min(per_user, d), replace=False))
        seen_end_parts.append(distinct_at[offsets[pos] + picks])
        user_parts.append(np.full(picks.size, pos, np.int64))
    if not seen_end_parts:
        return empty
    seen_end = np.concatenate(seen_end_parts)
    pos = np.concatenate(user_parts)
    times = ts[seen_end] - 1
    stop = _window_stop(ts, ptr, pos, np.minimum(times + horizon, end))
    has_target = _has_unseen_title(titles, ptr, seen_end, stop)
    keep = np.flatnonzero(has_target)
    if keep.size > protocol.max_requests:
        keep = keep[np.sort(rng.choice(keep.size, size=protocol.max_requests, replace=False))]
    targets, resumes = [], []
    with_progress = bool((~np.isnan(log.u_progress)).any())  # MovieLens has none: no resumes
    for i in keep.tolist():
        a, s, e = int(starts[pos[i]]), int(seen_end[i]), int(stop[i])
        tgt = titles[s:e]
        targets.append(np.setdiff1d(tgt[tgt >= 0], titles[a:s]))
        if with_progress:
            resumes.append(_resumed(titles, log.u_kinds, log.u_progress, a, s, e))
    return Requests(
        user_ids=log.user_ids[pos[keep]].astype(np.int64),
        times=times[keep].astype(np.int64),
        targets=tuple(targets),
        cold=seen_end[keep] == starts[pos[keep]],
        resumes=tuple(resumes),
    )


def first_visit_requests(log: EventLog, split: int, horizon_days: float = 30.0, until: int | None = None) -> Requests:
    """One request per user whose first event is in (``split``, ``until``]: one second before it, targets the next ``horizon_days``.

    The first page a new user sees. ``sample_requests`` draws few of them (a request time
    is drawn among a user's events, and only the first has no history before it). Targets
    never reach past ``until`` (default: the end of the log).
    """
    users, times, targets = [], [], []
    horizon = int(horizon_days * DAY)
    end = until if until is not None else (log.last_ts or split)
    for pos, uid in enumerate(log.user_ids.tolist()):
        a, b = int(log.user_ptr[pos]), int(log.user_ptr[pos + 1])
        if a == b or not split < int(log.u_ts[a]) <= end:
            continue
        t = int(log.u_ts[a]) - 1
        e = a + int(np.searchsorted(log.u_ts[a:b], min(t + horizon, end), side="right"))
        tgt = np.unique(log.u_title_idx[a:e])
        if (tgt := tgt[tgt >= 0]).size:
            users.append(uid)
            times.append(t)
            targets.append(tgt)
    return Requests(np.array(users, np.int64), np.array(times, np.int64), tuple(targets), np.ones(len(users), bool))


def with_requests(a: Requests, b: Requests) -> Requests:
    """``a`` then the requests of ``b`` that ``a`` lacks (same user and time).

    Resumes: where one side has them and the other has none (first visits never do), the
    other's requests get empty ones.
    """
    have = set(zip(a.user_ids.tolist(), a.times.tolist()))
    new = b.take(np.array([i for i, key in enumerate(zip(b.user_ids.tolist(), b.times.tolist())) if key not in have], np.int64))
    none = np.zeros(0, np.int64)
    resumes: tuple[np.ndarray, ...] = ()
    if a.resumes or new.resumes:
        resumes = (*(a.resumes or (none,) * len(a)), *(new.resumes or (none,) * len(new)))
    return Requests(
        user_ids=np.concatenate([a.user_ids, new.user_ids]).astype(np.int64),
        times=np.concatenate([a.times, new.times]).astype(np.int64),
        targets=(*a.targets, *new.targets),
        cold=np.concatenate([a.cold, new.cold]).astype(bool),
        resumes=resumes,
    )


def _resumed(titles: np.ndarray, kinds: np.ndarray, progress: np.ndarray, a: int, s: int, e: int) -> np.ndarray:
    """Titles whose latest play before ``s`` stopped in [RESUME_FROM, RESUME_BELOW) and that are played in [s, e)."""
    before = (kinds[a:s] == PLAY) & ~np.isnan(progress[a:s]) & (titles[a:s] >= 0)
    if not before.any():
        return np.zeros(0, np.int64)
    idx, prog = titles[a:s][before][::-1], progress[a:s][before][::-1]
    started, first = np.unique(idx, return_index=True)  # the latest play of each title
    last = prog[first]
    unfinished = started[(last >= RESUME_FROM) & (last < RESUME_BELOW)]
    after = titles[s:e][(kinds[s:e] == PLAY) & (titles[s:e] >= 0)]
    return np.intersect1d(unfinished, after)


def _per_user_count(flags: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """How many of each user's events are flagged (the by-user arrays are split at ``ptr``)."""
    cum = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    return cum[ptr[1:]] - cum[ptr[:-1]]


def _window_stop(ts: np.ndarray, ptr: np.ndarray, pos: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """For each (user position, limit): the index after the user's last event with ts <= limit."""
    user_of = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
    base = int(ts.min()) - 1
    span = int(ts.max()) - base + 1
    if span * (ptr.size - 1) < 2**62:  # one sorted key over (user, ts) for all queries at once
        key = user_of * span + (ts - base)
        return np.searchsorted(key, pos * span + (np.minimum(limit, ts.max()) - base), side="right")
    return np.array([ptr[p] + np.searchsorted(ts[ptr[p] : ptr[p + 1]], q, side="right") for p, q in zip(pos, limit, strict=True)], np.int64)


def _has_unseen_title(titles: np.ndarray, ptr: np.ndarray, seen_end: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Whether events [seen_end, stop) hold a title the user had not seen before ``seen_end``.

    A title is unseen before i iff its first occurrence in the user's history is at or after i,
    so this is a range maximum of first occurrences.
    """
    user_of = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
    known = titles >= 0
    key = np.where(known, user_of * (int(titles.max(initial=0)) + 1) + titles, -1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    run_start = np.concatenate(([True], sorted_key[1:] != sorted_key[:-1]))
    first = np.empty(titles.size + 1, np.int64)
    first[order] = order[np.flatnonzero(run_start)][np.cumsum(run_start) - 1]
    first[:-1][~known] = -1
    first[-1] = -1
    bounds = np.empty(2 * seen_end.size, np.int64)
    bounds[0::2], bounds[1::2] = seen_end, stop
    best = np.maximum.reduceat(first, bounds)[0::2]
    return (stop > seen_end) & (best >= seen_end)
