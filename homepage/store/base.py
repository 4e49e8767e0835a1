"""The store's connection, its version pointer and metadata, and what every part of the store shares."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import redis

from homepage.embedded_redis import EmbeddedRedis
from homepage.settings import CLUSTER_SCHEMES, Settings, shown_url
from homepage.store.cluster import LazyCluster
from homepage.store.errors import UNAVAILABLE, StoreError, StoreRefused, StoreUnavailable, guarded
from homepage.store.keyspace import Keyspace, VersionMeta
from homepage.stream_ids import stream_id_key

SCAN_COUNT = 1000
DELETE_BATCH = 500


NO_PASSWORD_SENT = ("NOAUTH", "HELLO must be called with the client already authenticated")  # RESP2's words, RESP3's
WRONG_PASSWORD = "invalid username-password pair or user is disabled"
CERTIFICATE_REFUSED = "CERTIFICATE_VERIFY_FAILED"


def refused_for_good(cause: BaseException | None) -> str | None:
    """What to tell an operator when a connection failed for a reason waiting cannot cure; None for an outage.

    Read from the words (a cluster client wraps the node's error in its own): no password sent
    where the server asks for one (RESP3's reply, redis-py's default, talks of HELLO, not of a
    password), a wrong one, and a TLS certificate this machine cannot verify (before 2026-12-07 an outage:
    ``serve`` started and served the fallback for good).
    """
    text = str(cause or "")
    if any(w in text for w in NO_PASSWORD_SENT):
        return "the server asks for a password and REDIS_URL gives none: redis://:PASSWORD@host:port/db (redis://USER:PASSWORD@... for an ACL user)"
    if WRONG_PASSWORD in text:  # a cluster client's words around it say no node is reachable
        return WRONG_PASSWORD
    if CERTIFICATE_REFUSED in text:
        return (
            f"{text.rstrip('.')}: the server's TLS certificate is not signed by a CA this machine trusts, or does not name the host;"
            " give the CA as rediss://host:port/db?ssl_ca_certs=/path/ca.pem"
        )
    return None


class StoreBase:
    """A connection to the service's Redis under one key prefix; the version pointer and metadata, cached."""

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

    @classmethod
    def from_url(cls, url: str, prefix: str = "hp", *, settings: Settings | None = None) -> Self:
        """A store on the server (``redis://``) or cluster (``redis+cluster://``) at ``url``; connects lazily."""
        s = settings or Settings(redis_url=url, key_prefix=prefix)
        if url.startswith(CLUSTER_SCHEMES):
            return cls(LazyCluster(url, s), prefix, settings=s)
        client = redis.Redis.from_url(url, socket_timeout=s.socket_timeout, socket_connect_timeout=s.connect_timeout)
        return cls(client, prefix, settings=s)

    @classmethod
    def from_socket(cls, path: Path, prefix: str = "hp", *, settings: Settings | None = None) -> Self:
        """A store on the server listening on the unix socket ``path`` (the embedded one)."""
        s = settings or Settings(key_prefix=prefix)
        client = redis.Redis(unix_socket_path=str(path), socket_timeout=s.socket_timeout)
        return cls(client, prefix, settings=s)

    @property
    def store_id(self) -> str:
        """Which store this is (server and key prefix), for files on a disk other deployments may share."""
        s = self.settings
        where = shown_url(s.redis_url) if s.redis_url else f"embedded:{Path(s.embedded_dir).resolve()}"
        return f"{where}|{self.keys.prefix}"

    @property
    def location(self) -> str:
        """Which Redis and key prefix, as an operator sets them (password hidden): for log lines."""
        s = self.settings
        where = f"REDIS_URL {shown_url(s.redis_url)}" if s.redis_url else f"the embedded Redis in {str(Path(s.embedded_dir).resolve())!r}"
        return f"{where}, prefix {self.keys.prefix!r}"

    def close(self) -> None:
        """Close connections; stop the embedded server if this store started it."""
        self.client.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    @guarded
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

    def evicting_policy(self) -> str | None:
        """The server's ``maxmemory-policy`` when it may evict this store's keys (a memory limit and a policy other
        than ``noeviction``), else None; None too when it cannot tell (a cluster, CONFIG and INFO both refused).

        An evicted version record, bundle file or history serves wrong pages, and an evicted
        idempotency key counts a retried event twice. Managed services disable CONFIG but
        answer INFO, whose memory section says the same (before 2026-12-07 such a server, whose
        default policy is often ``volatile-lru``, passed as one that never evicts).
        """
        if self.is_cluster:
            return None
        try:
            conf = self.client.config_get("maxmemory*")
            policy, limit = conf.get("maxmemory-policy", "noeviction"), conf.get("maxmemory", 0)
        except (redis.ResponseError, *UNAVAILABLE):
            try:
                info = self.client.info("memory")
            except (redis.ResponseError, *UNAVAILABLE):
                return None
            policy, limit = info.get("maxmemory_policy", "noeviction"), info.get("maxmemory", 0)
        policy = str(policy)
        return policy if policy != "noeviction" and int(limit or 0) > 0 else None

    def check_settings(self) -> None:
        """PING once: ``StoreRefused`` when the server refuses these settings, ``StoreUnavailable`` when it does not answer.

        A database index the server does not have is known only when connecting, and redis-py
        reports it as a bare ``ResponseError``; a wrong password as a ``ConnectionError``; an ACL
        user barred from this prefix's keys or from scripts only at the first it touches, so one is run.
        """
        transient = (*UNAVAILABLE, redis.exceptions.MasterDownError, redis.exceptions.ReadOnlyError)
        try:
            self.ping()
            self._probe_access()
        except StoreRefused as e:  # an ACL refusing this prefix's keys, or scripts
            hint = (
                f"every key of this store starts with {self.keys.prefix + ':'!r}: HOMEPAGE_KEY_PREFIX sets it" if "keys" in str(e)
                else "the store needs +@all -@dangerous on its keys, Lua scripts (EVAL) included"
            )
            raise StoreRefused(f"{e} ({hint})") from None
        except redis.ResponseError as e:
            if isinstance(e, transient):  # a replica without its master, a server loading: it heals by itself
                raise StoreUnavailable(f"redis unavailable: {type(e).__name__}: {e}") from e
            raise StoreRefused(str(e)) from None
        except StoreUnavailable as e:
            cause = e.__cause__
            if (why := refused_for_good(cause)) is not None:
                raise StoreRefused(why) from None
            if isinstance(cause, redis.AuthenticationError) or (isinstance(cause, redis.ResponseError) and not isinstance(cause, transient)):
                raise StoreRefused(str(cause)) from None
            raise

    @guarded
    def _probe_access(self) -> None:
        """Read a key under the prefix from a script: an ACL user limited to other keys (``~app:*``) or without
        scripting (``+@read +@write``) is refused at start, not at every request (a read-only script: a replica
        or a full memory runs it)."""
        self.client.eval("return redis.call('EXISTS', KEYS[1])", 1, self.keys.active)

    @guarded
    def active_version(self) -> str | None:
        """The version the API serves now (read from Redis, refreshing the cache)."""
        raw = self.client.get(self.keys.active)
        v = raw.decode() if raw else None
        self._active = (v, time.monotonic())
        return v

    @guarded
    def active_and_reloads(self) -> tuple[str | None, int]:
        """``active_version()`` and how many reloads were asked for (``request_reload``), in one round trip."""
        pipe = self.client.pipeline(transaction=False)  # one slot: the control slot
        pipe.get(self.keys.active)
        pipe.get(self.keys.reloads)
        raw, reloads = pipe.execute()
        v = raw.decode() if raw else None
        self._active = (v, time.monotonic())
        return v, int(reloads or 0)

    @guarded
    def request_reload(self) -> int:
        """Ask every worker to reload the active version at its next refresh; the new count of requests."""
        return int(self.client.incr(self.keys.reloads))

    def _resolve(self, version: str | None) -> str:
        if version is not None:
            return version
        v, at = self._active
        if v is None or time.monotonic() - at > self.settings.active_cache_seconds:
            v = self.active_version()
        if v is None:
            raise StoreError(f"no published version under prefix {self.keys.prefix!r}: run `homepage publish`")
        return v

    @guarded
    def versions(self) -> list[str]:
        """Published versions, oldest first (the active one is normally last)."""
        return [v.decode() for v in self.client.lrange(self.keys.versions, 0, -1)]

    @guarded
    def all_versions(self) -> list[str]:
        """Every version in Redis: published, retired by a rollback, or being written."""
        return sorted(v.decode() for v in self.client.smembers(self.keys.all_versions))

    @guarded
    def sample_users(self, n: int, version: str | None = None) -> list[int]:
        """Up to ``n`` distinct random user ids of a version's active users (for the viewer's samples)."""
        v = self._resolve(version)
        return sorted({int(m) for m in self.client.srandmember(self.keys.users(v), n) or []})

    @guarded
    def version_exists(self, version: str) -> bool:
        """Whether a version's metadata is in Redis now (never cached: a restart without persistence loses it)."""
        return bool(self.client.exists(self.keys.meta(version)))

    @guarded
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

    @property
    def is_cluster(self) -> bool:
        """True when the client is a Redis Cluster client."""
        from redis.cluster import RedisCluster

        return isinstance(self.client, (LazyCluster, RedisCluster))

    def _queue_script(self, pipe: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue a script on a pipeline, on a cluster sent straight to the node of its keys' slot.

        (Left to itself, redis-py's cluster pipeline asks a server for every EVAL's keys: one
        extra round-trip per script.)
        """
        opts = {"target_nodes": self.client.get_node_from_key(keys[0])} if self.is_cluster else {}
        pipe.execute_command("EVAL", script, len(keys), *keys, *args, **opts)

    def _events_added(self) -> int:
        """Events ever acknowledged into the stream (its tally; a cluster reads it apart from the control slot)."""
        return int(self.client.hget(self.keys.events_tally, "added") or 0)

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

    def _stream_entries(self, stream: str, after: str | None = None) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        last = "-" if after is None else "(" + after
        while True:
            chunk = self.client.xrange(stream, min=last, max="+", count=SCAN_COUNT)
            if not chunk:
                return
            yield from chunk
            last = "(" + chunk[-1][0].decode()

    def _version_or_none(self, version: str | None) -> str | None:
        try:
            return self._resolve(version)
        except StoreError:  # nothing published yet: only what the API set exists
            return None

    def _page_keys(self, user_id: int, version: str | None) -> list[str]:
        """The user's page-cache keys in every version (the override applies to all; a lagging worker's or a rollback's included)."""
        versions = {v.decode() for v in self.client.smembers(self.keys.all_versions)} | ({version} if version else set())
        return [self.keys.page(v, user_id) for v in sorted(versions)]

    @guarded
    def erasures(self) -> dict[int, str]:
        """user id -> the events stream's last generated id when ``DELETE /users`` erased them (the last time)."""
        out = {}
        for u, raw in self.client.hgetall(self.keys.erased).items():
            at = raw.decode()
            out[int(u)] = at if "-" in at else f"{int(at) * 1000}-0"  # recorded as unix seconds before 3574f2b
        return out

    @guarded
    def erasure_seqs(self) -> dict[int, int]:
        """user id -> their event sequence at their last erasure (erasures recorded before 2026-12-07 have none)."""
        return {int(u): int(s) for u, s in self.client.hgetall(self.keys.erased_seq).items()}

    @guarded
    def erasure_counts(self) -> dict[int, int]:
        """user id -> how many times they were erased (counted since 2026-12-07)."""
        return {int(u): int(n) for u, n in self.client.hgetall(self.keys.erasure_count).items()}

    def _served_sweep_marks(self) -> dict[int, tuple[tuple[int, int], int, bytes]]:
        """The pending served sweeps: user -> (stream id swept to, as a key; until, unix ms; the raw mark)."""
        marks = {}
        for u, raw in self.client.hgetall(self.keys.served_sweeps).items():
            pos, until = raw.decode().split("|")
            marks[int(u)] = (stream_id_key(pos), int(until), raw)
        return marks
