"""Fold the events the API acknowledged into a dataset, so that training and the next publish see them.

``POST /events`` writes to the active version's user state and to the events stream; a
publish builds a new version from a dataset alone. Without this step, every play, rating
and watch progress acknowledged since the dataset was made would be missing from the next
version, and would never reach training. The dataset remembers the last stream id it took
(``manifest.extra["events_merged"]``), so merging again adds only what is new; profiles and
erasures (``homepage.erasure``) are folded in with the events.

The functions are pure (stream records and frames in, frames out) except
``merge_stream_into_dataset``, the I/O edge that reads the store and rewrites the files, as
``publish_dataset`` is for publishing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from homepage.dataset import EVENT_SCHEMA, conform, load_dataset, write_dataset
from homepage.domain import EVENT_CODES, Event
from homepage.erasure import applied_erasures, drop_users, erased_entry, erasure_id, pending_erasures
from homepage.errors import HomepageError
from homepage.ingest.ratings import RATING_MAX, RATING_MIN
from homepage.ingest.titles import titles_as_of
from homepage.stream_ids import stream_id_key

if TYPE_CHECKING:
    from homepage.store import RedisStore

MERGED_KEY = "events_merged"  # manifest.extra: {"stream", "last_id", "events"/"skipped" (so far), "added"/"erased" (stream tally)}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEvents:
    """Events read from the stream, as rows of the dataset's events table, and how far they go."""

    frame: pd.DataFrame
    last_id: str | None  # the newest stream id taken (None: nothing new)
    skipped: int = 0  # valid events that ingest would not keep (``outside_ingest``)
    first_skipped: str | None = None  # the stream id of the first of them, and why


def outside_ingest(e: Event) -> str | None:
    """Why ``homepage ingest`` would drop ``e`` as a bad row, or None.

    ``POST /events`` once accepted stars 0..10; it now takes ingest's range, but a stream
    may still hold events from before, which would put ratings no dataset can have into one.
    """
    if e.stars is not None and not RATING_MIN <= e.stars <= RATING_MAX:
        return f"stars {e.stars:g} is outside {RATING_MIN:g}..{RATING_MAX:g}"
    return None


def stream_events(
    entries: Iterable[Sequence[Any]],
    after: str | None = None,
    erasures: Mapping[int, str] | None = None,
    erased_seqs: Mapping[int, int] | None = None,
) -> StreamEvents:
    """Rows (``EVENT_SCHEMA`` columns) of the stream entries after ``after``, in stream order.

    ``entries`` are (stream id, user id, event JSON[, the user's sequence number]). Entries of a
    user from before that user's erasure (``erasures`` and ``erased_seqs``: a merge that read them
    while ``DELETE /users`` was removing them) are skipped. Each entry's event JSON is
    validated by the same ``Event`` model the API used; an entry that no longer parses is an
    error naming its stream id (it cannot be skipped silently). A valid event that ingest
    would drop (``outside_ingest``) is skipped and counted.
    """
    floor = stream_id_key(after) if after else (-1, -1)
    rows: list[dict[str, Any]] = []
    last: str | None = None
    skipped, first_skipped = 0, None
    for entry in entries:
        sid, user, raw = entry[0], entry[1], entry[2]
        if stream_id_key(sid) <= floor:
            continue
        last = sid
        if erasures and erased_entry(user, sid, erasures, entry[3] if len(entry) > 3 else None, erased_seqs):
            continue
        try:
            e = Event.model_validate(json.loads(raw))
        except Exception as err:
            raise HomepageError(f"events stream entry {sid}: not a valid event ({err})") from err
        why = outside_ingest(e)
        if why is not None:
            skipped += 1
            first_skipped = first_skipped or f"{sid}: {why}"
            continue
        row = e.model_dump()
        row["kind"] = EVENT_CODES[e.kind]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=EVENT_SCHEMA.names)
    for col in ("row_index", "col_index"):  # the dataset's "no position" is -1
        frame[col] = frame[col].fillna(-1)
    return StreamEvents(conform(frame, EVENT_SCHEMA).to_pandas(), last, skipped, first_skipped)  # the dtypes ``load_dataset`` gives


def merged_extra(
    extra: Mapping[str, object],
    stream: str,
    last_id: str | None,
    added: int,
    tally: Mapping[str, int],
    skipped: int = 0,
    erasures_applied: Mapping[int, str] | None = None,
) -> dict[str, object]:
    """The manifest's ``extra`` after a merge from ``stream`` up to ``last_id`` (with the stream's tally then),
    and the erasures applied to the dataset (``homepage.erasure.pending_erasures``)."""
    prev = dict(extra.get(MERGED_KEY) or {})  # type: ignore[call-overload]
    out = dict(extra)
    out[MERGED_KEY] = {
        "stream": stream,
        "last_id": last_id or prev.get("last_id"),
        "events": int(prev.get("events", 0)) + added,
        "skipped": int(prev.get("skipped", 0)) + skipped,
        "added": int(tally["added"]),
        "erased": int(tally["erased"]),
    }
    if tally.get("epoch"):
        out[MERGED_KEY]["epoch"] = tally["epoch"]  # type: ignore[index]
    if erasures_applied:
        out[MERGED_KEY]["erasures_applied"] = {str(u): at for u, at in sorted(erasures_applied.items())}  # type: ignore[index]
    return out


def merge_mark(extra: Mapping[str, object], stream: str) -> dict[str, object] | None:
    """Where a dataset was merged up to (``last_id``, the stream's tally then); refuses another stream's mark."""
    prev = extra.get(MERGED_KEY)
    if not prev:
        return None
    theirs = prev.get("stream")  # type: ignore[union-attr]
    if theirs != stream:
        raise HomepageError(
            f"dataset was merged from events stream {theirs!r}, not {stream!r} (another Redis prefix?); "
            "merging would skip or repeat events"
        )
    return dict(prev)  # type: ignore[call-overload]


def stream_reset(mark: Mapping[str, object] | None, tally: Mapping[str, object]) -> bool:
    """Whether the stream started over since the mark: another epoch, or a tally that went back.

    A Redis restarted without persistence, or flushed: what it acknowledged after the mark and
    before the reset is gone, and how much cannot be known. The epoch tells it even once the new
    stream has taken more entries than the mark counted; marks written before epochs existed
    are checked by their counts only.
    """
    if mark is None:
        return False
    if mark.get("epoch") and mark.get("epoch") != tally.get("epoch"):
        return True
    if "added" not in mark or "erased" not in mark:
        return False
    return int(tally["added"]) < int(mark["added"]) or int(tally["erased"]) < int(mark["erased"])  # type: ignore[call-overload, arg-type]


def unmerged_lost(mark: Mapping[str, object] | None, tally: Mapping[str, int], read: int) -> int:
    """How many entries the stream should still hold after the mark, but does not (trimmed by its cap).

    The stream's tally counts entries ever added and erased (``DELETE /users``); the mark
    keeps the tally as of the last entry merged. Erasures since the mark may have hit entries
    before it, so a loss that small can go unseen; nothing is ever reported lost that was not.
    A mark written before tallies existed is not checked.
    """
    if mark is None:
        expected = tally["added"] - tally["erased"]
    elif "added" in mark and "erased" in mark:
        expected = (tally["added"] - int(mark["added"])) - (tally["erased"] - int(mark["erased"]))  # type: ignore[call-overload]
    else:
        return 0
    return max(0, expected - read)


def merge_users(
    users: pd.DataFrame, events: pd.DataFrame, profiles: Mapping[int, tuple[str | None, tuple[str, ...]]], now: int
) -> tuple[pd.DataFrame, int]:
    """The users table with every profile (region, favourite genres) applied and a row for each user it lacked.

    ``profiles`` is each profile of the serving version (published from the dataset, or set
    with ``PUT /users`` since); users new to the table are created at their first event, or
    at ``now`` for a profile with no events. Returns the table and how many users are new.
    """
    out = users.copy()
    if "favourite_genres" not in out.columns:  # a dataset from before the column
        out["favourite_genres"] = [[] for _ in range(len(out))]
    ids = out["user_id"].astype(np.int64)
    has_profile = ids.isin(list(profiles.keys()))
    if has_profile.any():
        rows = [profiles[int(u)] for u in ids[has_profile]]
        out.loc[has_profile, "region"] = [r for r, _ in rows]
        out.loc[has_profile, "favourite_genres"] = pd.Series([list(g) for _, g in rows], index=out.index[has_profile], dtype=object)
    first = events.groupby("user_id", sort=True)["ts"].min() if len(events) else pd.Series(dtype=np.int64)
    fresh = sorted(({int(u) for u in first.index} | set(profiles)) - set(ids.tolist()))
    if not fresh:
        return out, 0
    added = pd.DataFrame(
        {
            "user_id": np.array(fresh, dtype=np.int64),
            "region": [profiles.get(u, (None, ()))[0] for u in fresh],
            "created": np.array([int(first[u]) if u in first.index else now for u in fresh], dtype=np.int64),
            "favourite_genres": [list(profiles.get(u, (None, ()))[1]) for u in fresh],
        }
    )
    return pd.concat([out, added], ignore_index=True), len(fresh)


@dataclass(frozen=True)
class MergeResult:
    """What a merge did to a dataset."""

    added: int
    new_users: int
    erased_events: int
    last_id: str | None
    total_events: int
    changed: bool
    skipped: int = 0  # stream events ingest would drop (``outside_ingest``), left out



def _published_from(store: RedisStore, dataset: Path) -> str | None:
    """The active version when it was published from ``dataset``: its profiles may hold ``PUT``s from older code.

    Another dataset's version is left alone: its profiles would add users and undo edits here.
    """
    active = store.active_version()
    if active is None:
        return None
    source = store.meta(active).source
    return active if source is not None and Path(source).resolve() == Path(dataset).resolve() else None


def merge_stream_into_dataset(dataset: Path, store: RedisStore, *, accept_gap: bool = False) -> MergeResult:
    """Append the events stream's entries newer than the dataset's mark to the dataset, atomically.

    The I/O edge of this module. Reads from ``store``: interrupted event batches are finished
    first (``drain_outboxes``), then the stream after the mark, every profile (region,
    favourite genres) in the active version, and the erasures (``DELETE /users``): users
    erased since the mark leave the dataset, and their stream entries from before the erasure
    are skipped. Rewrites the dataset with ``write_dataset`` (old contents intact until
    the new are complete), keeping its other arrays (e.g. the synthetic world's ``truth.npz``).
    Refuses, unless ``accept_gap``, when the stream's cap trimmed entries not merged yet.
    A merge that changes nothing leaves the dataset untouched.
    """
    ds = load_dataset(dataset)
    stream = store.keys.events
    mark = merge_mark(ds.manifest.extra, stream)
    after = str(mark["last_id"]) if mark and mark.get("last_id") else None
    store.drain_outboxes()
    entries, tally = store.events_since(after)
    if stream_reset(mark, tally) and not accept_gap:
        assert mark is not None
        # another epoch: a new stream; the same one with a smaller tally: the same stream, from before the last merge;
        # a mark written before epochs existed cannot tell the two apart
        if not mark.get("epoch"):
            why = (
                "and the last merge recorded no epoch to tell why): Redis was restarted without persistence or flushed, "
                "or went back in time (restored from a snapshot older than the last merge, or a replica took over)"
            )
        elif mark.get("epoch") != tally.get("epoch"):
            why = "under another epoch): Redis was restarted without persistence or flushed"
        else:
            why = (
                "under the same epoch): Redis went back in time (restored from a snapshot older than the last merge, "
                "or a replica behind its primary took over)"
            )
        raise HomepageError(
            f"{dataset}: the events stream {stream!r} started over since the last merge (it counts {tally['added']:,} entries "
            f"ever added, {int(mark.get('added', 0)):,} then, {why}, so events "  # type: ignore[call-overload]
            "acknowledged after the last merge may be lost, and erasures (DELETE /users) taken since then are forgotten; "
            "pass --accept-gap to merge what the stream holds now"
        )
    lost = unmerged_lost(mark, tally, len(entries))
    if lost and not accept_gap:
        raise HomepageError(
            f"{dataset}: the events stream {stream!r} lost {lost:,} entries after {after or 'its start'} before they were merged "
            "(its cap, HOMEPAGE_EVENTS_MAXLEN, trimmed them); merge more often, or pass --accept-gap to merge what is left"
        )
    erasures = store.erasures()
    got = stream_events(entries, after, erasures, store.erasure_seqs())
    if got.skipped:
        log.warning("%s: skipped %d stream events that ingest would drop (first: %s)", dataset, got.skipped, got.first_skipped)
    applied, counts = applied_erasures(mark), store.erasure_counts()
    gone = pending_erasures(erasures, after, applied, counts)
    erased = drop_users(ds.events, ds.users, gone)
    tags = ds.tag_events
    tags_dropped = 0
    if tags is not None and gone:  # an erased user's tags go too
        keep = ~tags["user_id"].isin(list(gone)).to_numpy()
        tags_dropped = int((~keep).sum())
        tags = tags[keep].reset_index(drop=True) if tags_dropped else tags
    titles = ds.titles
    if tags_dropped:  # the titles' top tags were counted with theirs: count them again without
        titles = titles_as_of(ds.titles, tags, np.iinfo(np.int64).max)
    events = pd.concat([erased.events, got.frame], ignore_index=True) if len(got.frame) else erased.events
    users, n_new = merge_users(erased.users, got.frame, store.profiles(_published_from(store, dataset)), int(time.time()))
    applied_now = _still_applied(erasures, counts, applied, gone, got.last_id or after, events, users)
    profiles_changed = _profile_rows(ds.users) != _profile_rows(users)
    moved = got.last_id is not None or lost > 0  # the mark moves (past an accepted gap too)
    changed = bool(moved or erased.events_dropped or erased.users_dropped or tags_dropped or n_new or profiles_changed or applied_now != applied)
    if not changed:
        return MergeResult(0, 0, 0, after, len(ds.events), False)
    arrays = {}
    for npz in sorted(Path(dataset).glob("*.npz")):
        with np.load(npz, allow_pickle=False) as f:
            arrays[npz.stem] = {k: f[k] for k in f.files}
    write_dataset(
        Path(dataset),
        source=ds.manifest.source,
        events=events,
        titles=titles,
        users=users,
        variants=ds.variants,
        inputs_sha256=ds.manifest.inputs_sha256,
        extra=merged_extra(ds.manifest.extra, stream, got.last_id, len(got.frame), tally, got.skipped, applied_now),
        extra_arrays=arrays,
        tag_events=tags,
    )
    return MergeResult(len(got.frame), n_new, erased.events_dropped, got.last_id or after, len(events), True, got.skipped)


def _still_applied(
    erasures: Mapping[int, str],
    counts: Mapping[int, int],
    applied: Mapping[int, str],
    gone: set[int],
    mark: str | None,
    events: pd.DataFrame,
    users: pd.DataFrame,
) -> dict[int, str]:
    """The erasures to record as applied after a merge: those at or past its new mark (before it, the position
    alone says they are applied) of users the dataset now holds (for others there is nothing to keep)."""
    if mark is None:
        return {}
    floor = stream_id_key(mark)
    held = set(events["user_id"].tolist()) | set(users["user_id"].tolist())
    out = {}
    for u in sorted(gone | set(applied)):
        at = erasures.get(u)
        ident = erasure_id(at, counts.get(u, 0)) if at is not None else None
        if ident is not None and (u in gone or applied.get(u) == ident) and stream_id_key(at) >= floor and u in held:
            out[u] = ident
    return out


def _profile_rows(users: pd.DataFrame) -> dict[int, tuple[str | None, tuple[str, ...]]]:
    """user id -> (region, favourite genres), with missing values made comparable (None, ())."""
    genres = users["favourite_genres"] if "favourite_genres" in users.columns else [None] * len(users)
    return {
        int(u): (None if pd.isna(r) else str(r), tuple(g) if g is not None and len(g) else ())  # type: ignore[arg-type]
        for u, r, g in zip(users["user_id"], users["region"], genres)
    }
