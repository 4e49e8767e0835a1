"""How values are encoded in Redis: packed histories, counter hashes, outbox entries, profiles.

Plain functions between Redis replies (bytes, mappings) and the project's data (numpy arrays,
``UserState``); no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from homepage import decay
from homepage.catalog import Catalog
from homepage.domain import EVENT_CODES, Event
from homepage.state import PLAY, RATING, UserState, frozen
from homepage.store.errors import StoreError
from homepage.store.keyspace import VersionMeta

HISTORY_DTYPE = np.dtype(
    [
        ("title_id", "<i8"),
        ("ts", "<i8"),
        ("kind", "i1"),
        ("stars", "<f4"),
        ("progress", "<f4"),
        ("watch_seconds", "<f4"),
    ]
)  # packed: 29 bytes a record


LEGACY_KEY_VALUE = "1"  # what idempotency keys held before digests: matches any event (a duplicate)


def event_digest(event: Mapping[str, Any]) -> str:
    """A short digest of an event (its JSON fields; nulls and ``idempotency_key`` left out, keys sorted).

    The value of the event's idempotency key: a retry sends the same event and matches, a key
    reused for another event does not. 128 bits: no collision among one user's keys.
    """
    canon = {k: v for k, v in event.items() if v is not None and k != "idempotency_key"}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def key_digest(key: str | None, event: Event, given: str | None) -> str:
    if not key:
        return ""
    return given or event_digest(event.model_dump(mode="json"))


def pack_history(
    title_ids: np.ndarray,
    ts: np.ndarray,
    kinds: np.ndarray,
    stars: np.ndarray,
    progress: np.ndarray,
    watch_seconds: np.ndarray | None = None,
) -> bytes:
    """Pack history columns into the stored binary form."""
    rec = np.empty(len(title_ids), HISTORY_DTYPE)
    rec["title_id"], rec["ts"], rec["kind"] = title_ids, ts, kinds
    rec["stars"], rec["progress"] = stars, progress
    rec["watch_seconds"] = np.nan if watch_seconds is None else watch_seconds
    return rec.tobytes()


def unpack_history(raw: bytes | None) -> np.ndarray:
    """The stored binary form as a structured array (read-only view of ``raw``)."""
    if not raw:
        return np.zeros(0, HISTORY_DTYPE)
    usable = len(raw) - len(raw) % HISTORY_DTYPE.itemsize  # a torn tail cannot happen with APPEND; be safe
    return np.frombuffer(raw[:usable], HISTORY_DTYPE)


def event_record(e: Event) -> bytes:
    nan = float("nan")
    rec = np.zeros(1, HISTORY_DTYPE)
    rec[0] = (
        e.title_id,
        e.ts,
        EVENT_CODES[e.kind],
        nan if e.stars is None else e.stars,
        nan if e.progress is None else e.progress,
        nan if e.watch_seconds is None else e.watch_seconds,
    )
    return rec.tobytes()


def hash_to_arrays(raw: Mapping[bytes, bytes], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(title ids, values) of a counter hash, parsed vectorised."""
    if not raw:
        return np.zeros(0, np.int64), np.zeros(0, dtype)
    keys = np.array(list(raw.keys())).astype(np.int64)
    vals = np.array(list(raw.values())).astype(np.float64)
    return keys, vals.astype(dtype)


def dense(raw: Mapping[bytes, bytes], catalog: Catalog, dtype: type, scale: float = 1.0) -> np.ndarray:
    out = np.zeros(len(catalog), dtype)
    ids, vals = hash_to_arrays(raw, np.float64)
    idx = catalog.index_of(ids)
    ok = idx >= 0
    out[idx[ok]] = (vals[ok] * scale).astype(dtype) if scale != 1.0 else vals[ok].astype(dtype)
    return frozen(out)


def sparse(catalog: Catalog, values: np.ndarray) -> dict[str, str]:
    """Non-zero entries of a per-title vector as a hash mapping title id -> repr."""
    nz = np.flatnonzero(values)
    ids = catalog.title_ids[nz]
    if np.issubdtype(values.dtype, np.integer):
        return {str(int(i)): str(int(v)) for i, v in zip(ids, values[nz])}
    return {str(int(i)): repr(float(v)) for i, v in zip(ids, values[nz])}


_OUTBOX_USER_RE = re.compile(rb"\{u:(\d+)\}")


def user_of_key(key: bytes) -> int:
    """The user id in a key's hash tag."""
    m = _OUTBOX_USER_RE.search(key)
    if m is None:
        raise StoreError(f"no user hash tag in key {key!r}")
    return int(m.group(1))


@dataclass(frozen=True, slots=True)
class ReadState:
    """What a page was built from, as read: the history's length, the user's event sequence and the profile.

    A page is cached only if the user's keys still hold this (``page_served``): an event, a
    profile change or an erasure between the read and the cache write drops the page cache,
    and a write landing after it would otherwise put back a page built from the old state.
    The length alone missed an erasure followed by as many new events (the sequence, which an
    erasure keeps, counts them).
    """

    hist_len: int
    region: bytes
    genres: bytes
    seq: bytes = b""

    @staticmethod
    def of(raw_hist: bytes | None, profile: Mapping[bytes, bytes], seq: bytes | None = None) -> ReadState:
        return ReadState(len(raw_hist or b""), profile.get(b"region", b""), profile.get(b"genres", b""), seq or b"")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event applied to its user's slot and waiting for (or done in) the global slot."""

    user_id: int
    seq: int
    region: str
    payload: dict[str, Any]  # i: batch index, k: attempt token, v, e: event JSON, t, w, s (see event_payloads)
    # what the user's history held of the title before the event (``scripts.PRIOR``): the earliest play or
    # rating's ts, the earliest rating's ts and stars (-1, -1, "" for none); None when not looked up (an
    # event without a history record, or an entry an older release wrote: counted as every event was)
    earliest: tuple[int, int, str] | None = None

    @property
    def token(self) -> str:
        return str(self.payload["k"])

    @property
    def index(self) -> int:
        return int(self.payload["i"])

    @classmethod
    def parse(cls, user_id: int, raw: bytes) -> OutboxEntry:
        seq, _, rest = raw.partition(b" ")
        region, payload, *more = json.loads(rest)
        earliest = tuple(more[0]) if more and isinstance(more[0], list) and len(more[0]) == 3 else None
        return cls(int(user_id), int(seq), str(region), json.loads(payload), earliest)  # type: ignore[arg-type]


def event_payloads(events: Sequence[Event], catalog: Catalog, v: str, m: VersionMeta, token: str) -> list[str]:
    """What the global slot needs of each event: stream fields and counter increments (as strings)."""
    tidx = catalog.index_of(np.array([e.title_id for e in events], np.int64))
    weights, late = decay.split_weights(np.array([e.ts for e in events], np.int64), m.epoch, m.late_epoch, m.half_life)
    out = []
    for i, (e, ti, w, lt) in enumerate(zip(events, tidx, weights, late)):
        code = EVENT_CODES[e.kind]
        counted = code in (PLAY, RATING) and ti >= 0  # impressions and unknown titles stay out of the counters
        p = {
            "i": i,
            "k": token,
            "v": v,
            "e": e.model_dump_json(exclude_none=True),
            "t": str(e.title_id) if counted else None,
            "w": repr(float(w)),
            "s": repr(float(np.float32(e.stars))) if counted and code == RATING else None,
        }
        if lt:
            p["d"] = "decayed_late"  # the sums ``w`` is relative to (absent: ``decayed``)
        out.append(json.dumps(p))
    return out


@dataclass(frozen=True, slots=True)
class Counted:
    """What one event adds to a title's world counters (as strings, for HINCRBY/HINCRBYFLOAT)."""

    count: bool  # one more viewer in ``counts`` (and the region's)
    weights: tuple[tuple[str, str], ...]  # (decayed sums' name, weight to add), a negative one taking back an earlier event's
    stars: str | None  # to add to ``rating_sum``
    rating_count: bool  # one more rating in ``rating_count``


def counted(e: OutboxEntry, m: VersionMeta | None) -> Counted:
    """An event's share of the popularity counters: a viewer counts once per title (``eventlog.first_of_pairs``).

    The earliest play or rating of a (user, title) is its count and its decayed weight, the earliest
    rating its rating: a repeated play, a progress heartbeat, a rewatch or a re-rating adds nothing,
    and an event arriving late with an earlier time moves the weight (and the stars) to itself.
    ``e.earliest`` is what the user's history held of the title before it; without it (``m`` None:
    an entry an older release wrote) every event counts, as it did.
    """
    p = e.payload
    own = (p.get("d") or "decayed", p["w"])
    rating = p["s"] is not None
    if e.earliest is None or m is None:
        return Counted(True, (own,), p["s"], rating)
    first_ts, rated_ts, rated_stars = int(e.earliest[0]), int(e.earliest[1]), str(e.earliest[2])
    ts = int(json.loads(p["e"])["ts"])
    weights: tuple[tuple[str, str], ...] = ()
    if first_ts < 0:
        weights = (own,)
    elif ts < first_ts:
        w_old, late = decay.split_weights(np.array([first_ts], np.int64), m.epoch, m.late_epoch, m.half_life)
        weights = (own, ("decayed_late" if late[0] else "decayed", repr(-float(w_old[0]))))
    stars = None
    if rating and rated_ts < 0:
        stars = p["s"]
    elif rating and ts < rated_ts:
        stars = repr(float(p["s"]) - float(rated_stars))
    return Counted(first_ts < 0, weights, stars, rating and rated_ts < 0)


def as_served(stated: Mapping[bytes, bytes], published: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    """The profile a page is built from: the one the user set through the API (marked ``api``), else the version's (as the scripts choose)."""
    return stated if b"api" in stated else published


def decode_profile(region: bytes | None, genres: bytes | None) -> tuple[str | None, tuple[str, ...]]:
    """A stored profile hash's fields as (region, favourite genres)."""
    return (region.decode() if region else None, tuple(json.loads(genres)) if genres else ())


def user_state(user_id: int, now: int, catalog: Catalog, raw_hist: bytes | None, profile: Mapping[bytes, bytes]) -> UserState:
    """A user's state as of ``now`` from the stored history and profile."""
    region = profile.get(b"region")
    region_s = region.decode() if region else None
    genres = tuple(json.loads(profile[b"genres"])) if profile.get(b"genres") else ()
    rec = unpack_history(raw_hist)
    if rec.size:
        rec = rec[rec["ts"] <= now]
        ts = rec["ts"]
        if ts.size > 1 and np.any(ts[1:] < ts[:-1]):  # late events were appended out of order
            rec = rec[np.argsort(ts, kind="stable")]
    if not rec.size:
        return UserState.empty(int(user_id), int(now), region_s, genres)
    tids = np.ascontiguousarray(rec["title_id"])
    return UserState(
        user_id=int(user_id),
        as_of=int(now),
        region=region_s,
        title_ids=frozen(tids),
        title_idx=frozen(catalog.index_of(tids)),
        ts=frozen(np.ascontiguousarray(rec["ts"])),
        kinds=frozen(np.ascontiguousarray(rec["kind"])),
        stars=frozen(np.ascontiguousarray(rec["stars"])),
        progress=frozen(np.ascontiguousarray(rec["progress"])),
        favourite_genres=genres,
    )


def profiles_of_users(users: Any) -> dict[int, dict[str, str]]:
    """user id -> profile hash from the dataset's users table (region; favourite genres if present)."""
    out: dict[int, dict[str, str]] = {}
    if users is None or not len(users):
        return out
    genres = users["favourite_genres"] if "favourite_genres" in users.columns else None
    for i, (u, r) in enumerate(zip(users["user_id"], users["region"])):
        prof: dict[str, str] = {}
        if r is not None and r == r:
            prof["region"] = str(r)
        if genres is not None and genres.iloc[i] is not None and len(genres.iloc[i]):
            prof["genres"] = json.dumps([str(g) for g in genres.iloc[i]])
        if prof:
            out[int(u)] = prof
    return out
