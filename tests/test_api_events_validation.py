"""``POST /events`` validation over real HTTP (uvicorn, embedded Redis): one clear error naming the field,
and the same bounds as ``homepage ingest``; ``merge-events`` skips stream events from before those bounds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_fixtures import live_api_on_embedded, write_small_dataset

from homepage.catalog import Catalog
from homepage.dataset import load_dataset, read_manifest
from homepage.domain import Event
from homepage.events_merge import MERGED_KEY, merge_stream_into_dataset
from homepage.ingest.badrows import BadRows
from homepage.ingest.ratings import DelimitedFormat, read_ratings
from homepage.publish import publish_dataset
from homepage.store import RedisStore

API_KEY = "events-" + uuid.uuid4().hex
PLAY = {"user_id": 1, "title_id": 1, "kind": "play"}


@pytest.fixture(scope="module")
def http(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A live server on the embedded Redis, serving the small world; a client sending the API key."""
    with live_api_on_embedded(request, recent_world, serving_bundle, tmp_path_factory.mktemp("unpacked"), API_KEY) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
            yield c


FUTURE = int(time.time()) + 3 * 86_400


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"events": [PLAY] * 1001}, "events", "at most 1,000 events in a batch, not 1,001"),
        ({"events": [{**PLAY, "kind": "watch"}] * 1001}, "events", "at most 1,000 events in a batch, not 1,001"),
        ({"events": [PLAY] * 3 + [{**PLAY, "kind": "rating", "stars": 9}]}, "events.3.stars", "Input should be less than or equal to 5"),
        ({"events": [PLAY, {**PLAY, "kind": "rating"}]}, "events.1.stars", "Field required for a rating event"),
        ({"events": [PLAY, 3]}, "events.1", "Input should be a valid dictionary or object to extract fields from"),
        ({"events": []}, "events", "List should have at least 1 item after validation, not 0"),
        ({**PLAY, "kind": "rating"}, "stars", "Field required for a rating event"),
        ({**PLAY, "kind": "rating", "stars": 0}, "stars", "Input should be greater than or equal to 0.5"),
        ({**PLAY, "kind": "watch"}, "kind", "Input should be 'play', 'rating' or 'impression'"),
        ({"user_id": 1, "title_id": 1}, "kind", "Field required"),
        ({**PLAY, "colour": 1}, "colour", "Extra inputs are not permitted"),
        ([PLAY], "body", "Input should be a valid dictionary or object to extract fields from"),
        # an id without the clock in it: pytest-xdist's workers must collect the same ids, a second apart or not
        pytest.param({"events": [PLAY, {**PLAY, "ts": FUTURE}]}, "events.1.ts", f"{FUTURE} is more than a day after the server's time", id="ts-3-days-ahead"),
    ],
)
def test_a_bad_event_is_one_422_naming_its_field(http: httpx.Client, body: Any, field: str, message: str) -> None:
    r = http.post("/events", json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == [field], r.text
    assert errors[0]["message"].startswith(message)
    assert r.json()["detail"] == f"{field}: {errors[0]['message']}"
    for noise in ("function-after", "EventIn", "EventBatch"):
        assert noise not in r.text


def test_the_api_keeps_the_ratings_ingest_keeps(http: httpx.Client, tmp_path: Path) -> None:
    """The same rows, through ``POST /events`` and a MovieLens ratings file: kept by both or by neither."""
    rows = [(0.0, 5), (0.25, 5), (0.5, 5), (3.0, 5), (5.0, 5), (5.5, 5), (10.0, 5), (4.0, 0), (4.0, -1)]
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n" + "".join(f"1,{i + 1},{s:g},{ts}\n" for i, (s, ts) in enumerate(rows)))
    kept, _ = read_ratings(csv, DelimitedFormat(b",", ("userId", "movieId", "rating", "timestamp")), BadRows(skip=True))
    by_ingest = [i + 1 in set(kept.title_id.tolist()) for i in range(len(rows))]
    by_api = []
    for i, (stars, ts) in enumerate(rows):
        r = http.post("/events", json={"user_id": 900_100_001, "title_id": i + 1, "kind": "rating", "stars": stars, "ts": ts})
        assert r.status_code in (202, 422), r.text
        by_api.append(r.status_code == 202)
    assert by_ingest == [False, False, True, True, True, False, False, True, False]
    assert by_api == by_ingest
    stars = http.get("/openapi.json").json()["components"]["schemas"]["EventIn"]["properties"]["stars"]["anyOf"][0]
    assert (stars["minimum"], stars["maximum"]) == (0.5, 5.0)


@pytest.mark.parametrize("redis_backend", ["embedded"], indirect=True)
def test_merge_skips_stream_events_ingest_would_drop(store: RedisStore, tmp_path: Path) -> None:
    """A rating the API took before it used ingest's star range stays out of the dataset, counted."""
    ds_dir = write_small_dataset(tmp_path / "ds")
    before = load_dataset(ds_dir)
    publish_dataset(store, ds_dir)
    catalog = Catalog.from_frames(before.titles, before.variants)
    t = int(before.events["ts"].max()) + 60
    old = [
        Event(user_id=3, title_id=20, kind="rating", ts=t, stars=9.0),  # the old API's 0..10
        Event(user_id=3, title_id=30, kind="rating", ts=t + 1, stars=4.5),
        Event(user_id=4, title_id=20, kind="rating", ts=t + 2, stars=0.0),
    ]
    assert store.append_events(old, catalog) == 3
    r = merge_stream_into_dataset(ds_dir, store)
    assert (r.added, r.skipped) == (1, 2)
    tail = load_dataset(ds_dir).events
    tail = tail[tail["ts"] >= t]
    assert tail[["user_id", "title_id", "ts"]].values.tolist() == [[3, 30, t + 1]] and tail["stars"].tolist() == [4.5]
    mark = read_manifest(ds_dir).extra[MERGED_KEY]
    assert (mark["events"], mark["skipped"]) == (1, 2)


def test_a_play_from_a_fast_client_clock_counts_on_the_next_page(http: httpx.Client, recent_world: Path) -> None:
    """A ``ts`` a little ahead of the server's clock (a phone's clock running fast) is taken as the server's time.

    Stored as sent, the play was in the user's history but after the page's time, so the next
    pages left it out (no "Continue watching", the title still recommended as unseen) for as long
    as the client's clock was ahead, up to a day.
    """
    user = int(load_dataset(recent_world, columns=["user_id", "title_id", "kind", "ts"]).events["user_id"].iloc[0])
    first = http.get(f"/homepage/{user}").json()
    title = [t["title_id"] for row in first["rows"] for t in row["titles"]][-1]
    ahead = int(time.time()) + 3600
    r = http.post("/events", json={"user_id": user, "title_id": title, "kind": "play", "progress": 0.4, "ts": ahead})
    assert r.status_code == 202, r.text
    page = http.get(f"/homepage/{user}").json()
    assert page["request"]["now"] < ahead
    cw = [row for row in page["rows"] if row["ranker"] == "continue_watching"]
    assert cw and title in [t["title_id"] for t in cw[0]["titles"]], [row["ranker"] for row in page["rows"]]
