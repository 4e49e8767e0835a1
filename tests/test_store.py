"""The Redis store against real servers (embedded and REDIS_URL): online state equals offline state."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_fixtures import *  # noqa: F403  (fixtures: store, embedded_redis, url_client, ...)
from redis_fixtures import make_store, write_small_dataset

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.domain import KIND_BY_CODE, Event
from homepage.embedded_redis import EmbeddedRedis
from homepage.eventlog import EventLog
from homepage.events_merge import stream_events
from homepage.state import GlobalState, UserState
from homepage.store import HISTORY_DTYPE, RedisStore, StoreError, StoreUnavailable, pack_history, unpack_history

HALF_LIFE = 3 * 86_400.0


class World:
    """A small dataset loaded the way publish loads it."""

    def __init__(self, path: Path) -> None:
        self.ds = load_dataset(path)
        self.catalog = Catalog.from_frames(self.ds.titles, self.ds.variants)
        self.log = EventLog.from_frame(self.ds.events, self.catalog, self.ds.users)
        self.t = int(self.ds.events["ts"].max())
        self.user_ids = [int(u) for u in self.ds.users["user_id"]] + [9999]

    def publish(self, store: RedisStore, version: str, t: int | None = None, bundle: Path | None = None) -> None:
        t = self.t if t is None else t
        store.publish(
            version, self.log, self.catalog, self.ds.users, self.log.global_state(t, HALF_LIFE), bundle,
            bundle_version="b1" if bundle else None,
        )

    def with_events(self, events: list[Event]) -> EventLog:
        """The event log of the dataset plus ``events``, for comparing against the store."""
        extra = pd.DataFrame(
            {
                "user_id": [e.user_id for e in events],
                "title_id": [e.title_id for e in events],
                "kind": np.array([{"play": 0, "rating": 1, "impression": 2}[e.kind.value] for e in events], np.int8),
                "ts": [e.ts for e in events],
                "progress": np.array([np.nan if e.progress is None else e.progress for e in events], np.float32),
                "stars": np.array([np.nan if e.stars is None else e.stars for e in events], np.float32),
            }
        )
        frame = pd.concat([self.ds.events, extra], ignore_index=True)
        return EventLog.from_frame(frame, self.catalog, self.ds.users)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(write_small_dataset(tmp_path_factory.mktemp("ds") / "small"))


def assert_user_equal(a: UserState, b: UserState) -> None:
    assert (a.user_id, a.as_of, a.region, a.favourite_genres) == (b.user_id, b.as_of, b.region, b.favourite_genres)
    for name in ("title_ids", "title_idx", "ts", "kinds", "stars", "progress"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)  # NaN == NaN here
        assert not x.flags.writeable, name


def assert_global_equal(a: GlobalState, b: GlobalState) -> None:
    assert (a.as_of, a.half_life, a.n_users) == (b.as_of, b.half_life, b.n_users)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.rating_count, b.rating_count)
    # atol: a rating replaced can leave a sum that cancels to below 1e-6, whose last bits follow the order of the additions
    np.testing.assert_allclose(a.rating_sum, b.rating_sum, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(a.decayed, b.decayed, rtol=1e-9, atol=1e-12)
    assert sorted(a.region_counts) == sorted(b.region_counts)
    for r in a.region_counts:
        np.testing.assert_array_equal(a.region_counts[r], b.region_counts[r])
        np.testing.assert_allclose(a.region_decayed[r], b.region_decayed[r], rtol=1e-9, atol=1e-12)


def test_history_records_round_trip() -> None:
    rng = np.random.default_rng(1)
    n = 7
    cols = (
        rng.integers(0, 2**40, n),
        rng.integers(0, 2**33, n),
        rng.integers(0, 2, n).astype(np.int8),
        rng.random(n).astype(np.float32),
        np.where(rng.random(n) < 0.5, np.nan, rng.random(n)).astype(np.float32),
    )
    raw = pack_history(*cols)
    assert len(raw) == n * HISTORY_DTYPE.itemsize == n * 29
    rec = unpack_history(raw)
    for name, col in zip(("title_id", "ts", "kind", "stars", "progress"), cols):
        np.testing.assert_array_equal(rec[name], col)
    assert unpack_history(None).size == 0


def test_an_outbox_entry_counts_a_viewer_once_and_an_older_releases_entry_as_before() -> None:
    """An entry an older worker left in an outbox has no ``earliest``: finished by this release, it counts as it did."""
    from homepage.store.keyspace import VersionMeta
    from homepage.store.records import OutboxEntry, counted

    event = Event(user_id=1, title_id=20, kind="rating", ts=1_000, stars=4.0).model_dump_json(exclude_none=True)
    payload = json.dumps({"i": 0, "k": "t", "v": "v1", "e": event, "t": "20", "w": "1.5", "s": "4.0"})
    meta = VersionMeta(version="v1", state="complete", as_of=0, epoch=0, half_life=1000.0, created=0.0, n_titles=1)
    old = OutboxEntry.parse(1, b"7 " + json.dumps(["EU", payload]).encode())
    assert old.earliest is None and counted(old, None) == counted(old, meta)
    assert counted(old, meta).count and counted(old, meta).rating_count and counted(old, meta).weights == (("decayed", "1.5"),)
    first = OutboxEntry.parse(1, b"8 " + json.dumps(["EU", payload, [-1, -1, ""]]).encode())
    assert counted(first, meta) == counted(old, meta)
    again = OutboxEntry.parse(1, b"9 " + json.dumps(["EU", payload, [900, 900, "5"]]).encode())
    c = counted(again, meta)
    assert (c.count, c.weights, c.stars, c.rating_count) == (False, (), None, False)
    earlier = OutboxEntry.parse(1, b"9 " + json.dumps(["EU", payload, [1_100, 1_200, "5"]]).encode())
    c = counted(earlier, meta)  # arrives late with an earlier time: the weight and the stars move to it
    assert not c.count and not c.rating_count and c.stars == "-1.0"
    assert c.weights[0] == ("decayed", "1.5") and c.weights[1][0] == "decayed" and float(c.weights[1][1]) == -(2.0 ** 1.1)


def test_published_state_equals_event_log(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    assert store.active_version() == "v1" and store.versions() == ["v1"]
    t_mid = int(np.quantile(world.log.u_ts, 0.5))
    for t in (world.t, t_mid, world.log.first_ts - 1):
        for u in world.user_ids:
            assert_user_equal(store.read_user_state(u, t, world.catalog), world.log.user_state(u, t))
    # a user with a region but no events gets an empty state with that region
    no_events = [u for u in world.log.user_region if u not in set(world.log.user_ids.tolist())]
    assert no_events, "the fixture should have users without events"
    assert store.read_user_state(no_events[0], world.t, world.catalog).region == world.log.user_region[no_events[0]]
    for now in (world.t, world.t + 5 * 86_400):  # no events after publish: equal at any later time
        assert_global_equal(store.read_global_state(now, world.catalog), world.log.global_state(now, HALF_LIFE))


def test_publish_as_of_earlier_time_hides_later_events(store: RedisStore, world: World) -> None:
    t = int(np.quantile(world.log.u_ts, 0.3))
    world.publish(store, "early", t=t)
    for u in world.user_ids:
        s = store.read_user_state(u, world.t, world.catalog)  # asked at a later time: still nothing after t
        assert (s.ts <= t).all()
        np.testing.assert_array_equal(s.ts, world.log.user_state(u, t).ts)
    assert_global_equal(store.read_global_state(t, world.catalog), world.log.global_state(t, HALF_LIFE))


def _new_events(world: World) -> list[Event]:
    t = world.t
    return [
        Event(user_id=1, title_id=20, kind="play", ts=t + 10, progress=0.4, watch_seconds=600),
        Event(user_id=1, title_id=30, kind="rating", ts=t + 5, stars=4.5),  # arrives after a later event
        Event(user_id=2, title_id=10, kind="play", ts=t + 20, progress=1.0),
        Event(user_id=3, title_id=999_990, kind="play", ts=t + 30),  # a title not in the catalog
        Event(user_id=4, title_id=40, kind="impression", ts=t + 30),
        Event(user_id=5000, title_id=50, kind="rating", ts=t + 40, stars=2.0),  # a brand-new user
    ]


def test_appended_events_are_read_back(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    events = _new_events(world)
    assert store.append_events(events, world.catalog) == len(events)
    log2 = world.with_events(events)
    now = world.t + 100
    for u in [*world.user_ids, 5000]:
        assert_user_equal(store.read_user_state(u, now, world.catalog), log2.user_state(u, now))
    assert_global_equal(store.read_global_state(now, world.catalog), log2.global_state(now, HALF_LIFE))
    # state as of a time between the new events leaves out the later ones
    assert_user_equal(store.read_user_state(1, world.t + 7, world.catalog), log2.user_state(1, world.t + 7))
    entries = store.client.xrange(store.keys.events)
    assert [Event.model_validate_json(f[b"e"]) for _, f in entries] == events


def test_a_viewer_counts_once_per_title_online_as_offline(store: RedisStore, world: World) -> None:
    """Repeated plays, progress heartbeats of one viewing, re-ratings and a flood from one account each
    counted in the world counters (on ml-latest-small 60 five-star ratings from one new account put a
    title rated once first in every new user's "Top 10 today"). Now a (user, title) counts once, by its
    earliest event (its earliest rating for the ratings), in whatever order the events arrive, and the
    store agrees with the event log."""
    world.publish(store, "v1")
    t = world.t
    before = store.read_global_state(t + 1_000, world.catalog)
    ids = world.catalog.title_ids
    flood, beats, late = int(ids[-1]), int(ids[-2]), int(ids[-3])
    events = [Event(user_id=5001, title_id=flood, kind="rating", ts=t + 10 + i, stars=5.0) for i in range(200)]
    events += [Event(user_id=5002, title_id=beats, kind="play", ts=t + 30 * i, progress=i / 10) for i in range(1, 10)]
    events += [
        Event(user_id=5003, title_id=late, kind="rating", ts=t + 60, stars=2.0),
        Event(user_id=5003, title_id=late, kind="play", ts=t + 50, progress=0.5),  # arrives after a later event
        Event(user_id=5003, title_id=late, kind="rating", ts=t + 40, stars=4.5),  # the earliest rating, arriving last
        Event(user_id=5003, title_id=late, kind="play", ts=t + 40, progress=0.9),  # ties the earliest: changes nothing
    ]
    first = int(world.log.u_title_ids[world.log.user_span(1)[0]])  # user 1 (region EU) watching again what they watched
    events += [Event(user_id=1, title_id=first, kind="play", ts=t + 70 + i) for i in range(3)]
    store.append_events(events[:150], world.catalog)  # a flood across batches, then the rest in one
    store.append_events(events[150:], world.catalog)
    now = t + 1_000
    online, offline = store.read_global_state(now, world.catalog), world.with_events(events).global_state(now, HALF_LIFE)
    assert_global_equal(online, offline)
    i_flood, i_beats, i_late, i_first = (int(i) for i in world.catalog.index_of([flood, beats, late, first]))
    assert online.counts[i_flood] - before.counts[i_flood] == 1
    assert online.rating_count[i_flood] - before.rating_count[i_flood] == 1
    assert online.rating_sum[i_flood] - before.rating_sum[i_flood] == 5.0
    assert online.counts[i_beats] - before.counts[i_beats] == 1
    np.testing.assert_allclose(online.decayed[i_beats] - before.decayed[i_beats], 2 ** (-(now - (t + 30)) / HALF_LIFE), rtol=1e-9)
    assert online.counts[i_late] - before.counts[i_late] == 1 and online.rating_count[i_late] - before.rating_count[i_late] == 1
    assert online.rating_sum[i_late] - before.rating_sum[i_late] == 4.5
    np.testing.assert_allclose(online.decayed[i_late] - before.decayed[i_late], 2 ** (-(now - (t + 40)) / HALF_LIFE), rtol=1e-9)
    assert online.counts[i_first] == before.counts[i_first] and online.region_counts["EU"][i_first] == before.region_counts["EU"][i_first]
    np.testing.assert_allclose(online.decayed[i_first], before.decayed[i_first], rtol=1e-12)


def test_events_on_a_clock_a_thousand_half_lives_after_the_data_are_counted(store: RedisStore, world: World) -> None:
    """A historical dataset served on the wall clock: ml-1m's ratings end in 2003, 1,200 weekly half-lives ago.

    The decayed counters are kept relative to the published state's time, and an event's weight
    2**((ts - epoch) / half_life) overflowed: every ``POST /events`` was a 500, and republishing the
    same dataset (the message's advice) gave the same epoch. Now such events go to sums kept relative
    to the wall clock at publish, and reads add both up: online equals offline, overall and per region.
    """
    now = int(time.time())
    half_life = (now - world.t) / 1200  # the wall clock is 1,200 half-lives after the data's last event
    store.publish("old", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, half_life), None)
    # events on the data's own clock (HOMEPAGE_CLOCK=data) count against the published state, as before
    data_time = [Event(user_id=1, title_id=30, kind="play", ts=world.t + 10, progress=1.0)]
    assert store.append_events(data_time, world.catalog) == 1
    assert_global_equal(store.read_global_state(world.t + 20, world.catalog), world.with_events(data_time).global_state(world.t + 20, half_life))
    wall = [
        Event(user_id=u, title_id=tid, kind="play", ts=now - 60 * i, progress=1.0)
        for i, (u, tid) in enumerate([(1, 20), (2, 20), (3, 30), (4, 20), (5, 40)])
    ]
    assert store.append_events(wall, world.catalog) == len(wall)
    online = store.read_global_state(now, world.catalog)
    assert_global_equal(online, world.with_events(data_time + wall).global_state(now, half_life))
    assert online.decayed[world.catalog.index_of(np.array([20]))[0]] > 2.9  # three plays in the last few minutes


def test_an_event_between_the_two_decay_epochs_is_counted(store: RedisStore, world: World) -> None:
    """An event over 900 half-lives after the data and over 1,000 before the wall clock at publish (ml-100k's 1998
    served in 2026 with a 3-day half-life, a client sending a play of 2012) weighs nothing by now: it was an
    OverflowError, a 500 for its ``POST /events``, though its exponent only underflows."""
    now = int(time.time())
    half_life = (now - world.t) / 3000  # the wall clock is 3,000 half-lives after the data's last event
    store.publish("old", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, half_life), None)
    between = [Event(user_id=2, title_id=20, kind="play", ts=int(world.t + 1500 * half_life), progress=1.0)]
    assert store.append_events(between, world.catalog) == 1
    online = store.read_global_state(now, world.catalog)
    assert_global_equal(online, world.with_events(between).global_state(now, half_life))  # counted, its decayed weight 0


def test_a_version_published_before_late_epoch_existed_counts_wall_clock_events(store: RedisStore, world: World) -> None:
    """Upgrading the workers without republishing: the previous release's version record has no ``late_epoch``.

    Read as None, this release's workers kept the old overflow for it: every ``POST /events`` on
    the wall clock was a 500 (``decay epochs ... and None too far``) until a republish. The record
    now reads with the epoch its publish would have taken, so the events count, as on a new version.
    """
    now = int(time.time())
    half_life = (now - world.t) / 1200
    store.publish("prev", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, half_life), None)
    store.client.hdel(store.keys.meta("prev"), "late_epoch")  # the record as the previous release wrote it
    worker = make_store(store.client, store.settings)  # a worker of this release, started on it
    meta = worker.meta("prev")
    assert meta.late_epoch == max(world.t, int(meta.created))
    wall = [Event(user_id=u, title_id=20, kind="play", ts=now - 60 * u, progress=1.0) for u in (1, 2, 3)]
    assert worker.append_events(wall, world.catalog) == len(wall)
    online = worker.read_global_state(now, world.catalog)
    assert_global_equal(online, world.with_events(wall).global_state(now, half_life))
    assert online.decayed[world.catalog.index_of(np.array([20]))[0]] > 2.9


def test_regions_beyond_the_cap_count_overall_but_get_no_counters_of_their_own(store: RedisStore, world: World) -> None:
    """A client putting zip codes in `region` made a counter pair per zip in Redis and in every worker (+118 MB for
    4,000 regions on a 1,000-title catalog): regions past ``max_regions`` count in the overall counters only."""
    capped = RedisStore(store.client, store.keys.prefix, settings=store.settings.model_copy(update={"max_regions": 3}))
    world.publish(capped, "v1")
    before = capped.read_global_state(world.t + 100, world.catalog)
    known = sorted(before.region_counts)
    assert 1 <= len(known) < 3, known  # room left for new regions, then none
    users = [7001 + i for i in range(5)]
    for i, u in enumerate(users):
        capped.set_profile(u, f"zip{i}", [])
    events = [Event(user_id=u, title_id=10, kind="play", ts=world.t + 10 + i, progress=1.0) for i, u in enumerate(users)]
    assert capped.append_events(events, world.catalog) == 5
    after = capped.read_global_state(world.t + 100, world.catalog)
    assert len(after.region_counts) == 3 and set(known) <= set(after.region_counts)
    new = sorted(set(after.region_counts) - set(known))
    assert new == [f"zip{i}" for i in range(3 - len(known))]  # the first to come, while there was room
    t10 = int(world.catalog.index_of([10])[0])
    assert after.counts[t10] == before.counts[t10] + 5  # every event counts overall
    assert sum(int(after.region_counts[r][t10]) for r in new) == len(new)
    # a region the version has keeps counting after the cap is reached (another title: a viewer counts once per title)
    other = int(world.catalog.title_ids[(t10 + 1) % len(world.catalog)])
    capped.append_events([Event(user_id=users[0], title_id=other, kind="play", ts=world.t + 50, progress=1.0)], world.catalog)
    assert "zip0" in new and int(capped.read_global_state(world.t + 100, world.catalog).region_counts["zip0"][(t10 + 1) % len(world.catalog)]) == 1


def test_a_publish_keeps_counters_of_at_most_max_regions_regions(store: RedisStore, world: World) -> None:
    """Regions users set through the API reach the dataset with merge-events: a publish wrote a counter pair for
    each (305 regions past the cap of 256, measured), in Redis and in every worker. It keeps the largest ones."""
    capped = RedisStore(store.client, store.keys.prefix, settings=store.settings.model_copy(update={"max_regions": 1}))
    full = world.log.global_state(world.t, HALF_LIFE)
    assert len(full.region_counts) == 2
    world.publish(capped, "v1")
    got = capped.read_global_state(world.t, world.catalog)
    largest = max(full.region_counts, key=lambda r: int(full.region_counts[r].sum()))
    assert sorted(got.region_counts) == sorted(got.region_decayed) == [largest]
    np.testing.assert_array_equal(got.region_counts[largest], full.region_counts[largest])
    np.testing.assert_array_equal(got.counts, full.counts)  # every event still counts overall
    assert sorted(capped.client.smembers(capped.keys.regions("v1"))) == [largest.encode()]


def test_a_flooded_users_history_keeps_its_newest_records(store: RedisStore, world: World) -> None:
    """350k plays for one user grew their history to 10 MB, moved whole on every page miss: it is bounded."""
    capped = RedisStore(store.client, store.keys.prefix, settings=store.settings.model_copy(update={"max_history_records": 100}))
    world.publish(capped, "v1")
    u = 8001
    events = [Event(user_id=u, title_id=10 * (1 + i % 30), kind="play", ts=world.t + i, progress=1.0) for i in range(250)]
    for start in range(0, 250, 50):
        assert capped.append_events(events[start : start + 50], world.catalog) == 50
        assert store.client.strlen(store.keys.hist("v1", u)) <= 100 * HISTORY_DTYPE.itemsize
    state = capped.read_user_state(u, world.t + 1000, world.catalog)
    assert 75 <= len(state) <= 100 and int(state.ts[-1]) == world.t + 249  # the newest kept, the oldest gone
    assert int(state.ts.min()) > world.t + 100
    # under the bound nothing changes: another user's history is all there
    assert len(capped.read_user_state(1, world.t + 1000, world.catalog)) == len(world.log.user_state(1, world.t + 1000))


def test_a_publish_writes_at_most_max_history_records_of_a_history(store: RedisStore, world: World) -> None:
    """The bound held for events only: a flood merged into the dataset (``merge-events``) was published whole, and
    HOMEPAGE_MAX_HISTORY_RECORDS=100 left a published world-small history at 219 records. It keeps the newest."""
    capped = RedisStore(store.client, store.keys.prefix, settings=store.settings.model_copy(update={"max_history_records": 100}))
    flood = [Event(user_id=1, title_id=10 * (1 + i % 30), kind="play", ts=world.t - 1000 + i, progress=1.0) for i in range(250)]
    log = world.with_events(flood)
    capped.publish("v1", log, world.catalog, world.ds.users, log.global_state(world.t, HALF_LIFE))
    got = capped.read_user_state(1, world.t, world.catalog)
    assert len(got) == 100
    full = log.user_state(1, world.t)
    np.testing.assert_array_equal(got.ts, full.ts[-100:])
    assert capped.client.strlen(capped.keys.hist("v1", 1)) == 100 * HISTORY_DTYPE.itemsize


def test_an_event_leaves_the_history_at_its_size_in_memory(store: RedisStore, world: World) -> None:
    """APPEND grows a string to twice its length (Redis's greedy allocation): one play doubled the memory of a history
    published at its size (2,648 -> 5,208 B for 2,349 B of records), so a live version's histories took up to 2x."""
    u = 1
    log = world.with_events([Event(user_id=u, title_id=10 * (1 + i % 30), kind="play", ts=world.t - 1000 + i, progress=1.0) for i in range(80)])
    store.publish("v1", log, world.catalog, world.ds.users, log.global_state(world.t, HALF_LIFE))
    key = store.keys.hist("v1", u)
    assert store.client.strlen(key) > 2000
    for i in range(3):
        assert store.append_events([Event(user_id=u, title_id=10, kind="play", ts=world.t + 1 + i, progress=0.5)], world.catalog) == 1
        size, used = store.client.strlen(key), store.client.memory_usage(key, samples=0)
        assert used < 1.3 * size + 100, (i, size, used)


def test_an_event_on_a_history_past_a_megabyte_appends_and_a_smaller_one_is_rewritten(store: RedisStore) -> None:
    """Writing every history back whole (a Lua concat of it) doubled the event script's time at the 100,000-record cap
    (4.7 -> 9.2 ms a call at 2.9 MB, Redis's one thread busy; bench-like figures, not timed here): past 1 MB, where
    APPEND adds at most 1 MB, it appends; below it the history is written whole, at its size (APPEND doubled it)."""
    from homepage.store.scripts import USER_STEP

    size, c = HISTORY_DTYPE.itemsize, store.client
    step = c.register_script(USER_STEP)
    for user, records, appends in (("big", 90_000, 1), ("small", 300, 0)):  # 2.6 MB and 8.7 KB, under the default cap
        keys = [f"{store.keys.prefix}:{{{user}}}:{name}" for name in ("h", "p", "ap", "o", "s", "a", "vp")]
        c.set(keys[0], _record(1) * records)
        node = {"target_nodes": c.get_node_from_key(keys[0])} if store.is_cluster else {}
        before = _calls(c, "append", node)
        step(keys=keys, args=[100, 100, 100_000 * size, 75_000 * size, size, 0, "d", _record(2, title=8), "{}"])
        assert c.strlen(keys[0]) == (records + 1) * size and c.getrange(keys[0], -size, -1) == _record(2, title=8)
        assert _calls(c, "append", node) - before == appends, user


def _calls(client: Any, command: str, node: dict[str, Any]) -> int:
    """How many times the server (the key's node on a cluster) ran ``command``, scripts' calls included."""
    return int(client.info("commandstats", **node).get(f"cmdstat_{command}", {}).get("calls", 0))


def _record(ts: int, title: int = 7) -> bytes:
    a = np.zeros(1, dtype=HISTORY_DTYPE)
    a[a.dtype.names[0]], a[a.dtype.names[1]] = title, ts
    return a.tobytes()


def test_idempotency_keys_apply_an_event_once(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    events = _new_events(world)[:3]
    keys = ["k1", "k2", None]
    assert store.append_events(events, world.catalog, keys) == 3
    before = store.read_user_state(1, world.t + 100, world.catalog)
    assert store.append_events(events[:2], world.catalog, keys[:2]) == 0
    assert len(store.read_user_state(1, world.t + 100, world.catalog)) == len(before)
    # a repeated key inside one batch counts once; a keyless event always applies
    again = [events[2], events[2]]
    assert store.append_events(again, world.catalog, ["k3", "k3"]) == 1
    assert store.append_events([events[2]], world.catalog, [None]) == 1
    with pytest.raises(ValueError, match="idempotency_keys"):
        store.append_events(events, world.catalog, ["only-one"])


def test_events_need_a_published_version(store: RedisStore, world: World) -> None:
    with pytest.raises(StoreError, match="homepage publish"):
        store.append_events(_new_events(world)[:1], world.catalog)
    with pytest.raises(StoreError, match="no published version"):
        store.read_user_state(1, world.t, world.catalog)


def test_rollback_restores_the_previous_version(store: RedisStore, world: World) -> None:
    t_old = int(np.quantile(world.log.u_ts, 0.5))
    world.publish(store, "old", t=t_old)
    world.publish(store, "new")
    assert store.active_version() == "new"
    u = int(world.log.user_ids[0])
    assert len(store.read_user_state(u, world.t, world.catalog)) == len(world.log.user_state(u, world.t))
    assert store.rollback() == "old"
    assert store.active_version() == "old" and store.versions() == ["old"]
    assert len(store.read_user_state(u, world.t, world.catalog)) == len(world.log.user_state(u, t_old))
    with pytest.raises(StoreError, match="no version before 'old'"):
        store.rollback()


def test_events_missed_by_counts_what_a_restored_version_lacks(store: RedisStore, world: World) -> None:
    """Events go to the live version only: a version a rollback restores lacks all acknowledged since it was replaced,
    through several publishes and rollbacks (the rollback warning's count)."""
    ev = _new_events(world)
    world.publish(store, "v1")
    store.append_events(ev[0:1], world.catalog)  # applied to v1 while it is live
    world.publish(store, "v2")
    assert store.events_missed_by("v2") is None and store.events_missed_by("v1") == 0
    store.append_events(ev[3:5], world.catalog)
    world.publish(store, "v3")
    store.append_events(ev[2:3], world.catalog)  # user 2's play: in v3 only
    assert (store.events_missed_by("v1"), store.events_missed_by("v2")) == (3, 1)
    in_v3 = len(store.read_user_state(2, world.t + 100, world.catalog, "v3"))
    assert store.rollback() == "v2" and store.events_missed_by("v2") == 1
    assert len(store.read_user_state(2, world.t + 100, world.catalog)) == in_v3 - 1
    store.append_events(ev[5:6], world.catalog)  # applied to v2, live again
    assert store.rollback() == "v1" and store.events_missed_by("v1") == 4  # everything since v1 was replaced
    assert store.gc(keep=1) == ["v2", "v3"] and store.events_missed_by("v3") is None


def test_publish_records_the_version_its_flip_replaced_when_a_rollback_races_it(store: RedisStore, world: World) -> None:
    """A rollback landing between publish's read of the active version and its flip: the version recorded as replaced
    (missing events since) is the one the flip replaced, the one the rollback restored."""
    world.publish(store, "v1")
    world.publish(store, "v2")
    store.append_events(_new_events(world)[:1], world.catalog)  # v1 misses it (v2's flip recorded v1 at 0 events)
    other = RedisStore(store.client, store.keys.prefix, settings=store.settings)
    client_get, client_pipeline = store.client.get, store.client.pipeline
    raced: list[str] = []

    def then_roll_back(value: object, name: object) -> object:
        if name == store.keys.active and not raced:
            raced.append("busy")  # the rollback reads the pointer too
            raced[0] = other.rollback()  # v2 -> v1, just after publish read v2
        return value

    def get(name: str, *args: object, **kwargs: object) -> object:
        return then_roll_back(client_get(name, *args, **kwargs), name)

    def pipeline(*args: object, **kwargs: object) -> object:
        pipe = client_pipeline(*args, **kwargs)
        pipe_get = pipe.get
        pipe.get = lambda name, *a, **kw: then_roll_back(pipe_get(name, *a, **kw), name)  # a WATCHed read returns its value
        return pipe

    store.client.get, store.client.pipeline = get, pipeline  # real calls, with a rollback after the pointer's first read
    try:
        world.publish(store, "v3")
    finally:
        del store.client.get, store.client.pipeline
    assert raced == ["v1"] and store.active_version() == "v3"
    assert store.events_missed_by("v1") == 0  # replaced again, by v3's flip, after that event
    assert store.client.hget(store.keys.retired_at, "v2") is not None  # by the rollback


def _version_keys(store: RedisStore, v: str) -> int:
    return sum(1 for _ in store.client.scan_iter(match=store.keys.version_pattern(v)))


def test_gc_keeps_the_newest_versions(store: RedisStore, world: World) -> None:
    for v in ("a", "b", "c", "d"):
        world.publish(store, v)
    assert all(_version_keys(store, v) > len(world.log.user_ids) for v in "abcd")
    assert sorted(store.gc(keep=2)) == ["a", "b"]
    assert store.versions() == ["c", "d"] and store.active_version() == "d"
    assert _version_keys(store, "a") == 0 and _version_keys(store, "b") == 0
    assert _version_keys(store, "c") > 0
    assert store.rollback() == "c"
    assert store.gc(keep=5) == ["d"]  # a rolled-back version is retired
    assert store.gc(keep=1) == []  # the active version always stays


def test_a_version_a_gc_took_while_it_was_written_is_never_made_live(store: RedisStore, world: World) -> None:
    """A publish whose lease ran out mid-write (a long bundle upload) lost its keys to a gc, then flipped
    ``active`` onto the remains: versions, rollback and gc all failed after it. Now it fails alone."""
    world.publish(store, "v1")
    other = RedisStore(store.client, store.keys.prefix, settings=store.settings)
    taken: list[list[str]] = []

    def lease_runs_out_and_a_gc_comes(done: int, total: int) -> None:
        if not taken:
            store.client.delete(store.keys.lease("v2"))
            taken.append(other.gc(keep=5))

    with pytest.raises(StoreError, match=r"version 'v2': deleted by a gc while it was written .*HOMEPAGE_PUBLISH_LEASE_SECONDS"):
        store.publish("v2", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, HALF_LIFE), progress=lease_runs_out_and_a_gc_comes)
    assert taken == [["v2"]]
    assert store.active_version() == "v1" and store.versions() == ["v1"]
    assert _version_keys(store, "v2") == 0  # what it wrote after the gc is deleted too
    world.publish(store, "v3")
    assert store.versions() == ["v1", "v3"] and store.rollback() == "v1" and store.gc(keep=1) == ["v3"]


def test_gc_leaves_alone_a_version_being_written_and_one_just_made_live(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    seen: list[list[str]] = []

    def gc_during_the_writes(done: int, total: int) -> None:
        seen.append(store.gc(keep=5))  # the lease is alive

    store.publish("v2", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, HALF_LIFE), progress=gc_during_the_writes)
    assert seen and all(x == [] for x in seen) and store.active_version() == "v2"
    assert not store._claim_orphan("v2")  # published: its lease is gone, but it is in the version list


def test_delete_user_erases_keys_and_stream_entries(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    store.append_events(_new_events(world), world.catalog)
    store.page_served(1, "f", b"page 1", 60, '{"page": 1}', "v1")
    store.page_served(2, "f", b"page 2", 60, '{"page": 2}', "v1")
    assert len(store.read_user_state(1, world.t + 100, world.catalog)) > 0
    assert store.delete_user(1) > 0
    assert store.read_user_state(1, world.t + 100, world.catalog).is_cold
    assert not store.client.exists(store.keys.profile("v1", 1))
    assert not store.client.exists(store.keys.api_profile(1))
    for stream in (store.keys.events, store.keys.served):
        users = [f[b"u"] for _, f in store.client.xrange(stream)]
        assert b"1" not in users and b"2" in users


def test_an_erasure_keeps_the_users_idempotency_keys_so_a_retry_cannot_bring_an_event_back(store: RedisStore, world: World) -> None:
    """A client retrying an event the user had before erasing their data gets a duplicate, not the event back.

    Every other key of the user goes; what stays is the sequence counter and the idempotency
    keys (an event digest each, until their TTL).
    """
    world.publish(store, "v1")
    play = Event(user_id=1, title_id=20, kind="play", ts=world.t + 10, progress=0.4)
    assert store.append_events([play], world.catalog, ["retry-me"]) == 1
    store.delete_user(1)
    left = {key.decode() for key in store.client.scan_iter(match=store.keys.user_unversioned_pattern(1))}
    assert left == {store.keys.seq(1), store.keys.idempotency(1, "retry-me")}
    assert store.append_events([play], world.catalog, ["retry-me"]) == 0  # a duplicate
    assert store.read_user_state(1, world.t + 100, world.catalog).is_cold
    assert not [e for e in store.event_entries() if e[1] == 1]


@pytest.mark.parametrize("lands", ["before", "after"])
def test_a_batch_racing_an_erasure_is_erased_whole_or_kept_whole(store: RedisStore, world: World, lands: str) -> None:
    """A batch whose user step comes before the erasure's goes from history and stream; one after it stays in both.

    ``lands="after"``: the batch is written between the erasure's user step and its mark in the
    events stream (an API worker ingesting while another erases). Before 2026-12-07 the erasure
    deleted its stream entry (it was before the mark) and its idempotency key while its history
    stayed, so the stream lost an acknowledged event and a retry counted it twice.
    """
    world.publish(store, "v1")
    play = Event(user_id=1, title_id=20, kind="play", ts=world.t + 10, progress=0.4)
    if lands == "before":
        assert store.append_events([play], world.catalog, ["k"]) == 1
        store.delete_user(1)
    else:
        mark = store._mark_erasure

        def ingest_then_mark(u: int, seq: int) -> tuple[int, int]:
            assert store.append_events([play], world.catalog, ["k"]) == 1
            return mark(u, seq)

        store._mark_erasure = ingest_then_mark  # type: ignore[method-assign]
        store.delete_user(1)
    history = len(store.read_user_state(1, world.t + 100, world.catalog))
    in_stream = len([e for e in store.event_entries() if e[1] == 1])
    assert (history, in_stream) == ((0, 0) if lands == "before" else (1, 1))
    # a merge into a dataset takes what the erasure kept (its entry is before the erasure's stream position)
    merged = stream_events(store.events_since(None)[0], None, store.erasures(), store.erasure_seqs())
    assert (merged.frame["user_id"] == 1).sum() == in_stream
    assert store.append_events([play], world.catalog, ["k"]) == 0  # the retry is a duplicate either way
    assert len(store.read_user_state(1, world.t + 100, world.catalog)) == history


def test_page_cache_is_invalidated_by_the_users_events(store: RedisStore, world: World) -> None:
    world.publish(store, "v1")
    now = world.t + 100
    for user in (1, 2):
        for params in ("rows=10", "rows=3"):  # every cached page of the user goes, whatever its parameters
            store.page_served(user, params, f"page-{user}-{params}".encode(), 60, None, "v1")
    store.append_events(_new_events(world)[:2], world.catalog)  # user 1 only
    for params in ("rows=10", "rows=3"):
        assert store.read_request(1, now, world.catalog, params, "v1")[0] is None
        assert store.read_request(2, now, world.catalog, params, "v1")[0] == f"page-2-{params}".encode()


def test_scan_patterns_find_the_keys_traffic_writes(store: RedisStore, world: World) -> None:
    """The SCAN patterns a benchmark sizes Redis with match the keys the store really writes (and only those)."""
    world.publish(store, "v1")
    store.append_events(_new_events(world)[:2], world.catalog, ["k1", "k2"])
    store.page_served(2, "rows=10", b"page", 60, None, "v1")
    k = store.keys
    assert sorted(store.client.scan_iter(match=k.idempotency_pattern)) == sorted(
        x.encode() for x in {k.idempotency(1, "k1"), k.idempotency(1, "k2")}
    )
    assert list(store.client.scan_iter(match=k.page_pattern)) == [k.page("v1", 2).encode()]
    assert store.client.xlen(k.events) == 2


def test_a_users_page_cache_is_bounded_and_lives_no_longer_than_its_ttl(store: RedisStore, world: World) -> None:
    """A client varying a parameter per request (any region string) grew one user's cache hash without end, and
    every new field pushed the whole hash's expiry back, so pages outlived the TTL."""
    from homepage.store.serving import PAGE_CACHE_FIELDS

    world.publish(store, "v1")
    key = store.keys.page("v1", 1)
    for i in range(3 * PAGE_CACHE_FIELDS - 1):  # ends one short of full: the next page joins the hash
        _, _, read = store.read_request(1, world.t + 100, world.catalog, f"region=r{i}", "v1")
        assert store.page_served(1, f"region=r{i}", b"page %d" % i, 60, None, "v1", read)
        assert 1 <= store.client.hlen(key) <= PAGE_CACHE_FIELDS
    assert store.client.hget(key, f"region=r{3 * PAGE_CACHE_FIELDS - 2}") is not None  # the newest is always kept
    store.client.expire(key, 5)
    _, _, read = store.read_request(1, world.t + 100, world.catalog, "rows=5", "v1")
    assert store.page_served(1, "rows=5", b"another", 60, None, "v1", read)
    assert 0 < store.client.ttl(key) <= 5  # the hash's first page set the expiry; later ones do not push it back


def test_a_flushed_redis_is_not_read_as_a_new_user(store: RedisStore, world: World) -> None:
    """A request for a user with no keys checks that its version still exists: Redis flushed or restarted empty."""
    from homepage.store import NotPublished

    world.publish(store, "v1")
    unknown = max(world.user_ids) + 1000
    miss, state, _ = store.read_request(unknown, world.t, world.catalog, "f", "v1")  # a new user: an empty state
    assert miss is None and state is not None and len(state) == 0
    with pytest.raises(NotPublished, match="v2"):
        store.read_request(unknown, world.t, world.catalog, "f", "v2")
    with pytest.raises(NotPublished):
        store.read_request(int(world.user_ids[0]), world.t, world.catalog, "f", "v2")


def test_read_request_returns_the_cached_page_or_the_state_and_never_both(store: RedisStore, world: World) -> None:
    """A page request's one round trip: a hit returns the page unparsed; with cache reads off it returns the state."""
    world.publish(store, "v1")
    now = world.t + 100
    miss, state, read = store.read_request(1, now, world.catalog, "f", "v1")
    assert miss is None and state is not None and len(state) > 0 and read is not None
    assert store.page_served(1, "f", b"cached page", 60, None, "v1", read)
    assert store.read_request(1, now, world.catalog, "f", "v1") == (b"cached page", None, None)
    assert store.read_request(1, now, world.catalog, "other", "v1")[0] is None  # keyed by request parameters
    off, state_off, _ = store.read_request(1, now, world.catalog, "f", "v1", use_cache=False)
    assert off is None and state_off is not None
    assert_user_equal(state_off, state)


@pytest.mark.parametrize("change", ["event", "profile", "erasure"])
def test_a_page_built_from_an_older_state_is_not_cached(store: RedisStore, world: World, change: str) -> None:
    """An event, profile change or erasure between a page's read and its cache write drops the page.

    The change deletes the user's cached pages; a write landing after it must not put back
    a page built from the state before (for up to the cache TTL the user would see a page
    that ignores their play, their new region, or, after an erasure, their erased history).
    The page is still logged as served.
    """
    world.publish(store, "v1")
    now = world.t + 100
    _, state, read = store.read_request(1, now, world.catalog, "f", "v1")
    assert state is not None and len(state) > 0
    if change == "event":
        store.append_events(_new_events(world)[:1], world.catalog)
    elif change == "profile":
        store.set_profile(1, "ZZ", ["Drama"], "v1")
    else:
        store.delete_user(1)
    served_before = store.client.xlen(store.keys.served)
    assert not store.page_served(1, "f", b"stale page", 60, '{"page": 1}', "v1", read)
    assert not store.client.exists(store.keys.page("v1", 1))
    assert store.read_request(1, now, world.catalog, "f", "v1")[0] is None
    assert store.client.xlen(store.keys.served) == served_before + 1
    # read again, nothing changes in between: cached
    _, _, fresh = store.read_request(1, now, world.catalog, "f", "v1")
    assert store.page_served(1, "f", b"fresh page", 60, None, "v1", fresh)
    assert store.read_request(1, now, world.catalog, "f", "v1")[0] == b"fresh page"


def test_a_page_logged_after_its_users_erasure_is_swept(store: RedisStore, world: World) -> None:
    """A page read before ``DELETE /users`` and logged after its sweep is left out of exports, then erased.

    The served stream is in another slot than the user's state, so a write in flight during an
    erasure can land after the erasure swept the stream. For a while after the erasure the
    stream's tail is swept again; after that, a returning user's pages stay.
    """
    world.publish(store, "v1")
    now = world.t + 100
    store.page_served(2, "f", b"page 2", 60, '{"page": "2-before"}', "v1")
    _, _, read = store.read_request(1, now, world.catalog, "f", "v1")
    store.delete_user(1)
    store.page_served(1, "f", b"late page", 60, '{"page": "1-late"}', "v1", read)  # the write in flight
    store.page_served(2, "f", b"page 2", 60, '{"page": "2-after"}', "v1")

    def logged(user: int) -> list[bytes]:
        return [f[b"p"] for _, f in store.client.xrange(store.keys.served) if f[b"u"] == str(user).encode()]

    assert logged(1) == [b'{"page": "1-late"}']
    assert [u for _, u, _ in store.served_entries()] == [2, 2]  # not exported meanwhile
    assert store.sweep_served_after_erasures() == 1
    assert logged(1) == [] and logged(2) == [b'{"page": "2-before"}', b'{"page": "2-after"}']
    assert store.sweep_served_after_erasures() == 0
    # past the sweep window the record goes, and the user's new pages are logged and kept
    assert store.sweep_served_after_erasures(now_ms=int(time.time() * 1000) + 3_600_000) == 0
    assert not store.client.hexists(store.keys.served_sweeps, "1")
    store.page_served(1, "f", b"new page", 60, '{"page": "1-new"}', "v1")
    assert store.sweep_served_after_erasures() == 0
    assert logged(1) == [b'{"page": "1-new"}'] and [u for _, u, _ in store.served_entries()] == [2, 2, 1]


def test_bundle_files_round_trip(store: RedisStore, world: World, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rankers").mkdir(parents=True)
    (bundle / "manifest.json").write_text('{"version": "b1"}')
    (bundle / "rankers" / "arrays.npz").write_bytes(bytes(range(256)) * 10)
    world.publish(store, "v1", bundle=bundle)
    assert store.meta().bundle_version == "b1"
    out = store.materialize_bundle(None, tmp_path / "out")
    assert out.name.startswith("unpacked-b1-")  # its own name: never an operator's bundle directory of that version
    for p in bundle.rglob("*"):
        if p.is_file():
            assert (out / p.relative_to(bundle)).read_bytes() == p.read_bytes()


def test_a_bundle_gone_from_redis_is_not_reported_as_never_published(store: RedisStore, world: World, tmp_path: Path) -> None:
    """The bundle hash evicted (a maxmemory-policy other than noeviction): a worker putting the version live said it
    was published without a model, which sends the operator looking at the publish instead of at Redis."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"version": "b1"}')
    world.publish(store, "v1", bundle=bundle)
    store.client.delete(store.keys.bundle("v1"))
    with pytest.raises(StoreError, match="its model bundle b1 is gone from Redis") as e:
        store.materialize_bundle("v1", tmp_path / "out")
    assert "no model bundle was published" not in str(e.value)


def test_store_unavailable_when_nothing_listens(world: World) -> None:
    down = RedisStore.from_url("redis://127.0.0.1:1/0", "x")
    with pytest.raises(StoreUnavailable, match="redis unavailable"):
        down.read_user_state(1, 0, world.catalog, version="v1")
    with pytest.raises(StoreUnavailable):
        down.append_events([Event(user_id=1, title_id=10, kind="play", ts=1)], world.catalog)


def test_embedded_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    emb = EmbeddedRedis(tmp_path / "r")
    first = RedisStore.from_socket(emb.start())
    assert emb.started_here
    first.client.set("hp:probe", b"kept")
    second = EmbeddedRedis(tmp_path / "r")  # another process finds the running server the same way
    other = RedisStore.from_socket(second.start())
    assert other.client.get("hp:probe") == b"kept" and not second.started_here
    other.close()
    first.close()
    emb.stop()
    assert not EmbeddedRedis(tmp_path / "r").socket_path.exists()  # stopped: its socket is gone
    again = EmbeddedRedis(tmp_path / "r")
    restarted = RedisStore.from_socket(again.start())
    assert restarted.client.get("hp:probe") == b"kept" and again.started_here
    restarted.close()
    again.stop()


def test_kind_codes_cover_the_history_dtype() -> None:
    assert set(KIND_BY_CODE) <= set(range(np.iinfo(HISTORY_DTYPE["kind"]).max))


new_event = st.tuples(
    st.integers(1, 6),  # user
    st.integers(1, 34),  # title * 10 (31..34 are not in the catalog)
    st.sampled_from(["play", "rating", "impression"]),
    st.integers(-5 * 86_400, 5 * 86_400),  # ts relative to the publish time, in any order
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(new_event, max_size=25), batch=st.integers(1, 5), dt=st.integers(-6 * 86_400, 6 * 86_400))
def test_appends_in_any_order_read_like_the_event_log(
    store: RedisStore, world: World, data: list, batch: int, dt: int
) -> None:
    world.publish(store, f"h{uuid.uuid4().hex[:8]}")
    events = [
        Event(user_id=u, title_id=10 * t, kind=k, ts=world.t + d, progress=p, stars=(p or 0.5) * 10 if k == "rating" else None)
        for u, t, k, d, p in data
    ]
    for i in range(0, len(events), batch):
        store.append_events(events[i : i + batch], world.catalog)
    log2 = world.with_events(events)
    now = world.t + dt
    for u in range(1, 7):
        assert_user_equal(store.read_user_state(u, now, world.catalog), log2.user_state(u, now))
    if dt >= 5 * 86_400:  # the counters hold every event; the log's state as of now does too
        assert_global_equal(store.read_global_state(now, world.catalog), log2.global_state(now, HALF_LIFE))


def test_a_user_erased_while_a_publish_writes_stays_erased_in_the_new_version(store: RedisStore, world: World) -> None:
    """The publish read the erasures before writing its batches: a later batch brought an erased user back."""
    from redis_fixtures import make_store

    small_batches = make_store(store.client, store.settings.model_copy(update={"publish_batch_users": 2}))
    world.publish(small_batches, "v1")
    last = int(world.log.user_ids[-1])  # written in the last batch
    assert small_batches.client.exists(small_batches.keys.hist("v1", last))
    erased: list[int] = []

    def erase_after_first_batch(done: int, total: int) -> None:
        if not erased:
            erased.append(small_batches.delete_user(last))

    small_batches.publish(
        "v2", world.log, world.catalog, world.ds.users, world.log.global_state(world.t, HALF_LIFE), progress=erase_after_first_batch
    )
    assert erased and small_batches.active_version() == "v2"
    assert small_batches.read_user_state(last, world.t, world.catalog).is_cold
    assert not any(small_batches.client.exists(key) for key in (small_batches.keys.hist("v2", last), small_batches.keys.profile("v2", last)))
    assert str(last).encode() not in small_batches.client.smembers(small_batches.keys.users("v2"))


def test_a_server_that_keeps_nothing_on_disk_is_told_apart(embedded_redis: EmbeddedRedis) -> None:
    """`homepage serve` warns when a restart would lose every acknowledged event: no AOF and no snapshots."""
    store = RedisStore.from_socket(embedded_redis.start(), f"t{uuid.uuid4().hex[:8]}")
    before = store.client.config_get("appendonly")["appendonly"], store.client.config_get("save")["save"]
    try:
        assert before[0] == "yes" and not store.keeps_nothing_on_disk()  # the embedded server appends every write
        store.client.config_set("appendonly", "no")
        store.client.config_set("save", "")
        assert store.keeps_nothing_on_disk()
        store.client.config_set("save", "3600 1")
        assert not store.keeps_nothing_on_disk()  # snapshots alone keep something
    finally:
        store.client.config_set("save", before[1])
        store.client.config_set("appendonly", before[0])
        store.close()


def test_a_page_read_before_an_erasure_is_not_cached_when_new_activity_refills_the_history(store: RedisStore, world: World) -> None:
    """The cache write compared the history's length only: erased, then as many new events as the user had
    before, and the page built from the erased history was cached (and served) as if nothing had changed."""
    world.publish(store, "v1")
    now = world.t + 100
    u = next(int(u) for u, r in zip(world.ds.users["user_id"], world.ds.users["region"]) if pd.isna(r) and int(u) in world.log.user_ids)
    _, state, read = store.read_request(u, now, world.catalog, "f", "v1")
    assert state is not None and len(state) > 0 and (read.region, read.genres) == (b"", b"")  # no profile: the history tells
    store.delete_user(u)
    back = [Event(user_id=u, title_id=int(world.catalog.title_ids[i % 5]), kind="play", ts=world.t + 10 + i, progress=0.5) for i in range(len(state))]
    store.append_events(back, world.catalog)
    assert store.client.strlen(store.keys.hist("v1", u)) == read.hist_len  # the same length, another history
    assert not store.page_served(u, "f", b"page of the erased history", 60, None, "v1", read)
    assert store.read_request(u, now, world.catalog, "f", "v1")[0] is None


def test_a_region_whose_decayed_sums_all_underflowed_publishes_and_reads(store: RedisStore, world: World) -> None:
    """A region whose every event is over a thousand half-lives old (ml-latest-small spans 22 years; the half-life is a
    week) has counts but decayed sums of exactly 0: publish wrote an empty hash (redis-py refuses HSET with no pairs),
    and a world read must not take the missing hash for a lost one."""
    import dataclasses

    g = world.log.global_state(world.t, HALF_LIFE)
    r = "old-region"
    counts = np.zeros(len(world.catalog), np.int64)
    counts[0] = 2
    g = dataclasses.replace(
        g, region_counts={**g.region_counts, r: counts}, region_decayed={**g.region_decayed, r: np.zeros(len(world.catalog))}
    )
    store.publish("v1", world.log, world.catalog, world.ds.users, g, None)
    read = store.read_global_state(world.t, world.catalog, "v1")
    assert read.region_counts[r][0] == 2 and not read.region_decayed[r].any()


def test_a_start_waits_for_a_busy_embedded_redis_instead_of_starting_a_second(tmp_path: Path) -> None:
    """A server that accepts but does not answer (saving as it shuts down, a slow command) made a starting process
    remove its socket and start a second server on the same data files (a restart overlapping the old serve's
    exit). Now the start waits for it to answer, as a revive does, and connects to the same server."""
    import threading

    emb = EmbeddedRedis(tmp_path / "r")
    first = RedisStore.from_socket(emb.start())
    try:
        first.client.set("hp:probe", b"kept")
        pid = int(first.client.info("server")["process_id"])
        busy = threading.Thread(target=RedisStore.from_socket(emb.socket_path).client.execute_command, args=("DEBUG", "SLEEP", "1.6"))
        busy.start()
        time.sleep(0.3)
        second = EmbeddedRedis(tmp_path / "r")
        other = RedisStore.from_socket(second.start())
        busy.join()
        try:
            assert not second.started_here and int(other.client.info("server")["process_id"]) == pid
            assert other.client.get("hp:probe") == b"kept"
        finally:
            other.close()
            second.stop()
    finally:
        first.close()
        emb.stop()


_START_AND_LEAVE = """
import os, sys
from homepage.embedded_redis import EmbeddedRedis, _forget
e = EmbeddedRedis(sys.argv[1])
e.start()
_forget(e._server)  # leave it running, as a process that started it and left while others were on it would
os._exit(0)
"""


def test_serve_stops_at_exit_a_server_another_process_started_after_its_own_died(tmp_path: Path) -> None:
    """`homepage serve` started the embedded Redis; it was killed and another process (a worker's connect, a CLI)
    started it again before serve's watcher did. serve's handle then named a dead server, so its exit stopped
    nothing, the new one was never "found", and it ran on with no one to stop it. Now serve treats it as found:
    the last to leave stops it, saving."""
    import os
    import signal
    import subprocess
    import sys

    from redis_fixtures import socket_answers, stop_leftover_server

    emb = EmbeddedRedis(tmp_path / "r")
    sock = emb.start()
    store = RedisStore.from_socket(sock)
    pid = int(store.client.info("server")["process_id"])
    store.close()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while socket_answers(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run([sys.executable, "-c", _START_AND_LEAVE, str(tmp_path / "r")], check=True, timeout=60)
    other = RedisStore.from_socket(sock)
    try:
        assert int(other.client.info("server")["process_id"]) != pid
        other.client.set("hp:kept", b"1")
    finally:
        other.close()
    try:
        emb.stop(found_too=True)  # as serve leaves
        assert not socket_answers(sock), "the server another process started outlived the serve that was its last client"
        again = EmbeddedRedis(tmp_path / "r")
        back = RedisStore.from_socket(again.start())
        assert back.client.get("hp:kept") == b"1"  # saved as it stopped
        back.close()
        again.stop()
    finally:
        stop_leftover_server(sock)  # not left running for the rest of the suite
