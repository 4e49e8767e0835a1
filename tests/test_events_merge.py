"""Folding the API's acknowledged events into a dataset, so a republish and training keep them (real Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from redis_fixtures import write_small_dataset
from typer.testing import CliRunner

from homepage.catalog import Catalog
from homepage.dataset import load_dataset, read_manifest, write_dataset
from homepage.domain import Event
from homepage.errors import HomepageError
from homepage.events_merge import (
    MERGED_KEY,
    merge_mark,
    merge_stream_into_dataset,
    stream_events,
    stream_reset,
    unmerged_lost,
)
from homepage.publish import publish_dataset
from homepage.settings import Settings, get_settings
from homepage.store import RedisStore


def _entry(sid: str, **event: object) -> tuple[str, int, str]:
    return sid, int(event["user_id"]), Event.model_validate(event).model_dump_json(exclude_none=True)  # type: ignore[arg-type]


def test_stream_entries_become_dataset_rows_after_the_mark() -> None:
    entries = [
        _entry("5-0", user_id=1, title_id=10, kind="play", ts=100, progress=0.5),
        _entry("10-0", user_id=1, title_id=20, kind="rating", ts=101, stars=4.5),
        _entry("10-1", user_id=2, title_id=30, kind="play", ts=102, page_id="p1", row_index=1, col_index=3, variant_id="v", propensity=0.25),
        _entry("11-0", user_id=2, title_id=30, kind="impression", ts=103),
    ]
    got = stream_events(entries, after="5-0")
    assert got.last_id == "11-0"
    f = got.frame
    assert f["ts"].tolist() == [101, 102, 103] and f["kind"].tolist() == [1, 0, 2]
    assert f["stars"].tolist()[0] == 4.5 and np.isnan(f["progress"].tolist()[0])
    assert f[["row_index", "col_index"]].values.tolist() == [[-1, -1], [1, 3], [-1, -1]]
    assert pd.isna(f["page_id"]).tolist() == [True, False, True] and f["page_id"][1] == "p1"
    assert f["propensity"].tolist()[1] == 0.25
    assert stream_events(entries, after="11-0").last_id is None
    # ids compare as numbers, not strings: "9-0" is before "10-0"
    assert len(stream_events(entries, after="9-0").frame) == 3


def test_a_broken_stream_entry_is_an_error_naming_it() -> None:
    with pytest.raises(HomepageError, match="entry 7-1"):
        stream_events([("7-1", 1, json.dumps({"user_id": 1, "title_id": 10, "kind": "rating", "ts": 5}))])  # no stars


def test_a_dataset_merged_from_another_stream_is_refused() -> None:
    extra = {MERGED_KEY: {"stream": "a:events", "last_id": "3-0", "events": 2}}
    assert merge_mark(extra, "a:events") == extra[MERGED_KEY]
    with pytest.raises(HomepageError, match="'a:events', not 'b:events'"):
        merge_mark(extra, "b:events")


def test_acknowledged_events_survive_a_republish_after_a_merge(store: RedisStore, tmp_path: Path) -> None:
    ds_dir = write_small_dataset(tmp_path / "ds")
    np.savez(ds_dir / "truth.npz", kept=np.arange(5))  # arrays beside the tables are kept
    before = load_dataset(ds_dir)
    v1 = publish_dataset(store, ds_dir).meta.version
    catalog = Catalog.from_frames(before.titles, before.variants)
    t = int(before.events["ts"].max()) + 60
    store.set_profile(777, "EU", ["Drama"], v1)  # a new user who set a region, then played
    events = [
        Event(user_id=777, title_id=10, kind="play", ts=t, progress=0.4),
        Event(user_id=3, title_id=20, kind="rating", ts=t + 1, stars=3.5),
        Event(user_id=3, title_id=30, kind="play", ts=t + 2, progress=0.9, page_id="pg", row_index=0, col_index=2, propensity=0.5),
    ]
    assert store.append_events(events, catalog) == 3

    r = merge_stream_into_dataset(ds_dir, store)
    assert (r.added, r.new_users, r.total_events) == (3, 1, len(before.events) + 3)
    after = load_dataset(ds_dir)
    tail = after.events[after.events["ts"] >= t]
    assert tail[["user_id", "title_id", "kind", "ts"]].values.tolist() == [[777, 10, 0, t], [3, 20, 1, t + 1], [3, 30, 0, t + 2]]
    assert tail["progress"].tolist()[2] == pytest.approx(0.9) and tail["stars"].tolist()[1] == 3.5
    assert tail[["row_index", "col_index"]].values.tolist()[2] == [0, 2] and tail["page_id"].iloc[2] == "pg"
    assert len(after.events) == len(before.events) + 3  # nothing of the old dataset lost
    new_user = after.users[after.users["user_id"] == 777]
    assert new_user[["region", "created"]].values.tolist() == [["EU", t]]
    assert np.load(ds_dir / "truth.npz")["kept"].tolist() == [0, 1, 2, 3, 4]
    assert read_manifest(ds_dir).extra[MERGED_KEY]["events"] == 3

    # nothing new: the dataset is not rewritten
    stamp = (ds_dir / "manifest.json").stat().st_mtime_ns
    assert merge_stream_into_dataset(ds_dir, store).added == 0
    assert (ds_dir / "manifest.json").stat().st_mtime_ns == stamp
    assert store.append_events([Event(user_id=3, title_id=40, kind="play", ts=t + 3, progress=0.2)], catalog) == 1
    again = merge_stream_into_dataset(ds_dir, store)
    assert (again.added, again.new_users, again.total_events) == (1, 0, len(before.events) + 4)
    assert read_manifest(ds_dir).extra[MERGED_KEY]["events"] == 4

    # the republished version has the acknowledged plays in the users' state (continue watching needs them)
    v2 = publish_dataset(store, ds_dir).meta.version
    assert v2 != v1
    u3 = store.read_user_state(3, t + 10, catalog, version=v2)
    last = dict(zip(u3.title_ids.tolist(), u3.progress.tolist()))
    assert last[30] == pytest.approx(0.9) and last[40] == pytest.approx(0.2)
    u777 = store.read_user_state(777, t + 10, catalog, version=v2)
    assert u777.title_ids.tolist() == [10] and u777.region == "EU"


def test_merge_events_command(store: RedisStore, store_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from homepage.cli import _register, app

    ds_dir = write_small_dataset(tmp_path / "ds")
    ds = load_dataset(ds_dir)
    publish_dataset(store, ds_dir)
    t = int(ds.events["ts"].max()) + 60
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t, progress=0.3)], Catalog.from_frames(ds.titles, ds.variants))
    monkeypatch.setenv("HOMEPAGE_KEY_PREFIX", store_settings.key_prefix)
    monkeypatch.setenv("HOMEPAGE_EMBEDDED_DIR", str(store_settings.embedded_dir))
    if store_settings.redis_url:
        monkeypatch.setenv("REDIS_URL", store_settings.redis_url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        _register()
        res = CliRunner().invoke(app, ["logs", "merge-events", str(ds_dir)])
        assert res.exit_code == 0, res.output
        assert "+1 events, 0 new users, 0 events of erased users dropped" in res.output
        res = CliRunner().invoke(app, ["logs", "merge-events", str(ds_dir)])
        assert res.exit_code == 0 and "nothing new" in res.output
    finally:
        get_settings.cache_clear()
    # the real command line: a clear error naming the directory, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "homepage", "logs", "merge-events", str(tmp_path / "nothing")],
        capture_output=True, text=True, check=False, env={**os.environ, "HOMEPAGE_KEY_PREFIX": store_settings.key_prefix}, timeout=120,
    )
    assert proc.returncode != 0 and f"{tmp_path / 'nothing'}: not a dataset" in proc.stderr and "Traceback" not in proc.stderr


def test_entries_lost_are_what_the_tally_expects_after_the_mark_minus_what_is_there() -> None:
    mark = {"last_id": "9-0", "added": 10, "erased": 1}
    assert unmerged_lost(mark, {"added": 15, "erased": 1}, read=5) == 0
    assert unmerged_lost(mark, {"added": 15, "erased": 1}, read=2) == 3  # trimmed
    assert unmerged_lost(mark, {"added": 15, "erased": 3}, read=3) == 0  # two erased since
    assert unmerged_lost(mark, {"added": 15, "erased": 1}, read=7) == 0  # more arrived while reading
    assert unmerged_lost(None, {"added": 8, "erased": 2}, read=5) == 1  # a first merge sees losses too
    assert unmerged_lost({"last_id": "9-0"}, {"added": 99, "erased": 0}, read=0) == 0  # a mark without a tally


def _published(store: RedisStore, tmp_path: Path) -> tuple[Path, Catalog, int]:
    ds_dir = write_small_dataset(tmp_path / "ds")
    ds = load_dataset(ds_dir)
    publish_dataset(store, ds_dir)
    return ds_dir, Catalog.from_frames(ds.titles, ds.variants), int(ds.events["ts"].max()) + 60


def test_the_store_reads_the_stream_after_an_id(store: RedisStore, tmp_path: Path) -> None:
    _, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + i) for i in range(4)], catalog)
    every, tally = store.events_since(None)
    ids = [sid for sid, *_ in every]
    assert len(ids) == 4 and (tally["added"], tally["erased"]) == (4, 0) and len(str(tally["epoch"])) == 16  # the publish named it
    later, _ = store.events_since(ids[1])
    assert [sid for sid, *_ in later] == ids[2:] and [json.loads(e)["ts"] for _, _, e, _ in later] == [t + 2, t + 3]
    assert [q for *_, q in every] == [1, 2, 3, 4]  # the user's sequence number of each
    store.delete_user(1)
    assert store.events_since(None) == ([], {"added": 4, "erased": 4, "epoch": tally["epoch"]})


def test_a_stream_trimmed_past_the_mark_is_refused_unless_accepted(store: RedisStore, tmp_path: Path) -> None:
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 1
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + 1 + i) for i in range(5)], catalog)
    store.client.xtrim(store.keys.events, maxlen=1, approximate=False)  # the cap took four unmerged events
    before = load_dataset(ds_dir).events
    with pytest.raises(HomepageError, match="lost 4 entries after .* before they were merged.*--accept-gap"):
        merge_stream_into_dataset(ds_dir, store)
    assert len(load_dataset(ds_dir).events) == len(before)  # refused: the dataset is as it was
    r = merge_stream_into_dataset(ds_dir, store, accept_gap=True)
    assert r.added == 1 and load_dataset(ds_dir).events["ts"].max() == t + 5


def test_a_stream_that_started_over_is_refused_unless_accepted(store: RedisStore, tmp_path: Path) -> None:
    """Redis restarted empty (or flushed) after a merge and published again: the events acknowledged in between are gone
    without a trace in the stream; the merge says so instead of merging what is left as if whole, also once the new
    stream holds more entries than the mark counted."""
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + i) for i in range(3)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 3
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + 10 + i) for i in range(4)], catalog)  # never merged
    for key in list(store.client.scan_iter(match=f"{store.keys.prefix}:*")):  # the restart: everything gone
        store.client.unlink(key)
    store = RedisStore(store.client, store.keys.prefix, settings=store.settings)  # a fresh process: nothing cached
    publish_dataset(store, ds_dir)  # what the operator does first (events are refused until then)
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t + 20 + i) for i in range(5)], catalog)  # more than the 3 marked
    before = load_dataset(ds_dir).events
    with pytest.raises(HomepageError, match=r"started over since the last merge .*under another epoch.*--accept-gap"):
        merge_stream_into_dataset(ds_dir, store)
    assert len(load_dataset(ds_dir).events) == len(before)
    assert merge_stream_into_dataset(ds_dir, store, accept_gap=True).added == 5
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t + 30)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 1  # the mark holds the new epoch: the next merge is plain


def test_a_stream_restored_from_an_older_snapshot_is_refused_saying_so(store: RedisStore, tmp_path: Path) -> None:
    """Redis restored from a snapshot taken before the last merge: the same stream (same epoch), counting fewer entries.
    The refusal said "under another epoch ... restarted without persistence or flushed", neither of which happened."""
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t)], catalog)
    snapshot = {key: store.client.dump(key) for key in (store.keys.events, store.keys.events_tally)}
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + 1 + i) for i in range(3)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 4
    for key, data in snapshot.items():  # the restore: the stream and its tally as they were
        store.client.restore(key, 0, data, replace=True)
    with pytest.raises(HomepageError, match=r"started over since the last merge .*under the same epoch\): Redis went back in time") as e:
        merge_stream_into_dataset(ds_dir, store)
    assert "another epoch" not in str(e.value) and "flushed" not in str(e.value)


def test_a_mark_from_before_epochs_is_checked_by_its_counts() -> None:
    assert stream_reset({"added": 5, "erased": 0}, {"added": 3, "erased": 0, "epoch": "e2"})
    assert not stream_reset({"added": 5, "erased": 0}, {"added": 9, "erased": 0, "epoch": "e2"})
    assert stream_reset({"added": 5, "erased": 0, "epoch": "e1"}, {"added": 9, "erased": 0, "epoch": "e2"})
    assert not stream_reset({"added": 5, "erased": 0, "epoch": "e1"}, {"added": 9, "erased": 1, "epoch": "e1"})
    assert not stream_reset(None, {"added": 0, "erased": 0})


def test_profiles_set_through_the_api_reach_the_dataset_and_the_next_version(store: RedisStore, tmp_path: Path) -> None:
    ds_dir, catalog, t = _published(store, tmp_path)
    before = load_dataset(ds_dir).users.set_index("user_id")
    store.set_profile(3, "ZZ", ["Comedy"])  # an existing user moves and picks a genre
    store.set_profile(888, "EU", ["Drama", "Horror"])  # a new user with a profile and no events yet
    r = merge_stream_into_dataset(ds_dir, store)
    assert r.changed and (r.added, r.new_users) == (0, 1)
    users = load_dataset(ds_dir).users.set_index("user_id")
    assert users.loc[3, "region"] == "ZZ" and list(users.loc[3, "favourite_genres"]) == ["Comedy"]
    assert users.loc[888, "region"] == "EU" and list(users.loc[888, "favourite_genres"]) == ["Drama", "Horror"]
    assert users.loc[888, "created"] > t
    same = users.loc[before.index.difference([3])]
    assert (same["region"].fillna("-") == before.loc[same.index, "region"].fillna("-")).all()
    assert all(len(g) == 0 for g in same["favourite_genres"])
    v2 = publish_dataset(store, ds_dir).meta.version
    u3 = store.read_user_state(3, t, catalog, version=v2)
    assert (u3.region, u3.favourite_genres) == ("ZZ", ("Comedy",))
    u888 = store.read_user_state(888, t, catalog, version=v2)
    assert (u888.region, u888.favourite_genres) == ("EU", ("Drama", "Horror"))
    assert not merge_stream_into_dataset(ds_dir, store).changed


def test_an_erased_user_stays_erased_through_merge_and_republish(store: RedisStore, tmp_path: Path) -> None:
    """Erasure is a stream position: what a user did before it goes from every dataset, what they do after stays (whatever its ts)."""
    ds_dir, catalog, t = _published(store, tmp_path)
    untouched = tmp_path / "copy"
    write_small_dataset(untouched)  # the same data, never merged
    store.append_events([Event(user_id=3, title_id=10, kind="play", ts=t, progress=0.5)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 1
    n3 = int((load_dataset(ds_dir).events["user_id"] == 3).sum())
    assert n3 > 1
    store.delete_user(3)
    store.delete_user(3)  # a retried DELETE: erasing nothing more, counting nothing more
    assert {k: v for k, v in store.events_since(None)[1].items() if k != "epoch"} == {"added": 1, "erased": 1}
    back = t - 86_400  # back after the erasure, with a timestamp older than what was erased
    store.append_events([Event(user_id=3, title_id=20, kind="play", ts=back, progress=0.1)], catalog)
    r = merge_stream_into_dataset(ds_dir, store)
    assert (r.added, r.erased_events) == (1, n3)
    ds = load_dataset(ds_dir)
    mine = ds.events[ds.events["user_id"] == 3]
    assert mine[["title_id", "ts"]].values.tolist() == [[20, back]]  # only what came after the erasure
    assert ds.users[ds.users["user_id"] == 3]["created"].tolist() == [back]
    assert not merge_stream_into_dataset(ds_dir, store).changed  # stable: the erasure is applied once
    for source in (ds_dir, untouched):  # a dataset never merged since the erasure does not bring them back
        v = publish_dataset(store, source).meta.version
        state = store.read_user_state(3, t + 10, catalog, version=v)
        assert state.title_ids.tolist() == ([20] if source == ds_dir else [])


def test_tag_events_survive_a_merge_and_an_erased_users_tags_leave(store: RedisStore, tmp_path: Path) -> None:
    ds_dir, catalog, t = _published(store, tmp_path)
    ds = load_dataset(ds_dir)
    tags = pd.DataFrame({"user_id": [3, 5, 3], "title_id": [10, 20, 30], "tag": ["a", "b", "c"], "ts": [1, 2, 3]})
    write_dataset(ds_dir, source=ds.manifest.source, events=ds.events, titles=ds.titles, users=ds.users, variants=ds.variants, tag_events=tags)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t, progress=0.5)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 1
    kept = load_dataset(ds_dir).tag_events
    assert kept is not None and kept.to_dict("list") == tags.to_dict("list")
    store.delete_user(3)
    assert merge_stream_into_dataset(ds_dir, store).changed
    after = load_dataset(ds_dir)
    left = after.tag_events
    assert left is not None and left["user_id"].tolist() == [5] and left["tag"].tolist() == ["b"]
    by_title = dict(zip(after.titles["title_id"], after.titles["tags"]))  # user 3's tag text is gone from the titles too
    assert list(by_title[10]) == [] and list(by_title[20]) == ["b"] and list(by_title[30]) == []


def test_erasure_positions_decide_what_is_left_out() -> None:
    from homepage.erasure import drop_users, erased_entry, pending_erasures

    erasures = {3: "100-0", 4: "250-2"}
    assert pending_erasures(erasures, None) == {3, 4}  # never merged: all of them
    assert pending_erasures(erasures, "200-0") == {4}  # merged since user 3's erasure
    assert pending_erasures(erasures, "250-2") == {4}
    assert erased_entry(4, "250-2", erasures) and not erased_entry(4, "250-3", erasures) and not erased_entry(5, "1-0", erasures)
    # by sequence number when both have one: an entry before the position but numbered after the erasure's is new activity
    assert not erased_entry(4, "240-0", erasures, seq=8, erased_seqs={4: 7}) and erased_entry(4, "260-0", erasures, seq=7, erased_seqs={4: 7})
    assert erased_entry(4, "240-0", erasures, seq=None, erased_seqs={4: 7}) and erased_entry(4, "240-0", erasures, seq=8)
    ev = pd.DataFrame({"user_id": [3, 4, 5, 4], "ts": [1, 2, 3, 4]})
    us = pd.DataFrame({"user_id": [3, 4, 5], "region": ["a", "b", "c"], "created": [0, 0, 0]})
    out = drop_users(ev, us, {4})
    assert out.events["user_id"].tolist() == [3, 5] and out.users["user_id"].tolist() == [3, 5]
    assert (out.events_dropped, out.users_dropped) == (2, 1)
    # a merge reading entries that DELETE /users was removing skips them, and its mark still moves past them
    entries = [
        _entry("240-0", user_id=4, title_id=10, kind="play", ts=5),
        _entry("260-0", user_id=4, title_id=20, kind="play", ts=6),
    ]
    got = stream_events(entries, None, erasures)
    assert got.frame["title_id"].tolist() == [20] and got.last_id == "260-0"


def test_an_accepted_gap_with_nothing_left_moves_the_mark(store: RedisStore, tmp_path: Path) -> None:
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 1
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t + i) for i in range(3)], catalog)
    store.client.xtrim(store.keys.events, maxlen=0, approximate=False)  # the cap took everything unmerged
    with pytest.raises(HomepageError, match="lost 3 entries"):
        merge_stream_into_dataset(ds_dir, store)
    r = merge_stream_into_dataset(ds_dir, store, accept_gap=True)
    assert r.changed and r.added == 0
    assert not merge_stream_into_dataset(ds_dir, store).changed  # no error again: the loss was accepted once


def test_a_batch_interrupted_before_the_stream_is_finished_and_merged(store: RedisStore, tmp_path: Path) -> None:
    """Step 1 (the user's slot) committed, the stream step failed and was never retried: the merge finishes it first."""
    from homepage.store import StoreUnavailable

    class GlobalStepDown(RedisStore):
        def _step_global_slot(self, outboxes: object, token: str, active: str | None = None) -> dict[int, int]:
            raise StoreUnavailable("injected: the global slot's node is down")

    ds_dir, catalog, t = _published(store, tmp_path)
    down = GlobalStepDown(store.client, store.keys.prefix, settings=store.settings)
    with pytest.raises(StoreUnavailable, match="injected"):
        down.append_events([Event(user_id=5, title_id=10, kind="play", ts=t, progress=0.7)], catalog)
    assert store.events_since(None)[0] == []  # acknowledged to nobody, but in the user's state already
    r = merge_stream_into_dataset(ds_dir, store)
    assert r.added == 1
    ds = load_dataset(ds_dir)
    assert ds.events[ds.events["ts"] == t][["user_id", "title_id"]].values.tolist() == [[5, 10]]


def test_a_batch_in_flight_at_the_erasure_does_not_come_back_as_new_activity(store: RedisStore, tmp_path: Path) -> None:
    """The user step committed before DELETE, the stream step after it: the event is refused, not kept as post-erasure."""

    class EraseBetweenSteps(RedisStore):
        def _step_global_slot(self, outboxes: object, token: str, active: str | None = None) -> dict[int, int]:
            store.delete_user(3)
            return super()._step_global_slot(outboxes, token, active)  # type: ignore[arg-type]

    ds_dir, catalog, t = _published(store, tmp_path)
    racing = EraseBetweenSteps(store.client, store.keys.prefix, settings=store.settings)
    racing.append_events([Event(user_id=3, title_id=20, kind="play", ts=t, progress=0.3)], catalog)
    assert [e for e in store.events_since(None)[0] if e[1] == 3] == []
    merge_stream_into_dataset(ds_dir, store)
    assert not (load_dataset(ds_dir).events["user_id"] == 3).any()
    # afterwards the user's events count again, as new activity
    assert store.append_events([Event(user_id=3, title_id=30, kind="play", ts=t + 1, progress=0.2)], catalog) == 1
    assert merge_stream_into_dataset(ds_dir, store).added == 1


def test_an_erasure_before_any_stream_or_in_the_old_format_still_counts(store: RedisStore, tmp_path: Path) -> None:
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t)], catalog)
    merge_stream_into_dataset(ds_dir, store)
    store.client.delete(store.keys.events)  # e.g. a Redis restarted without persistence
    before = int(time.time() * 1000)
    store.delete_user(3)
    at = store.erasures()[3]
    assert before - 1000 <= int(at.split("-")[0]) <= int(time.time() * 1000) + 1000  # the server's clock
    v = publish_dataset(store, ds_dir).meta.version
    assert store.read_user_state(3, t, catalog, version=v).is_cold
    store.client.hset(store.keys.erased, "4", "1700000000")  # unix seconds, as a80856e wrote them
    assert store.erasures()[4] == "1700000000000-0"


def test_a_profile_set_through_the_api_survives_publish_rollback_and_a_worker_on_the_old_version(store: RedisStore, tmp_path: Path) -> None:
    """A review lost acknowledged PUT /users: written into the version a worker still served, then replaced by a publish or a rollback."""
    ds_dir, catalog, t = _published(store, tmp_path)
    v1 = store.active_version()
    v2 = publish_dataset(store, ds_dir).meta.version  # not merged since: the dataset knows nothing of what follows
    store.set_profile(5, "ZZ", ["War"], v1)  # a worker still on v1 answers the PUT
    store.patch_profile(6, {"favourite_genres": ["Drama"]}, v1)  # keeps the region user 6 sees
    assert store.get_profile(5, v2) == ("ZZ", ("War",))
    v3 = publish_dataset(store, ds_dir).meta.version
    region6 = load_dataset(ds_dir).users.set_index("user_id").loc[6, "region"]
    for v in (v2, v3):
        u5, u6 = store.read_user_state(5, t, catalog, version=v), store.read_user_state(6, t, catalog, version=v)
        assert (u5.region, u5.favourite_genres) == ("ZZ", ("War",))
        assert u6.favourite_genres == ("Drama",) and u6.region == region6
    store.rollback()
    assert store.active_version() == v2 and store.get_profile(5) == ("ZZ", ("War",))
    r = merge_stream_into_dataset(ds_dir, store)
    users = load_dataset(ds_dir).users.set_index("user_id")
    assert r.changed and users.loc[5, "region"] == "ZZ" and list(users.loc[5, "favourite_genres"]) == ["War"]
    store.delete_user(5)
    assert store.get_profile(5) is None and not store.client.exists(store.keys.api_profile(5))


def test_a_datasets_profiles_stay_with_its_versions(store: RedisStore, tmp_path: Path) -> None:
    """Another dataset published next does not inherit them, and a rollback brings them back (a review of the first fix)."""
    from homepage.dataset import write_dataset

    ds_dir, catalog, t = _published(store, tmp_path)
    v1 = store.active_version()
    ds = load_dataset(ds_dir)
    with_region = int(ds.users.dropna(subset=["region"])["user_id"].iloc[0])
    region = store.get_profile(with_region)[0]
    assert region is not None
    write_dataset(tmp_path / "b", source="b", events=ds.events, titles=ds.titles, users=ds.users.assign(region=None), variants=ds.variants)
    publish_dataset(store, tmp_path / "b")
    assert store.read_user_state(with_region, t, catalog).region is None and store.get_profile(with_region) is None
    assert with_region not in store.profiles() and not merge_stream_into_dataset(tmp_path / "b", store).changed
    store.rollback()
    assert store.active_version() == v1 and store.read_user_state(with_region, t, catalog).region == region


def test_a_store_written_by_older_code_keeps_serving_its_profiles(store: RedisStore, tmp_path: Path) -> None:
    """Before 2026-12-07 a PUT wrote into the version: that profile is still served, and a PATCH of the genres keeps its region."""
    ds_dir, catalog, t = _published(store, tmp_path)
    v = store.active_version()
    store.client.hset(store.keys.profile(v, 777), mapping={"region": "EU", "genres": '["Drama"]'})  # as old code's PUT left it
    assert store.read_user_state(777, t, catalog).region == "EU" and store.get_profile(777) == ("EU", ("Drama",))
    store.patch_profile(777, {"favourite_genres": ["War"]})
    assert store.get_profile(777) == ("EU", ("War",)) and store.read_user_state(777, t, catalog).favourite_genres == ("War",)
    store.patch_profile(777, {"region": None})
    assert store.get_profile(777) == (None, ("War",))
    merge_stream_into_dataset(ds_dir, store)
    users = load_dataset(ds_dir).users.set_index("user_id")
    assert pd.isna(users.loc[777, "region"]) and list(users.loc[777, "favourite_genres"]) == ["War"]


def test_profile_writes_reach_every_version_and_need_no_published_one(store: RedisStore, tmp_path: Path) -> None:
    """A review of the override: pages cached under a third version kept the old profile; GET/PATCH failed before any publish;
    a dataset profile that d7f53d1 wrote into the shared key (no api mark) must not pass for the user's own."""
    assert store.get_profile(1) is None
    store.patch_profile(1, {"region": "EU"})  # nothing published yet
    assert store.get_profile(1) == ("EU", ())
    ds_dir, catalog, t = _published(store, tmp_path)
    v1 = store.active_version()
    v2 = publish_dataset(store, ds_dir).meta.version
    v3 = publish_dataset(store, ds_dir).meta.version
    for v in (v1, v2, v3):
        store.client.hset(store.keys.page(v, 2), "f", b"page")
    store.set_profile(2, "ZZ", [], v2)  # a worker on v2, v3 active, v1 kept for a rollback
    assert not any(store.client.exists(store.keys.page(v, 2)) for v in (v1, v2, v3))
    store.client.hset(store.keys.api_profile(3), mapping={"region": "OLD", "genres": "[]"})  # as d7f53d1's publish left it
    published = load_dataset(ds_dir).users.set_index("user_id").loc[3, "region"]
    assert store.read_user_state(3, t, catalog).region == (None if pd.isna(published) else published)
    assert store.get_profile(3) != ("OLD", ())


def test_merging_another_dataset_takes_only_what_users_set(store: RedisStore, tmp_path: Path) -> None:
    """The active version's published profiles belong to the dataset it came from: merged into another, they added users."""
    from homepage.dataset import write_dataset

    ds_dir, _, _ = _published(store, tmp_path)
    ds = load_dataset(ds_dir)
    few = ds.users.iloc[:3]
    write_dataset(tmp_path / "few", source="few", events=ds.events[ds.events["user_id"].isin(few["user_id"])], titles=ds.titles, users=few, variants=ds.variants)
    store.set_profile(int(few["user_id"].iloc[0]), "ZZ", ["Drama"])
    r = merge_stream_into_dataset(tmp_path / "few", store)
    users = load_dataset(tmp_path / "few").users.set_index("user_id")
    assert r.new_users == 0 and len(users) == 3 and users.loc[int(few["user_id"].iloc[0]), "region"] == "ZZ"


def test_a_batch_an_erasure_kept_survives_the_merge_the_next_publish_and_the_next_merge(store: RedisStore, tmp_path: Path) -> None:
    """A batch whose first step came after the erasure's, but whose stream entry is before the erasure's position
    (the stream generated nothing after it): the merge takes it, and neither a publish nor a later merge, both of
    which leave out what a dataset holds of users erased after its mark, drops it (the merge records the erasures
    it applied)."""
    ds_dir, catalog, t = _published(store, tmp_path)
    u, other = 1, 2
    play = Event(user_id=u, title_id=10, kind="play", ts=t, progress=0.4)
    mark = store._mark_erasure

    def ingest_then_mark(user: int, seq: int) -> tuple[int, int]:
        assert store.append_events([play], catalog) == 1
        return mark(user, seq)

    store._mark_erasure = ingest_then_mark  # type: ignore[method-assign]
    store.delete_user(u)
    store._mark_erasure = mark  # type: ignore[method-assign]

    def rows_of_u() -> int:
        return int((load_dataset(ds_dir).events["user_id"] == u).sum())

    merge_stream_into_dataset(ds_dir, store)
    assert rows_of_u() == 1  # the kept play, and nothing from before the erasure
    v = publish_dataset(store, ds_dir).meta.version
    assert len(store.read_user_state(u, t + 100, catalog, v)) == 1 and store.client.sismember(store.keys.users(v), str(u))
    store.append_events([Event(user_id=other, title_id=10, kind="play", ts=t + 5, progress=0.2)], catalog)
    merge_stream_into_dataset(ds_dir, store)
    assert rows_of_u() == 1
    # erased again: the record of the first erasure no longer covers the user (one position for both: the next test)
    store.delete_user(u)
    merge_stream_into_dataset(ds_dir, store)
    assert rows_of_u() == 0
    v = publish_dataset(store, ds_dir).meta.version
    assert store.read_user_state(u, t + 100, catalog, v).is_cold and not store.client.sismember(store.keys.users(v), str(u))


def test_a_user_erased_twice_at_one_stream_position_stays_erased(store: RedisStore, tmp_path: Path) -> None:
    """A user erased, back with a profile only (nothing reaches the stream), erased again: the second erasure has
    the first's position, and is still applied by the merge and the publish (erasures are counted)."""
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t, progress=0.2)], catalog)
    store.delete_user(1)
    merge_stream_into_dataset(ds_dir, store)
    store.set_profile(1, "ZZ", ["Drama"])  # back, with a profile the next merge takes
    merge_stream_into_dataset(ds_dir, store)
    assert 1 in load_dataset(ds_dir).users["user_id"].tolist()
    store.delete_user(1)
    assert len(set(store.erasures().values())) == len(store.erasures())  # (one user: its position)
    merge_stream_into_dataset(ds_dir, store)
    after = load_dataset(ds_dir)
    assert 1 not in after.users["user_id"].tolist() and not (after.events["user_id"] == 1).any()
    v = publish_dataset(store, ds_dir).meta.version
    assert store.get_profile(1, v) is None


def test_a_user_erased_while_a_publish_loads_its_dataset_stays_erased(store: RedisStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset was filtered with the erasures read first, and the writes checked against those read later:
    an erasure between the two (while the dataset, its event log and the bundle load: seconds) came back."""
    import homepage.publish as publish_module

    ds_dir, catalog, t = _published(store, tmp_path)
    assert store.read_user_state(3, t, catalog).title_ids.size > 0
    check = publish_module.check_publish_time
    erased: list[int] = []

    def erase_while_loading(at: int, first_ts: int | None, dataset: Path) -> None:
        if not erased:  # after the dataset was filtered, before the store writes the version
            erased.append(store.delete_user(3))
        check(at, first_ts, dataset)

    monkeypatch.setattr(publish_module, "check_publish_time", erase_while_loading)
    v = publish_dataset(store, ds_dir).meta.version
    assert erased and store.active_version() == v
    assert store.read_user_state(3, t, catalog, version=v).title_ids.size == 0
    assert not store.client.exists(store.keys.hist(v, 3)) and not store.client.exists(store.keys.profile(v, 3))
    assert b"3" not in store.client.smembers(store.keys.users(v))


def test_a_mark_from_before_epochs_does_not_blame_a_snapshot_for_a_flush(store: RedisStore, tmp_path: Path) -> None:
    """A dataset last merged before epochs existed, then Redis flushed: the stream's tally went back, and with no epoch in
    the mark the merge cannot tell a flush from a restored snapshot, so it names both instead of asserting the latter."""
    ds_dir, catalog, t = _published(store, tmp_path)
    store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t + i) for i in range(3)], catalog)
    assert merge_stream_into_dataset(ds_dir, store).added == 3
    manifest = json.loads((ds_dir / "manifest.json").read_text())
    del manifest["extra"][MERGED_KEY]["epoch"]  # as an older homepage wrote it
    (ds_dir / "manifest.json").write_text(json.dumps(manifest))
    for key in list(store.client.scan_iter(match=f"{store.keys.prefix}:*")):  # the flush
        store.client.unlink(key)
    store = RedisStore(store.client, store.keys.prefix, settings=store.settings)
    publish_dataset(store, ds_dir)
    store.append_events([Event(user_id=2, title_id=10, kind="play", ts=t + 20)], catalog)
    with pytest.raises(HomepageError, match="started over since the last merge") as e:
        merge_stream_into_dataset(ds_dir, store)
    assert "same epoch" not in str(e.value) and "flushed" in str(e.value) and "snapshot" in str(e.value), str(e.value)
