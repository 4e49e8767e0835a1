"""Idempotency keys of ``POST /events``: a retry is a duplicate, a key reused for another event is a 422.

Over real HTTP (uvicorn) on the embedded Redis, and the store's own check on each back end. A
key's value is a digest of the event it was first sent with; keys written before digests hold
``"1"`` and keep marking retries as duplicates.
"""

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
from homepage.dataset import load_dataset
from homepage.domain import Event
from homepage.publish import publish_dataset
from homepage.store import HISTORY_DTYPE, IdempotencyConflict, RedisStore

API_KEY = "idem-" + uuid.uuid4().hex
REUSED = "already used for a different event"


class Served:
    def __init__(self, http: httpx.Client, store: RedisStore) -> None:
        self.http, self.store = http, store

    def post(self, body: Any) -> httpx.Response:
        return self.http.post("/events", json=body)

    def history(self, user: int) -> int:
        """Events in the user's history (plays and ratings)."""
        raw = self.store.client.get(self.store.keys.hist(self.store.active_version() or "", user)) or b""
        return len(raw) // HISTORY_DTYPE.itemsize

    def logged(self, user: int) -> int:
        """The user's entries in the events stream."""
        return sum(1 for e in self.store.event_entries() if e[1] == user)


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with live_api_on_embedded(request, recent_world, serving_bundle, tmp_path_factory.mktemp("unpacked"), API_KEY) as (srv, store):
        with httpx.Client(base_url=srv.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
            yield Served(c, store)


def _key() -> str:
    return f"k-{uuid.uuid4().hex}"


def _play(user: int, title: int = 1, **kw: Any) -> dict[str, Any]:
    return {"user_id": user, "title_id": title, "kind": "play", "progress": 0.5, **kw}


def test_a_key_reused_for_a_different_event_is_a_422_and_nothing_of_the_batch_is_written(served: Served) -> None:
    u, key = 910_000_001, _key()
    first = _play(u, ts=1_790_000_000, idempotency_key=key)
    assert served.post(first).json() == {"accepted": 1, "duplicates": 0}
    batch = [_play(u, 2, ts=1_790_000_001), _play(u, 3, ts=1_790_000_002, idempotency_key=_key()), _play(u, 4), {**first, "title_id": 5}]
    r = served.post({"events": batch})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["events.3.idempotency_key"]
    assert REUSED in r.json()["detail"] and r.json()["detail"].startswith("events.3.idempotency_key: ")
    assert (served.history(u), served.logged(u)) == (1, 1)  # the three good events were not applied either
    assert served.post(first).json() == {"accepted": 0, "duplicates": 1}  # the true retry is still a duplicate
    one = served.post({**first, "progress": 0.9})  # one event (not a batch): the field is the key's own name
    assert one.status_code == 422 and [e["field"] for e in one.json()["errors"]] == ["idempotency_key"]
    # a client's mistake, not an outage: counted apart from the 503s
    metrics = served.http.get("/metrics").text
    assert _metric(metrics, "homepage_events_idempotency_conflicts_total") >= 5  # the refused batch of 4 and the single event
    assert _metric(metrics, "homepage_events_unavailable_total") == 0


def _metric(text: str, name: str) -> float:
    line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
    return float(line.split()[1]) if line else 0.0


def test_a_batch_of_several_users_is_refused_whole(served: Served) -> None:
    a, b, key_a, key_b = 910_000_002, 910_000_003, _key(), _key()
    assert served.post(_play(b, 7, ts=1_790_000_000, idempotency_key=key_b)).json()["accepted"] == 1
    r = served.post({"events": [_play(a, 1, ts=1_790_000_000, idempotency_key=key_a), _play(b, 8, ts=1_790_000_000, idempotency_key=key_b)]})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["events.1.idempotency_key"], r.text
    assert served.history(a) == 0 and served.logged(a) == 0
    # a's key was not taken by the refused batch: the same event now applies
    assert served.post(_play(a, 1, ts=1_790_000_000, idempotency_key=key_a)).json() == {"accepted": 1, "duplicates": 0}


def test_the_same_key_twice_in_one_batch_for_different_events_is_refused(served: Served) -> None:
    u, key = 910_000_004, _key()
    r = served.post({"events": [_play(u, 1, idempotency_key=key), _play(u, 2, idempotency_key=key)]})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["events.1.idempotency_key"], r.text
    assert served.history(u) == 0
    same = served.post({"events": [_play(u, 1, idempotency_key=key), _play(u, 1, idempotency_key=key)]})
    assert same.json() == {"accepted": 1, "duplicates": 1}


def test_a_retry_without_ts_is_the_same_event_but_adding_ts_is_not(served: Served) -> None:
    """The digest is of the event as sent: the server's stamp of a ``ts``-less event is not part of it."""
    u, key = 910_000_005, _key()
    ev = _play(u, idempotency_key=key)
    assert served.post(ev).json() == {"accepted": 1, "duplicates": 0}
    time.sleep(1.1)  # the server's clock moves on: a digest of the stamped event would differ now
    assert served.post(ev).json() == {"accepted": 0, "duplicates": 1}
    stamped = served.post({**ev, "ts": int(time.time())})
    assert stamped.status_code == 422 and REUSED in stamped.text
    assert served.history(u) == 1


def test_keys_hold_a_digest_and_keys_from_before_digests_still_mark_duplicates(served: Served) -> None:
    u, key, old = 910_000_006, _key(), _key()
    assert served.post(_play(u, ts=1_790_000_000, idempotency_key=key)).json()["accepted"] == 1
    value = served.store.client.get(served.store.keys.idempotency(u, key))
    assert value is not None and len(value) == 32 and value != b"1"
    served.store.client.set(served.store.keys.idempotency(u, old), b"1", ex=3600)  # as the code before digests wrote it
    assert served.post(_play(u, 9, ts=1_790_000_100, idempotency_key=old)).json() == {"accepted": 0, "duplicates": 1}
    assert served.history(u) == 1


# ------------------------------------------------------------------ the store's check, on every back end
@pytest.fixture
def published(store: RedisStore, tmp_path: Path) -> Catalog:
    ds = write_small_dataset(tmp_path / "ds")
    publish_dataset(store, ds)
    d = load_dataset(ds)
    return Catalog.from_frames(d.titles, d.variants)


class _LateCheck(RedisStore):
    """A store whose read-only check before the write found nothing: as when a concurrent request
    takes a key between that check and the write (the one case the write's own check is for)."""

    def _reused_keys(self, *args: Any) -> list[int]:
        return []


def test_the_store_refuses_a_reused_key_in_the_write_itself(store: RedisStore, published: Catalog) -> None:
    t = 1_800_000_000
    assert store.append_events([Event(user_id=1, title_id=10, kind="play", ts=t)], published, ["key-0001"]) == 1
    late = _LateCheck(store.client, store.keys.prefix, settings=store.settings)
    other = Event(user_id=2, title_id=20, kind="play", ts=t)
    reused = Event(user_id=1, title_id=30, kind="play", ts=t)
    with pytest.raises(IdempotencyConflict) as e:
        late.append_events([other, reused, Event(user_id=1, title_id=40, kind="play", ts=t)], published, ["key-0002", "key-0001", None])
    assert e.value.indices == (1,) and e.value.applied == 1  # user 2's event went in before user 1's script refused
    state = store.read_user_state(1, t + 1, published)
    assert state.title_ids[state.ts == t].tolist() == [10]  # none of user 1's events in the refused batch
    assert store.append_events([other], published, ["key-0002"]) == 0  # user 2's part is complete: a retry is a duplicate
    assert sum(1 for e in store.event_entries() if e[1] == 2) == 1
    # the plain check before the write refuses a batch of several users whole
    with pytest.raises(IdempotencyConflict) as e:
        store.append_events([Event(user_id=3, title_id=10, kind="play", ts=t), reused], published, ["key-0003", "key-0001"])
    assert e.value.indices == (1,) and e.value.applied == 0
    assert store.client.get(store.keys.idempotency(3, "key-0003")) is None
