"""The Redis store: the one module that imports ``redis`` and names every key.

Keyspace (``p`` is the prefix, ``v`` a version; one user's keys share the hash tag
``{u:<id>}`` so they land in one Redis Cluster slot)::

    p:active                     string  the version the API serves
    p:versions                   list    published versions, oldest first
    p:all_versions               set     every version ever started (finds orphans for gc)
    p:v:<v>:meta                 hash    state (writing|complete), as_of, epoch, half_life, ...
    p:v:<v>:lease                string  TTL'd while a publish is writing this version
    p:v:<v>:{u:<id>}:hist        string  packed HISTORY_DTYPE records, appended per event
    p:v:<v>:{u:<id>}:profile     hash    region, genres (JSON list)
    p:v:<v>:{u:<id>}:page        string  page cache (TTL), deleted by the user's events
    p:v:<v>:g:counts|decayed|rating_sum|rating_count     hash title_id -> number
    p:v:<v>:g:r:<region>:counts|decayed                  hash title_id -> number
    p:v:<v>:g:regions            set     regions with counters
    p:v:<v>:g:users              set     users with at least one counted event
    p:v:<v>:bundle               hash    relative path -> file bytes of the model bundle
    p:events                     stream  every accepted event (capped)
    p:served                     stream  served pages (capped)
    p:idem:<key>                 string  idempotency keys (TTL)

Decayed counters are stored in log-time form (see ``homepage.decay``), relative to the
version's ``epoch``.
"""

from __future__ import annotations

import functools
import json
import re
import time
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
from homepage.settings import Settings
from homepage.state import PLAY, RATING, GlobalState, UserState, frozen

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


class StoreError(HomepageError):
    """The store cannot do what was asked (no published version, unknown version, ...)."""


class StoreUnavailable(StoreError):
    """Redis is down, unreachable or too slow: the API answers 503 or a degraded page."""


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn connection-level Redis failures into ``StoreUnavailable``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
            raise StoreUnavailable(f"redis unavailable: {e}") from e

    return wrapper


# ------------------------------------------------------------------ keys
@dataclass(frozen=True, slots=True)
class Keyspace:
    """Every key name the project uses, in one place."""

    prefix: str = "hp"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def all_versions(self) -> str:
        return f"{self.prefix}:all_versions"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def served(self) -> str:
        return f"{self.prefix}:served"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def version_pattern(self, v: str) -> str:
        """SCAN pattern matching every key of version ``v``."""
        return f"{self.prefix}:v:{v}:*"

    def meta(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:meta"

    def lease(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:lease"

    def user(self, v: str, user_id: int, part: str) -> str:
        """A per-user key; ``part`` is ``hist``, ``profile`` or ``page``."""
        return f"{self.prefix}:v:{v}:{{u:{int(user_id)}}}:{part}"

    def hist(self, v: str, user_id: int) -> str:
        return self.user(v, user_id, "hist")

    def profile(self, v: str, user_id: int) -> str:
        return self.user(v, user_id, "profile")

    def page(self, v: str, user_id: int) -> str:
        return self.user(v, user_id, "page")

    def glob(self, v: str, name: str) -> str:
        """A global counter hash: ``counts``, ``decayed``, ``rating_sum``, ``rating_count``."""
        return f"{self.prefix}:v:{v}:g:{name}"

    def region(self, v: str, region: str, name: str) -> str:
        """A per-region counter hash: ``counts`` or ``decayed``."""
        return f"{self.prefix}:v:{v}:g:r:{region}:{name}"

    def regions(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:g:regions"

    def users(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:g:users"

    def bundle(self, v: str) -> str:
        return f"{self.prefix}:v:{v}:bundle"


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
        """A store on the server at ``url`` (connections open lazily, on first command)."""
        s = settings or Settings(redis_url=url, key_prefix=prefix)
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
        pipe.hgetall(self.keys.profile(v, user_id))
        raw_hist, profile = pipe.execute()
        return _user_state(user_id, now, catalog, raw_hist, profile)

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
    ) -> int:
        """Apply a batch of events to the active version in one MULTI/EXEC; returns how many applied.

        An event whose idempotency key was seen within the TTL is skipped. Optimistic
        locking (WATCH on the keys and the active pointer) makes the check and the writes
        atomic, and moves the batch to the new version if a publish flips it meanwhile.
        """
        if not events:
            return 0
        if idempotency_keys is not None and len(idempotency_keys) != len(events):
            raise ValueError("idempotency_keys: one per event (None for none)")
        ikeys = list(idempotency_keys) if idempotency_keys is not None else [None] * len(events)
        k = self.keys
        idem = [k.idempotency(x) if x else None for x in ikeys]
        watched = [k.active, *sorted({x for x in idem if x})]
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*watched)
                    raw_v = pipe.get(k.active)
                    if not raw_v:
                        raise StoreError(f"no published version under prefix {k.prefix!r}: run `homepage publish`")
                    v = raw_v.decode()
                    seen = set()
                    present = [x for x in idem if x]
                    if present:
                        seen = {x for x, val in zip(present, pipe.mget(present)) if val is not None}
                    batch = []
                    for e, key in zip(events, idem):
                        if key is not None and key in seen:
                            continue
                        if key is not None:
                            seen.add(key)  # a repeat inside the batch counts once
                        batch.append((e, key))
                    if not batch:
                        pipe.unwatch()
                        return 0
                    m = self.meta(v)
                    regions = self._regions_of(v, sorted({e.user_id for e, _ in batch}))
                    pipe.multi()
                    self._queue_events(pipe, v, m, batch, catalog, regions)
                    pipe.execute()
                    return len(batch)
                except redis.WatchError:
                    continue

    def _regions_of(self, v: str, user_ids: list[int]) -> dict[int, str]:
        rp = self.client.pipeline(transaction=False)
        for u in user_ids:
            rp.hget(self.keys.profile(v, u), "region")
        return {u: r.decode() for u, r in zip(user_ids, rp.execute()) if r}

    def _queue_events(
        self,
        pipe: Any,
        v: str,
        m: VersionMeta,
        batch: list[tuple[Event, str | None]],
        catalog: Catalog,
        regions: dict[int, str],
    ) -> None:
        k, s = self.keys, self.settings
        tidx = catalog.index_of(np.array([e.title_id for e, _ in batch], np.int64))
        weights = decay.event_weight(np.array([e.ts for e, _ in batch], np.int64), m.epoch, m.half_life)
        for (e, key), ti, w in zip(batch, tidx, weights):
            if key is not None:
                pipe.set(key, b"1", nx=True, ex=s.idempotency_ttl_seconds)
            pipe.xadd(
                k.events,
                {"u": str(e.user_id), "v": v, "e": e.model_dump_json(exclude_none=True)},
                maxlen=s.events_maxlen,
                approximate=True,
            )
            code = EVENT_CODES[e.kind]
            if code not in (PLAY, RATING):
                continue  # impressions are logged, not part of the state
            pipe.append(k.hist(v, e.user_id), _event_record(e))
            pipe.delete(k.page(v, e.user_id))
            if ti < 0:
                continue  # unknown titles stay in the history but not in world counters
            tid, wf = str(e.title_id), float(w)
            pipe.hincrby(k.glob(v, "counts"), tid, 1)
            pipe.hincrbyfloat(k.glob(v, "decayed"), tid, wf)
            if code == RATING:
                pipe.hincrbyfloat(k.glob(v, "rating_sum"), tid, float(np.float32(e.stars)))
                pipe.hincrby(k.glob(v, "rating_count"), tid, 1)
            pipe.sadd(k.users(v), str(e.user_id))
            r = regions.get(e.user_id)
            if r is not None:
                pipe.sadd(k.regions(v), r)
                pipe.hincrby(k.region(v, r, "counts"), tid, 1)
                pipe.hincrbyfloat(k.region(v, r, "decayed"), tid, wf)

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

        flip = self.client.pipeline(transaction=True)
        flip.hset(k.meta(version), "state", "complete")
        flip.rpush(k.versions, version)
        flip.set(k.active, version)
        flip.delete(k.lease(version))
        flip.execute()
        self._active = (version, time.monotonic())
        return self.meta(version)

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
        """Make the previous published version active; the current one is retired (gc deletes it)."""
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
                    pipe.multi()
                    pipe.set(k.active, prev)
                    if cur_s is not None:
                        pipe.lrem(k.versions, 0, cur_s)
                    pipe.execute()
                    self._active = (prev, time.monotonic())
                    return prev
                except redis.WatchError:
                    continue

    @_guarded
    def gc(self, keep: int) -> list[str]:
        """Delete versions beyond the newest ``keep`` published ones, retired ones and orphans.

        The active version is always kept; a version still being written (its lease is
        alive) is left alone. Keys are found with SCAN on the version's pattern, never KEYS.
        """
        k = self.keys
        published = self.versions()
        active = self.active_version()
        kept = set(published[-keep:] if keep > 0 else []) | ({active} if active else set())
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
            self._meta.pop(v, None)
        return doomed

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

        World counters are aggregates and stay; the user leaves the active-users sets.
        """
        k = self.keys
        versions = sorted(v.decode() for v in self.client.smembers(k.all_versions))
        pipe = self.client.pipeline(transaction=False)
        for v in versions:
            for part in ("hist", "profile", "page"):
                pipe.delete(k.user(v, user_id, part))
            pipe.srem(k.users(v), str(int(user_id)))
        n = sum(int(x) for i, x in enumerate(pipe.execute()) if i % 4 != 3)
        for stream in (k.events, k.served):
            ids = [eid for eid, fields in self._stream_entries(stream) if fields.get(b"u") == str(int(user_id)).encode()]
            for start in range(0, len(ids), DELETE_BATCH):
                n += self.client.xdel(stream, *ids[start : start + DELETE_BATCH])
        return n

    def _stream_entries(self, stream: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        last = "-"
        while True:
            chunk = self.client.xrange(stream, min=last, max="+", count=SCAN_COUNT)
            if not chunk:
                return
            yield from chunk
            last = "(" + chunk[-1][0].decode()

    # ------------------------------------------------------------ room for serving
    @_guarded
    def get_cached_page(self, user_id: int, version: str | None = None) -> bytes | None:
        """The cached page of a user, or None; any event of the user deletes it."""
        return self.client.get(self.keys.page(self._resolve(version), user_id))

    @_guarded
    def set_cached_page(self, user_id: int, page: bytes, ttl_seconds: int, version: str | None = None) -> None:
        self.client.set(self.keys.page(self._resolve(version), user_id), page, ex=ttl_seconds)

    @_guarded
    def log_served(self, user_id: int, page: str) -> bytes:
        """Append a served page (JSON) to the capped served-pages stream."""
        return self.client.xadd(
            self.keys.served, {"u": str(int(user_id)), "p": page}, maxlen=self.settings.served_maxlen, approximate=True
        )

    @_guarded
    def read_request(
        self, user_id: int, now: int, catalog: Catalog, cache_field: str, version: str, *, use_cache: bool = True
    ) -> tuple[bytes | None, UserState | None]:
        """A page request's one round-trip: the cached page for ``cache_field`` and the user's state.

        On a cache hit (with ``use_cache``) the state is not parsed and None is returned for it.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.page(version, user_id), cache_field)
        pipe.get(self.keys.hist(version, user_id))
        pipe.hgetall(self.keys.profile(version, user_id))
        cached, raw_hist, profile = pipe.execute()
        if cached is not None and use_cache:
            return cached, None
        return cached, _user_state(user_id, now, catalog, raw_hist, profile)

    @_guarded
    def page_served(
        self, user_id: int, cache_field: str, page: bytes, ttl_seconds: int, served: str | None, version: str
    ) -> None:
        """Cache a built page under (user, request parameters) with a TTL and log it to the served stream."""
        key = self.keys.page(version, user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, cache_field, page)
        pipe.expire(key, ttl_seconds)
        if served is not None:
            pipe.xadd(
                self.keys.served,
                {"u": str(int(user_id)), "p": served},
                maxlen=self.settings.served_maxlen,
                approximate=True,
            )
        pipe.execute()

    @_guarded
    def set_profile(self, user_id: int, region: str | None, genres: Sequence[str], version: str | None = None) -> None:
        """Replace a user's profile (region, favourite genres) in the active version; drops their cached page."""
        v = self._resolve(version)
        key = self.keys.profile(v, user_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        mapping = {"genres": json.dumps([str(g) for g in genres])}
        if region is not None:
            mapping["region"] = region
        pipe.hset(key, mapping=mapping)
        pipe.delete(self.keys.page(v, user_id))
        pipe.execute()

    @_guarded
    def served_entries(self, count: int | None = None) -> list[tuple[str, int, str]]:
        """(stream id, user id, page JSON) of logged served pages, oldest first."""
        return [
            (eid.decode(), int(f[b"u"]), f[b"p"].decode())
            for eid, f in self._stream_entries(self.keys.served)
            if b"p" in f
        ][: count if count is not None else None]

    @_guarded
    def event_entries(self) -> list[tuple[str, int, str]]:
        """(stream id, user id, event JSON) of the events stream, oldest first."""
        return [(eid.decode(), int(f[b"u"]), f[b"e"].decode()) for eid, f in self._stream_entries(self.keys.events)]

    @_guarded
    def put_floor_page(self, page: bytes) -> None:
        """Store the benchmark's precomputed page (``p:bench:floor``)."""
        self.client.set(f"{self.keys.prefix}:bench:floor", page)

    @_guarded
    def get_floor_page(self) -> bytes | None:
        """The benchmark floor: one GET of a precomputed page."""
        return self.client.get(f"{self.keys.prefix}:bench:floor")

    @_guarded
    def memory_bytes(self, version: str | None = None) -> int:
        """Sum of MEMORY USAGE over a version's keys (a measurement helper; SCANs the keyspace)."""
        v = self._resolve(version)
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.keys.version_pattern(v), count=SCAN_COUNT):
            pipe.memory_usage(key, samples=0)
        return int(sum(x or 0 for x in pipe.execute()))


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


def connect(settings: Settings) -> RedisStore:
    """A store on ``settings.redis_url``, or on the embedded server when no URL is set."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, settings.key_prefix, settings=settings)
    emb = EmbeddedRedis(settings.embedded_dir)
    store = RedisStore.from_socket(emb.start(), settings.key_prefix, settings=settings)
    store._embedded = emb
    return store
