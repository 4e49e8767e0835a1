"""Fold the events the API acknowledged into a dataset, so that training and the next publish see them.

``POST /events`` writes to the active version's user state and to the events stream; a
publish builds a new version from a dataset alone. Without this step, every play, rating
and watch progress acknowledged since the dataset was made would be missing from the next
version, and would never reach training. The dataset remembers the last stream id it took
(``manifest.extra["events_merged"]``), so merging again adds only what is new.

Pure: stream records in, a new events table out; the store and the files are the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from homepage.dataset import EVENT_SCHEMA, conform, load_dataset, write_dataset
from homepage.domain import EVENT_CODES, Event
from homepage.errors import HomepageError

if TYPE_CHECKING:
    from homepage.store import RedisStore

MERGED_KEY = "events_merged"  # manifest.extra entry: {"stream": key, "last_id": id, "events": count so far}


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id ("<ms>-<seq>") as a sortable pair."""
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError as e:
        raise HomepageError(f"not a stream id: {stream_id!r}") from e


@dataclass(frozen=True)
class StreamEvents:
    """Events read from the stream, as rows of the dataset's events table, and how far they go."""

    frame: pd.DataFrame
    last_id: str | None  # the newest stream id taken (None: nothing new)


def stream_events(entries: Iterable[tuple[str, int, str]], after: str | None = None) -> StreamEvents:
    """Rows (``EVENT_SCHEMA`` columns) of the stream entries after ``after``, in stream order.

    Each entry's event JSON is validated by the same ``Event`` model the API used; an entry
    that no longer parses is an error naming its stream id (it cannot be skipped silently).
    """
    floor = stream_id_key(after) if after else (-1, -1)
    rows: list[dict[str, Any]] = []
    last: str | None = None
    for sid, _user, raw in entries:
        if stream_id_key(sid) <= floor:
            continue
        try:
            e = Event.model_validate(json.loads(raw))
        except Exception as err:
            raise HomepageError(f"events stream entry {sid}: not a valid event ({err})") from err
        row = e.model_dump()
        row["kind"] = EVENT_CODES[e.kind]
        rows.append(row)
        last = sid
    frame = pd.DataFrame(rows, columns=EVENT_SCHEMA.names)
    for col in ("row_index", "col_index"):  # the dataset's "no position" is -1
        frame[col] = frame[col].fillna(-1)
    return StreamEvents(conform(frame, EVENT_SCHEMA).to_pandas(), last)  # the dtypes ``load_dataset`` gives


def merged_extra(extra: Mapping[str, object], stream: str, last_id: str | None, added: int) -> dict[str, object]:
    """The manifest's ``extra`` after a merge from ``stream`` up to ``last_id``."""
    prev = dict(extra.get(MERGED_KEY) or {})  # type: ignore[call-overload]
    out = dict(extra)
    out[MERGED_KEY] = {
        "stream": stream,
        "last_id": last_id or prev.get("last_id"),
        "events": int(prev.get("events", 0)) + added,
    }
    return out


def merged_after(extra: Mapping[str, object], stream: str) -> str | None:
    """The stream id a dataset was merged up to; refuses a dataset merged from another stream."""
    prev = extra.get(MERGED_KEY)
    if not prev:
        return None
    theirs = prev.get("stream")  # type: ignore[union-attr]
    if theirs != stream:
        raise HomepageError(
            f"dataset was merged from events stream {theirs!r}, not {stream!r} (another Redis prefix?); "
            "merging would skip or repeat events"
        )
    return str(prev["last_id"]) if prev.get("last_id") else None  # type: ignore[union-attr]


def new_users(users: pd.DataFrame, events: pd.DataFrame, regions: Mapping[int, str]) -> pd.DataFrame:
    """Users table rows for the users of ``events`` that ``users`` lacks: created at their first event."""
    known = set(users["user_id"].astype(np.int64).tolist())
    first = events.groupby("user_id", sort=True)["ts"].min()
    fresh = [int(u) for u in first.index if int(u) not in known]
    return pd.DataFrame(
        {
            "user_id": np.array(fresh, dtype=np.int64),
            "region": [regions.get(u) for u in fresh],
            "created": np.array([int(first[u]) for u in fresh], dtype=np.int64),
        }
    )


@dataclass(frozen=True)
class MergeResult:
    """What a merge added to a dataset."""

    added: int
    new_users: int
    last_id: str | None
    total_events: int


def merge_stream_into_dataset(dataset: Path, store: RedisStore) -> MergeResult:
    """Append the events stream's entries newer than the dataset's mark to the dataset, atomically.

    The I/O edge of this module: reads the stream (and the profile regions of users the
    dataset does not know) from ``store``, rewrites the dataset directory with
    ``write_dataset`` (old contents intact until the new are complete), keeping its other
    arrays (e.g. the synthetic world's ``truth.npz``). Nothing new: the dataset is not touched.
    """
    ds = load_dataset(dataset)
    stream = store.keys.events
    after = merged_after(ds.manifest.extra, stream)
    got = stream_events(store.event_entries(after), after)
    if got.last_id is None:
        return MergeResult(0, 0, after, len(ds.events))
    users_added = new_users(ds.users, got.frame, {})
    if len(users_added):
        regions = store.profile_regions(users_added["user_id"].tolist())
        users_added["region"] = [regions.get(int(u)) for u in users_added["user_id"]]
    events = pd.concat([ds.events, got.frame], ignore_index=True)
    users = pd.concat([ds.users, users_added], ignore_index=True) if len(users_added) else ds.users
    arrays = {}
    for npz in sorted(Path(dataset).glob("*.npz")):
        with np.load(npz, allow_pickle=False) as f:
            arrays[npz.stem] = {k: f[k] for k in f.files}
    write_dataset(
        Path(dataset),
        source=ds.manifest.source,
        events=events,
        titles=ds.titles,
        users=users,
        variants=ds.variants,
        inputs_sha256=ds.manifest.inputs_sha256,
        extra=merged_extra(ds.manifest.extra, stream, got.last_id, len(got.frame)),
        extra_arrays=arrays,
    )
    return MergeResult(len(got.frame), len(users_added), got.last_id, len(events))
