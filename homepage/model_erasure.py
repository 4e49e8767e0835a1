"""Erased users' own weights out of the model bundles kept in Redis.

A trained artwork selector keeps weights for each user it learnt from (``homepage.erasure``
names the file). A ``DELETE /users`` rewrites every stored bundle's file without that user's
weights, a publish its new version's without every erased user's, each by compare-and-set
(``RedisStore.rewrite_bundle_file``): two erasures at once cannot bring each other's users back.
"""

from __future__ import annotations

from collections.abc import Iterable

from homepage.erasure import file_without_users, user_weight_file
from homepage.store import RedisStore


def erase_user_weights(store: RedisStore, versions: Iterable[str] | None = None, users: Iterable[int] | None = None) -> int:
    """Rewrite these versions' bundles (default: every version in Redis) without these users' weights (default: every
    erased user's); returns how many files were rewritten. Reads each version's file: its size grows with the users learnt."""
    erased = sorted(store.erasures() if users is None else {int(u) for u in users})
    if not erased:
        return 0
    rewritten = 0
    for v in store.all_versions() if versions is None else versions:
        rel = user_weight_file(store.bundle_file(v, "manifest.json"))
        if rel is not None:
            rewritten += store.rewrite_bundle_file(v, rel, lambda data: file_without_users(data, erased))
    return rewritten
