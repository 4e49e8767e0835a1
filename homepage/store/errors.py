"""What the store raises, and the Redis failures it turns into ``StoreUnavailable``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import redis

from homepage.errors import HomepageError


class StoreError(HomepageError):
    """The store cannot do what was asked (no published version, unknown version, ...)."""


class StoreUnavailable(StoreError):
    """Redis is down, unreachable or too slow: the API answers 503 or a degraded page."""


class StoreCorrupt(StoreUnavailable):
    """Redis answers but a record the store needs is incomplete: served as an outage (503, degraded pages) until fixed."""


class NotPublished(StoreError):
    """Redis answers but holds no published version (restarted empty, flushed): pages fall back until a publish."""


class StoreRefused(StoreError):
    """The server answers but refuses the connection settings (a database index it lacks, a wrong password): no outage to wait out."""


class IdempotencyConflict(StoreError):
    """Idempotency keys the user already sent with a different event; nothing of theirs was written.

    ``indices`` are the batch positions of the events refused; ``applied`` counts events of
    other users in the batch that were applied all the same (only when a concurrent request
    took a key between the check before the write and the write itself; see ``homepage.store.scripts``).
    """

    def __init__(self, indices: Sequence[int], applied: int = 0) -> None:
        self.indices = tuple(indices)
        self.applied = applied
        super().__init__(f"idempotency keys of events {list(self.indices)} were already used for different events")


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
READ_ONLY = "You can't write against a read only replica"  # a write to a replica, also inside a script
PROGRAMMING_ERRORS = (redis.exceptions.CrossSlotTransactionError, redis.exceptions.InvalidPipelineStack)
P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn connection-level Redis failures into ``StoreUnavailable``, and an ACL's refusal into ``StoreRefused``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UNAVAILABLE as e:
            if isinstance(e, PROGRAMMING_ERRORS):
                raise
            raise StoreUnavailable(f"redis unavailable: {type(e).__name__}: {e}") from e
        except redis.ResponseError as e:
            if isinstance(e, redis.exceptions.NoPermissionError):  # an ACL: no outage, nothing to retry
                raise StoreRefused(f"REDIS_URL's user is refused by the server's ACL: {e}") from None
            if isinstance(e, redis.exceptions.ReadOnlyError) or READ_ONLY in str(e):
                drop_idle_connections(args[0] if args else None)
                raise StoreUnavailable(
                    f"redis unavailable: read-only: the server at REDIS_URL is a replica now (a failover?) and refuses writes: {e}"
                ) from e
            # maxmemory reached inside a Lua script (the write it tried was refused): a script error, not an OOM reply
            if OUT_OF_MEMORY in str(e):
                raise StoreUnavailable(f"redis unavailable: out of memory: {e}") from e
            raise

    return wrapper


def drop_idle_connections(store: object) -> None:
    """Close the idle connections of ``store``'s client, so the next command connects again.

    After a failover a managed Redis's endpoint name points at the promoted replica, while an
    open connection stays with the old primary, now a replica answering READONLY to every
    write until it is closed. (A cluster client follows failovers by itself.)
    """
    pool = getattr(getattr(store, "client", None), "connection_pool", None)
    if pool is not None:
        pool.disconnect(inuse_connections=False)
