"""Folding the API's acknowledged events into a dataset, so a republish and training keep them (real Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from redis_fixtures import write_small_dataset
from typer.testing import CliRunner

from homepage.catalog import Catalog
from homepage.dataset import load_dataset, read_manifest
from homepage.domain import Event
from homepage.errors import HomepageError
from homepage.events_merge import (
    MERGED_KEY,
    merge_stream_into_dataset,
    merged_after,
    stream_events,
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
    assert merged_after(extra, "a:events") == "3-0"
    with pytest.raises(HomepageError, match="'a:events', not 'b:events'"):
        merged_after(extra, "b:events")


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
        assert "+1 events (0 new users)" in res.output
        res = CliRunner().invoke(app, ["logs", "merge-events", str(ds_dir)])
        assert res.exit_code == 0 and "no new events" in res.output
    finally:
        get_settings.cache_clear()
    # the real command line: a clear error naming the directory, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "homepage", "logs", "merge-events", str(tmp_path / "nothing")],
        capture_output=True, text=True, check=False, env={**os.environ, "HOMEPAGE_KEY_PREFIX": store_settings.key_prefix}, timeout=120,
    )
    assert proc.returncode != 0 and f"{tmp_path / 'nothing'}: not a dataset" in proc.stderr and "Traceback" not in proc.stderr
