"""Property tests of the event log's "state as of t": nothing after t, and equal to a naive pandas recomputation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homepage.catalog import Catalog
from homepage.eventlog import EventLog

CATALOG = Catalog.from_frames(pd.DataFrame({"title_id": [1, 2, 3, 4, 5, 6], "name": list("abcdef")}))
USERS = pd.DataFrame({"user_id": [1, 2, 3, 4], "region": ["EU", "US", "EU", None]})
HALF_LIFE = 10.0

event = st.tuples(
    st.integers(1, 5),  # user (5 has no profile)
    st.integers(1, 8),  # title (7 and 8 are not in the catalog)
    st.sampled_from([0, 1, 2]),  # play, rating, impression
    st.integers(0, 50),  # ts
    st.floats(0.5, 5.0, width=32),  # stars (used for ratings)
    st.one_of(st.none(), st.floats(0.0, 1.0, width=32)),  # progress
)


def frame(events: list[tuple[int, int, int, int, float, float | None]]) -> pd.DataFrame:
    df = pd.DataFrame(events, columns=["user_id", "title_id", "kind", "ts", "stars", "progress"])
    df["kind"] = df["kind"].astype(np.int8)
    df["stars"] = np.where(df["kind"] == 1, df["stars"], np.nan).astype(np.float32)
    df["progress"] = df["progress"].astype(np.float32)
    return df.sort_values("ts", kind="stable").reset_index(drop=True)  # as write_dataset stores it


@settings(max_examples=60, deadline=None)
@given(st.lists(event, max_size=40), st.integers(-1, 55))
def test_user_state_as_of_t_equals_naive_pandas(events: list, t: int) -> None:
    df = frame(events)
    log = EventLog.from_frame(df, CATALOG, USERS)
    for u in range(1, 7):
        s = log.user_state(u, t)
        assert (s.ts <= t).all()
        naive = df[(df.user_id == u) & (df.ts <= t) & df.kind.isin([0, 1])].sort_values("ts", kind="stable")
        np.testing.assert_array_equal(s.title_ids, naive.title_id.to_numpy())
        np.testing.assert_array_equal(s.ts, naive.ts.to_numpy())
        np.testing.assert_array_equal(s.kinds, naive.kind.to_numpy())
        np.testing.assert_array_equal(s.stars, naive.stars.to_numpy())
        np.testing.assert_array_equal(s.progress, naive.progress.to_numpy())
        np.testing.assert_array_equal(s.title_idx, CATALOG.index_of(naive.title_id.to_numpy()))
        assert s.region == {1: "EU", 2: "US", 3: "EU"}.get(u)


@settings(max_examples=60, deadline=None)
@given(st.lists(event, max_size=40), st.integers(-1, 55))
def test_global_state_as_of_t_equals_naive_pandas(events: list, t: int) -> None:
    df = frame(events)
    g = EventLog.from_frame(df, CATALOG, USERS).global_state(t, HALF_LIFE)
    seen = df[(df.ts <= t) & df.kind.isin([0, 1]) & df.title_id.isin(CATALOG.title_ids)].copy()
    seen["idx"] = CATALOG.index_of(seen.title_id.to_numpy())
    seen["w"] = np.exp2(-(t - seen.ts.to_numpy(np.float64)) / HALF_LIFE)
    n = len(CATALOG)
    users = seen.user_id.nunique()
    # a viewer counts once per title: the earliest event of a (user, title), the earliest rating for the ratings
    ratings = seen[seen.kind == 1].drop_duplicates(["user_id", "idx"], keep="first")
    seen = seen.drop_duplicates(["user_id", "idx"], keep="first")
    counts = seen.groupby("idx").size().reindex(range(n), fill_value=0).to_numpy(np.int64)
    decayed = seen.groupby("idx").w.sum().reindex(range(n), fill_value=0.0).to_numpy(np.float64)
    rsum = ratings.groupby("idx").stars.sum().reindex(range(n), fill_value=0.0).to_numpy(np.float64)
    np.testing.assert_array_equal(g.counts, counts)
    np.testing.assert_allclose(g.decayed, decayed, rtol=1e-12)
    np.testing.assert_allclose(g.rating_sum, rsum, rtol=1e-6)
    assert g.n_users == users
    region = seen.user_id.map({1: "EU", 2: "US", 3: "EU"})
    for r in ("EU", "US"):
        expected = seen[region == r].groupby("idx").size().reindex(range(n), fill_value=0).to_numpy(np.int64)
        np.testing.assert_array_equal(g.region_counts[r], expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(event, max_size=40), st.integers(-1, 55), st.integers(0, 30))
def test_advanced_global_state_equals_a_full_recomputation(events: list, t0: int, step: int) -> None:
    log = EventLog.from_frame(frame(events), CATALOG, USERS)
    t = t0 + step
    advanced, full = log.advance_global_state(log.global_state(t0, HALF_LIFE), t), log.global_state(t, HALF_LIFE)
    assert advanced.as_of == full.as_of and advanced.n_users == full.n_users
    np.testing.assert_array_equal(advanced.counts, full.counts)
    np.testing.assert_array_equal(advanced.rating_count, full.rating_count)
    np.testing.assert_allclose(advanced.decayed, full.decayed, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(advanced.rating_sum, full.rating_sum, rtol=1e-6)
    for r in full.region_counts:
        np.testing.assert_array_equal(advanced.region_counts[r], full.region_counts[r])
        np.testing.assert_allclose(advanced.region_decayed[r], full.region_decayed[r], rtol=1e-12, atol=1e-300)


def test_checkpointed_worlds_do_not_depend_on_the_order_they_are_asked_in() -> None:
    from homepage.replay.run import CheckpointedWorlds

    rng = np.random.default_rng(3)
    events = [(int(rng.integers(1, 6)), int(rng.integers(1, 9)), int(rng.integers(0, 2)), int(rng.integers(0, 500)), 3.5, None) for _ in range(300)]
    log = EventLog.from_frame(frame(events), CATALOG, USERS)
    times = rng.integers(0, 520, size=40)
    forward = CheckpointedWorlds(log, HALF_LIFE, granularity=7, checkpoint=50, anchor=150)
    shuffled = CheckpointedWorlds(log, HALF_LIFE, granularity=7, checkpoint=50, anchor=150)
    a = {int(t): forward.at(int(t)) for t in np.sort(times)}
    b = {int(t): shuffled.at(int(t)) for t in rng.permutation(times)}
    for t in a:
        assert a[t].as_of == t - t % 7
        np.testing.assert_array_equal(a[t].decayed, b[t].decayed)  # bitwise: a state depends on t alone
        np.testing.assert_allclose(a[t].decayed, log.global_state(t - t % 7, HALF_LIFE).decayed, rtol=1e-12, atol=1e-300)


def test_checkpointed_worlds_refuse_an_anchor_that_is_not_a_whole_number_of_checkpoints() -> None:
    from homepage.replay.run import CheckpointedWorlds

    log = EventLog.from_frame(frame([(1, 1, 0, 10, 3.5, None)]), CATALOG, USERS)
    with pytest.raises(ValueError, match="anchor"):
        CheckpointedWorlds(log, HALF_LIFE, granularity=7, checkpoint=50, anchor=120)


def test_states_pickle_for_worker_processes() -> None:
    """A notebook sends states to a process pool (spawn, forkserver): a world state pickles whole and stays read-only."""
    import pickle

    events = [(1, 1, 0, 10, 3.5, None), (2, 2, 1, 20, 4.0, None), (3, 2, 0, 30, 3.5, 0.4), (5, 3, 0, 40, 3.5, None)]
    log = EventLog.from_frame(frame(events), CATALOG, USERS)
    world = log.global_state(35, HALF_LIFE)
    back = pickle.loads(pickle.dumps(world))
    assert (back.as_of, back.half_life, back.n_users) == (world.as_of, world.half_life, world.n_users) == (35, HALF_LIFE, 3)
    for name in ("counts", "decayed", "rating_sum", "rating_count"):
        np.testing.assert_array_equal(getattr(back, name), getattr(world, name))
        assert not getattr(back, name).flags.writeable
    assert set(back.region_counts) == {"EU", "US"} and not back.region_decayed["EU"].flags.writeable
    np.testing.assert_array_equal(back.region_decayed["EU"], world.region_decayed["EU"])
    user = pickle.loads(pickle.dumps(log.user_state(3, 35)))
    assert user.known_titles.tolist() == [1]
