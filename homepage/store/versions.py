"""Versions in the store: publish (writes first, then one pointer flip), the model bundle, rollback and gc.

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

import dataclasses
import io
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import redis

from homepage import decay
from homepage.catalog import Catalog
from homepage.state import GlobalState
from homepage.store.base import SCAN_COUNT
from homepage.store.errors import StoreError, guarded
from homepage.store.events import EventWrites
from homepage.store.keyspace import VERSION_RE, VersionMeta, late_epoch_of
from homepage.store.records import pack_history, profiles_of_users, sparse
from homepage.unpacked import MARK as UNPACKED_MARK, PREFIX as UNPACKED_PREFIX, models_dir_lock, store_tag

log = logging.getLogger(__name__)


class VersionWrites(EventWrites):
    """Publishing, rolling back and deleting versions (gc finishes abandoned event batches first)."""

    @guarded
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
        replaced_files: Mapping[str, bytes] | None = None,
        only_files: Collection[str] | None = None,
        erasures_seen: Mapping[int, str] | None = None,
    ) -> VersionMeta:
        """Write the state as of ``world.as_of`` under ``version``, then make it active in one command.

        Order: meta (state=writing) and a lease, user keys in pipelined batches, world
        counters, bundle files, then one MULTI/EXEC that flips ``active``, appends to the
        version list and marks the meta complete. A reader sees the old or the new version.

        ``erasures_seen``: the erasures (``erasures()``) the caller read when it left erased users out
        of ``log`` and ``users``; users erased since are deleted from the version after its writes.
        Default: the erasures when the writes start.
        """
        if not VERSION_RE.match(version):
            raise StoreError(f"version {version!r}: use letters, digits, '_', '.', '-' (at most 64)")
        k, s = self.keys, self.settings
        if self.client.exists(k.meta(version)):
            raise StoreError(f"version {version!r}: already exists under prefix {k.prefix!r}")
        t = int(world.as_of)
        created = time.time()
        world = _capped_regions(world, s.max_regions)
        hashes = _world_hashes(world)
        meta = VersionMeta(
            version=version,
            state="writing",
            as_of=t,
            epoch=t,  # the epoch is rebased to the publish time: stored decayed == decayed at t
            half_life=float(world.half_life),
            created=created,
            n_titles=len(catalog),
            n_users=int(world.n_users),
            bundle_version=bundle_version,
            source=source,
            late_epoch=late_epoch_of(t, created),  # events on the wall clock, years after an old dataset's time
            world_fields=tuple((r, name, int(np.count_nonzero(values))) for (r, name), values in hashes.items()),
        )
        pipe = self.client.pipeline(transaction=False)
        # names this events stream: a Redis restarted empty gets a new one at the publish it needs, so merge-events
        # can tell a stream that started over from one that went on (``homepage.events_merge.stream_reset``)
        pipe.hsetnx(k.events_tally, "epoch", secrets.token_hex(8))
        pipe.sadd(k.all_versions, version)
        pipe.set(k.lease(version), b"1", ex=s.publish_lease_seconds)
        pipe.hset(k.meta(version), mapping=meta.to_redis())
        pipe.execute()

        try:
            # a DELETE /users since the dataset was filtered (or during the writes below) is undone before the flip
            erased_before = self.erasures() if erasures_seen is None else erasures_seen
            profiles = profiles_of_users(users)
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
                        a = max(a, b - s.max_history_records)  # the newest, as events keep them (a merged flood came back whole)
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

            # every write renews the lease: a gc takes a version whose lease ran out for an abandoned one
            pipe.set(k.lease(version), b"1", ex=s.publish_lease_seconds)
            self._write_world(pipe, version, log, catalog, world, hashes)
            if bundle_dir is not None:
                for rel, data in _bundle_files(Path(bundle_dir)):
                    if only_files is not None and rel not in only_files:
                        continue
                    pipe.set(k.lease(version), b"1", ex=s.publish_lease_seconds)
                    pipe.hset(k.bundle(version), rel, (replaced_files or {}).get(rel, data))
                    pipe.execute()
            self._erase_written_since(version, erased_before, user_ids)

        except BaseException:
            self._drop_partial(version)
            raise
        with self.client.pipeline(transaction=True) as flip:
            while True:  # the version replaced is the one active at the flip: a rollback in between retries
                try:
                    flip.watch(k.active, k.meta(version))
                    if flip.hget(k.meta(version), "state") != b"writing":  # a gc took it: never point at what it deletes
                        flip.reset()
                        self._drop_partial(version)
                        raise StoreError(
                            f"version {version!r}: deleted by a gc while it was written (its lease, "
                            f"HOMEPAGE_PUBLISH_LEASE_SECONDS={s.publish_lease_seconds:g}, ran out between two writes); "
                            "nothing was made live: publish again"
                        )
                    replaced = flip.get(k.active)
                    added = self._events_added()
                    flip.multi()
                    flip.hset(k.meta(version), "state", "complete")
                    if replaced is not None:
                        flip.hset(k.retired_at, replaced, added)
                    flip.rpush(k.versions, version)
                    flip.set(k.active, version)
                    flip.delete(k.lease(version))
                    flip.execute()
                    break
                except redis.WatchError:
                    continue
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

    def _write_world(
        self, pipe: Any, v: str, log: Any, catalog: Catalog, world: GlobalState, hashes: Mapping[tuple[str | None, str], np.ndarray]
    ) -> None:
        k = self.keys
        for r in world.region_counts:
            pipe.sadd(k.regions(v), r)
        for (r, name), values in hashes.items():
            pipe.hset(k.glob(v, name) if r is None else k.region(v, r, name), mapping=sparse(catalog, values))
        n = int(np.searchsorted(log.t_ts, world.as_of, side="right"))
        active_users = log.user_ids[np.unique(log.t_user_pos[:n])]
        for start in range(0, active_users.size, 10_000):
            pipe.sadd(k.users(v), *(str(int(u)) for u in active_users[start : start + 10_000]))
        pipe.execute()

    @guarded
    def bundle_files(self, version: str | None = None) -> dict[str, bytes]:
        """The model bundle published with a version: relative path -> bytes."""
        v = self._resolve(version)
        return {p.decode(): b for p, b in self.client.hgetall(self.keys.bundle(v)).items()}

    @guarded
    def bundle_file(self, version: str, rel: str) -> bytes | None:
        """One file of a version's model bundle (None when it has no such file)."""
        return self.client.hget(self.keys.bundle(version), rel)

    @guarded
    def bundle_titles(self, version: str) -> pd.DataFrame | None:
        """``title_id`` and ``name`` of the titles a version's bundle serves (its catalog); None without a bundle."""
        raw = self.client.hget(self.keys.bundle(version), "catalog/titles.parquet")
        if raw is None:
            return None
        return pq.read_table(io.BytesIO(raw), columns=["title_id", "name"]).to_pandas()

    @guarded
    def rewrite_bundle_file(self, version: str, rel: str, rewrite: Callable[[bytes], bytes | None]) -> bool:
        """Replace one file of a version's bundle with ``rewrite(its bytes)`` (None: leave it); whether it was replaced.

        Compare-and-set: a concurrent rewrite of the same bundle (another erasure) makes this
        one start again from what that one wrote, so neither is lost.
        """
        key = self.keys.bundle(version)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    data = pipe.hget(key, rel)
                    new = rewrite(data) if data is not None else None
                    if new is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, rel, new)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def materialize_bundle(self, version: str | None, dest_dir: Path) -> Path:
        """Write a version's bundle files under ``dest_dir/unpacked-<bundle version>-<store tag>`` and return that directory.

        Its own name, never an operator's bundle directory (``homepage train --out`` into the same
        directory writes ``<bundle version>``), nor another deployment's (another key prefix or Redis
        sharing the directory): a worker replaces and later deletes only what its store unpacked.
        """
        v = self._resolve(version)
        files = self.bundle_files(v)
        name = self.meta(v).bundle_version
        if not files and name is not None:  # published with one: the hash went since
            raise StoreError(
                f"version {v!r}: its model bundle {name} is gone from Redis (evicted under a maxmemory-policy other than "
                "noeviction?); publish again"
            )
        if not files:
            raise StoreError(f"version {v!r}: no model bundle was published with it")
        name = name or v
        out = Path(dest_dir) / f"{UNPACKED_PREFIX}{name}-{store_tag(self.store_id)}"
        for rel in files:
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise StoreError(f"version {v!r}: bundle path {rel!r} escapes the bundle directory")
        with models_dir_lock(Path(dest_dir), exclusive=False):
            if _holds(out, files):  # another worker unpacked these very files: nothing to replace under it
                return out
        tmp = Path(dest_dir) / f".{name}.tmp-{os.getpid()}-{time.time_ns()}"
        try:
            for rel, data in files.items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            (tmp / UNPACKED_MARK).write_text(self.store_id)  # what prune_unpacked may delete once another version is live
            # replaced only while no worker loads from the directory (two workers unpacking at a publish
            # made a third of the loads fail: manifest.json or the catalog missing mid-swap)
            with models_dir_lock(Path(dest_dir), exclusive=True):
                if not _holds(out, files):
                    if out.exists():
                        shutil.rmtree(out)
                    tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @guarded
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

    @guarded
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
            if v not in published and not self._claim_orphan(v):
                continue  # a publish is writing it now, or has just made it live
            doomed.append(v)
        for v in doomed:
            self._drop_version(v)
        return doomed

    def _claim_orphan(self, v: str) -> bool:
        """Mark an unpublished version whose lease has run out as being deleted, in one transaction.

        Its publish's flip checks the mark under WATCH, so a version is either made live or
        deleted, never made live and then deleted (which left ``active`` pointing at nothing).
        """
        k = self.keys
        with self.client.pipeline(transaction=True) as p:
            try:
                p.watch(k.lease(v), k.meta(v), k.versions)
                if p.exists(k.lease(v)) or v.encode() in p.lrange(k.versions, 0, -1):
                    return False
                p.multi()
                p.hset(k.meta(v), "state", "deleting")
                p.execute()
                return True
            except redis.WatchError:
                return False

    def _drop_version(self, v: str) -> None:
        """Delete every key of a version that is not active and every trace of it in the control slot."""
        k = self.keys
        self.client.lrem(k.versions, 0, v)
        self._delete_pattern(k.version_pattern(v))
        self.client.srem(k.all_versions, v)
        self.client.hdel(k.retired_at, v)
        self._meta.pop(v, None)

    def _drop_partial(self, version: str) -> None:
        """After a publish failed before its flip: delete what it wrote, if Redis lets us (else gc does, later).

        Left behind, a publish refused for memory kept its partial version, and every retry
        added another, until the live store's events were refused too.
        """
        try:
            self._drop_version(version)
        except Exception as e:  # the publish's own error is the one to report
            log.warning("publish %s failed and its partial keys could not be deleted (%s); `homepage gc` deletes them", version, e)

    @guarded
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

    @guarded
    def memory_bytes(self, version: str | None = None) -> int:
        """Sum of MEMORY USAGE over a version's keys (a measurement helper; SCANs the keyspace)."""
        v = self._resolve(version)
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=self.keys.version_pattern(v), count=SCAN_COUNT):
            pipe.memory_usage(key, samples=0)
        return int(sum(x or 0 for x in pipe.execute()))


def _capped_regions(world: GlobalState, most: int) -> GlobalState:
    """``world`` with counters of its ``most`` regions with the most viewers (then by name); the others count overall only.

    As events do (``HOMEPAGE_MAX_REGIONS``): regions users set through the API reach the dataset with
    ``merge-events``, and a publish wrote a counter pair for each, in Redis and in every worker.
    """
    if len(world.region_counts) <= most:
        return world
    kept = sorted(world.region_counts, key=lambda r: (-int(world.region_counts[r].sum()), r))[:most]
    return dataclasses.replace(
        world,
        region_counts={r: world.region_counts[r] for r in kept},
        region_decayed={r: world.region_decayed[r] for r in kept if r in world.region_decayed},
    )


def _world_hashes(world: GlobalState) -> dict[tuple[str | None, str], np.ndarray]:
    """The world counter hashes a publish writes, (region or None, name) -> per-title values (their non-zero entries)."""
    # epoch == as_of, so the stored log-time sums are the decayed counts themselves
    stored = decay.to_stored(world.decayed, world.as_of, world.as_of, world.half_life)
    out: dict[tuple[str | None, str], np.ndarray] = {}
    for name, values in (("counts", world.counts), ("decayed", stored), ("rating_sum", world.rating_sum), ("rating_count", world.rating_count)):
        if values.any():
            out[(None, name)] = values
    for r, c in world.region_counts.items():
        if c.any():
            out[(r, "counts")] = c
        d = world.region_decayed.get(r)
        if c.any() and d is not None and d.any():  # all 0 when every event is ~1,000 half-lives old: HSET takes no empty hash
            out[(r, "decayed")] = d
    return out


def _holds(out: Path, files: Mapping[str, bytes]) -> bool:
    """Whether directory ``out`` holds exactly these files with these bytes."""
    if not out.is_dir():
        return False
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {UNPACKED_MARK}
    return on_disk == set(files) and all((out / rel).read_bytes() == data for rel, data in files.items())


def _bundle_files(root: Path) -> Iterator[tuple[str, bytes]]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() != UNPACKED_MARK:  # a bundle published from a worker's copy
            yield p.relative_to(root).as_posix(), p.read_bytes()
