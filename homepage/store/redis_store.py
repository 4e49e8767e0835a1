"""``RedisStore``: the whole store, one object over one connection; ``connect`` makes it from the settings."""

from __future__ import annotations

from homepage.embedded_redis import EmbeddedRedis
from homepage.settings import Settings
from homepage.store.erasure import UserErasure
from homepage.store.serving import PageReads
from homepage.store.versions import VersionWrites


class RedisStore(PageReads, UserErasure, VersionWrites):
    """Reads and writes the service's state in Redis. Plain data in and out.

    Each concern is a part of its own (``serving``, ``erasure``, ``versions``, ``events``) over
    ``StoreBase``, the connection and version pointer they share.
    """


def connect(settings: Settings) -> RedisStore:
    """A store on ``settings.redis_url``, or on the embedded server when no URL is set."""
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, settings.key_prefix, settings=settings)
    emb = EmbeddedRedis(settings.embedded_dir)
    store = RedisStore.from_socket(emb.start(), settings.key_prefix, settings=settings)
    store._embedded = emb
    return store
