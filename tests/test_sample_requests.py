"""The vectorised request sampler draws exactly the requests of a plain per-user, per-request
reference (same users, times, targets, cold flags, in the same order), on random logs with ties,
repeats and unknown titles, and on the committed world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.eventlog import DAY, EventLog
from homepage.replay.protocol import ReplayProtocol, Requests, first_visit_requests, sample_requests, with_requests

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


def reference(log: EventLog, protocol: ReplayProtocol, until: int | None = None) -> Requests:
    """One user and one drawn time at a time, with searchsorted and setdiff1d."""
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
        for event_t in np.sort(rng.choice(distinct_times, size=n, replace=False)):
            t = int(event_t) - 1
            seen_end = int(np.searchsorted(ts, t, side="right"))
            stop = int(np.searchsorted(ts, min(t + horizon, end), side="right"))
            tgt = log.u_title_idx[a + seen_end : a + stop]
            tgt = np.setdiff1d(tgt[tgt >= 0], log.u_title_idx[a : a + seen_end])
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
        np.array(users, dtype=np.int64)[order], np.array(times, dtype=np.int64)[order], tuple(targets[i] for i in order), np.array(cold, dtype=bool)[order]
    )


def assert_same(got: Requests, want: Requests) -> None:
    assert np.array_equal(got.user_ids, want.user_ids)
    assert np.array_equal(got.times, want.times)
    assert np.array_equal(got.cold, want.cold)
    assert len(got.targets) == len(want.targets)
    for g, w in zip(got.targets, want.targets, strict=True):
        assert np.array_equal(g, w)


CATALOG = Catalog.from_frames(pd.DataFrame({"title_id": range(1, 7), "name": [f"t{i}" for i in range(1, 7)], "year": 2000, "genres": "Drama"}))
event = st.tuples(st.integers(1, 6), st.integers(1, 8), st.sampled_from([0, 1]), st.integers(0, 60))  # title 7-8: not in the catalog


@settings(max_examples=150, deadline=None)
@given(
    st.lists(event, max_size=80),
    st.integers(-1, 60),
    st.integers(0, 70),
    st.integers(1, 4),
    st.integers(1, 12),
    st.floats(0.00002, 0.0004),
    st.integers(0, 3),
)
def test_equals_the_reference_on_random_logs(events: list, split: int, end: int, per_user: int, max_requests: int, horizon_days: float, seed: int) -> None:
    frame = pd.DataFrame(events, columns=["user_id", "title_id", "kind", "ts"]) if events else pd.DataFrame({"user_id": [], "title_id": [], "kind": [], "ts": []})
    frame = frame.astype({"user_id": np.int64, "title_id": np.int64, "kind": np.int8, "ts": np.int64})
    frame["stars"], frame["progress"] = 3.0, np.nan
    log = EventLog.from_frame(frame, CATALOG, None)
    protocol = ReplayProtocol(split_time=split, requests_per_user=per_user, max_requests=max_requests, horizon_days=horizon_days, seed=seed)
    assert_same(sample_requests(log, protocol, until=end), reference(log, protocol, until=end))
    assert_same(sample_requests(log, protocol), reference(log, protocol))


def test_equals_the_reference_on_the_committed_world() -> None:
    ds = load_dataset(WORLD, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    log = EventLog.from_frame(ds.events, Catalog.from_frames(ds.titles, ds.variants), ds.users)
    for protocol, until in ((ReplayProtocol(seed=4), None), (ReplayProtocol(split_time=log.quantile_time(0.5), max_requests=150, seed=1), log.quantile_time(0.7))):
        got = sample_requests(log, protocol, until=until)
        assert len(got) > 100
        assert_same(got, reference(log, protocol, until=until))


def test_first_visits_are_each_new_users_first_event_with_the_titles_of_the_horizon() -> None:
    # user 1 starts before the split; user 2 after it (two titles in the horizon, one past it);
    # user 3 after it with only a title the catalog lacks (no target: no request)
    rows = [(1, 1, 0, 5), (1, 2, 0, 50), (2, 3, 0, 20), (2, 4, 0, 20 + DAY), (2, 5, 0, 20 + 31 * DAY), (2, 3, 0, 22), (3, 7, 0, 30)]
    ev = pd.DataFrame(rows, columns=["user_id", "title_id", "kind", "ts"])
    log = EventLog.from_frame(ev.assign(stars=np.nan), CATALOG)
    got = first_visit_requests(log, split=10, horizon_days=30)
    assert got.user_ids.tolist() == [2] and got.times.tolist() == [19] and got.cold.tolist() == [True]
    assert CATALOG.title_ids[got.targets[0]].tolist() == [3, 4]
    assert CATALOG.title_ids[first_visit_requests(log, split=10, until=25).targets[0]].tolist() == [3]  # nothing past until
    assert len(first_visit_requests(log, split=10, until=19)) == 0  # a first event after until is no visit yet


def test_with_requests_adds_only_the_requests_it_lacks() -> None:
    rows = [(u, t, 0, ts) for u, t, ts in [(1, 1, 5), (1, 2, 50), (2, 3, 20), (2, 4, 60), (3, 5, 30), (3, 6, 70)]]
    log = EventLog.from_frame(pd.DataFrame(rows, columns=["user_id", "title_id", "kind", "ts"]).assign(stars=np.nan), CATALOG)
    sampled = sample_requests(log, ReplayProtocol(split_time=10, requests_per_user=1, seed=1))
    firsts = first_visit_requests(log, split=10)
    both = with_requests(sampled, firsts)
    keys = list(zip(both.user_ids.tolist(), both.times.tolist()))
    assert keys[: len(sampled)] == list(zip(sampled.user_ids.tolist(), sampled.times.tolist()))  # the sample first, unchanged
    assert len(set(keys)) == len(keys) and set(zip(firsts.user_ids.tolist(), firsts.times.tolist())) <= set(keys)
    assert len(both.targets) == len(both) == both.cold.size
    with_resumes = Requests(sampled.user_ids, sampled.times, sampled.targets, sampled.cold, tuple(np.array([7]) for _ in sampled.targets))
    kept = with_requests(with_resumes, firsts)
    assert len(kept.resumes) == len(kept) and [r.tolist() for r in kept.resumes[len(sampled):]] == [[]] * (len(kept) - len(sampled))
    assert [r.tolist() for r in kept.resumes[: len(sampled)]] == [[7]] * len(sampled)  # a side's resumes are not dropped
    assert both.take(np.array([len(both) - 1, 0])).user_ids.tolist() == [both.user_ids[-1], both.user_ids[0]]
