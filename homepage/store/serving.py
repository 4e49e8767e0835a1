"""What the API reads and writes per request: user state, the page cache and the served-page log, profiles."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from homepage import decay
from homepage.catalog import Catalog
from homepage.state import GlobalState, UserState, frozen
from homepage.store.base import DELETE_BATCH, SCAN_COUNT, StoreBase
from homepage.store.errors import NotPublished, StoreError, guarded
from homepage.store.records import ReadState, as_served, decode_profile, dense, user_of_key, user_state
from homepage.store.scripts import CACHE_PAGE, PATCH_PROFILE
from homepage.stream_ids import stream_id_key

PAGE_CACHE_FIELDS = 16  # cached pages a user may have at once (one per policy, size, device, region asked for)


class PageReads(StoreBase):
    """A page request's one round-trip, the page cache, the served-page log and users' profiles."""

    @guarded
    def read_user_state(self, user_id: int, now: int, catalog: Catalog, version: str | None = None) -> UserState:
        """One user's state as of ``now`` in one pipelined round-trip (history + profile)."""
        v = self._resolve(version)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.hist(v, user_id))
        pipe.hgetall(self.keys.api_profile(user_id))
        pipe.hgetall(self.keys.profile(v, user_id))
        raw_hist, stated, published = pipe.execute()
        return user_state(user_id, now, catalog, raw_hist, as_served(stated, published))

    @guarded
    def read_global_state(self, now: int, catalog: Catalog, version: str | None = None) -> GlobalState:
        """World counters of a version, decayed to ``now`` (two round-trips; refresh it periodically)."""
        v = self._resolve(version)
        m = self.meta(v)
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for name in ("counts", "decayed", "decayed_late", "rating_sum", "rating_count"):
            pipe.hgetall(k.glob(v, name))
        pipe.smembers(k.regions(v))
        pipe.scard(k.users(v))
        counts, dec, late, rsum, rcount, regions_raw, n_users = pipe.execute()
        regions = sorted(r.decode() for r in regions_raw)
        for r in regions:
            for name in ("counts", "decayed", "decayed_late"):
                pipe.hgetall(k.region(v, r, name))
        per_region = pipe.execute() if regions else []
        held = {(None, "counts"): len(counts), (None, "decayed"): len(dec), (None, "rating_sum"): len(rsum), (None, "rating_count"): len(rcount)}
        held |= {(r, name): len(per_region[3 * i + j]) for i, r in enumerate(regions) for j, name in enumerate(("counts", "decayed"))}
        if lost := m.world_lost(held):
            # zeros in their place would serve empty trending, top-N and fallback rows, and report ready
            raise StoreError(
                f"version {v!r}: world counters lost from Redis since the publish: {', '.join(lost[:6])}"
                f"{f' and {len(lost) - 6} more' if len(lost) > 6 else ''} "
                "(evicted under a maxmemory-policy other than noeviction?); publish again"
            )
        scale = decay.read_scale(now, m.epoch, m.half_life)

        def decayed(raw: Mapping[bytes, bytes], raw_late: Mapping[bytes, bytes]) -> np.ndarray:
            d = dense(raw, catalog, np.float64, scale)
            if not raw_late or m.late_epoch is None:
                return d
            return frozen(d + decay.late_decayed(dense(raw_late, catalog, np.float64), now, m.late_epoch, m.half_life))

        return GlobalState(
            as_of=int(now),
            half_life=m.half_life,
            counts=dense(counts, catalog, np.int64),
            decayed=decayed(dec, late),
            rating_sum=dense(rsum, catalog, np.float64),
            rating_count=dense(rcount, catalog, np.int64),
            region_counts={r: dense(per_region[3 * i], catalog, np.int64) for i, r in enumerate(regions)},
            region_decayed={r: decayed(per_region[3 * i + 1], per_region[3 * i + 2]) for i, r in enumerate(regions)},
            n_users=int(n_users),
        )

    @guarded
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
        pipe.get(self.keys.seq(user_id))
        cached, raw_hist, stated, published, seq = pipe.execute()
        profile = as_served(stated, published)
        if use_cache and cached is not None:
            return cached, None, None
        if raw_hist is None and not stated and not published and not self.client.exists(self.keys.meta(version)):
            # a flushed or restarted-empty Redis reads like a new user; the page would be built from
            # nothing, cached and logged until the next refresh noticed (checked for such reads only)
            raise NotPublished(f"version {version} is not in Redis")
        return None, user_state(user_id, now, catalog, raw_hist, profile), ReadState.of(raw_hist, profile, seq)

    @guarded
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
            args = (cache_field, page, ttl_seconds, read.hist_len, read.region, read.genres, PAGE_CACHE_FIELDS, read.seq)
            keys = [key, k.hist(version, user_id), k.profile(version, user_id), k.api_profile(user_id), k.seq(user_id)]
            self._queue_script(pipe, CACHE_PAGE, keys, args)
        if served is not None:
            pipe.xadd(
                k.served,
                {"u": str(int(user_id)), "p": served},
                maxlen=self.settings.served_maxlen,
                approximate=True,
            )
        out = pipe.execute()
        return bool(out[0]) if read is not None else True

    @guarded
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

    @guarded
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
        self.client.eval(PATCH_PROFILE, len(keys), *keys, *args)

    @guarded
    def get_profile(self, user_id: int, version: str | None = None) -> tuple[str | None, tuple[str, ...]] | None:
        """A user's profile as served: the one they set, else the version's; None when neither exists."""
        region, genres, api = self.client.hmget(self.keys.api_profile(user_id), "region", "genres", "api")
        if api is not None:
            return decode_profile(region, genres)
        v = self._version_or_none(version)
        if v is None:
            return None
        region, genres = self.client.hmget(self.keys.profile(v, user_id), "region", "genres")
        return None if region is None and genres is None else decode_profile(region, genres)

    @guarded
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

    @guarded
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
                    out[user_of_key(key)] = decode_profile(region, genres)
        return out

    @guarded
    def put_floor_page(self, page: bytes) -> None:
        """Store the benchmark's precomputed page (``p:bench:floor``)."""
        self.client.set(self.keys.floor, page)

    @guarded
    def get_floor_page(self) -> bytes | None:
        """The benchmark floor: one GET of a precomputed page."""
        return self.client.get(self.keys.floor)
