"""The Redis keyspace: every key name the project uses, and a version's metadata record.

Every multi-key command, pipeline read, transaction and script touches one hash slot, so the
same keys and code run on one server and on Redis Cluster. Keyspace (``p`` is the prefix, ``v`` a version). Hash tags put keys in slots::

    control slot {p:ctl}: the version pointer and what publish/rollback/gc change together
    p:{p:ctl}:active                 string  the version the API serves
    p:{p:ctl}:versions               list    published versions, oldest first
    p:{p:ctl}:all_versions           set     every version ever started (finds orphans for gc)
    p:{p:ctl}:retired_at             hash    version -> events stream's added tally when it stopped being live
    p:{p:ctl}:reloads                string  how many POST /admin/reload: every worker that sees it change reloads
    p:v:<v>:{p:ctl}:meta             hash    state (writing|complete|deleting), as_of, epoch, half_life, ...
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
                                             the event sent with the key (``"1"``: written before digests);
                                             an erasure keeps them (a retry is then a duplicate)
    p:{u:<id>}:outbox                list    events applied here, not yet confirmed by the global slot
    p:{u:<id>}:seq                   string  the user's event sequence (numbers outbox entries; a page read notes it, so
                                             its cache write is refused if events came in meanwhile, after an erasure too)
    p:{u:<id>}:try:<token>           string  result of one attempt (short TTL): a resent attempt is a no-op

    the global slot {p:g}: world counters of every version, the events stream
    p:v:<v>:{p:g}:counts|decayed|decayed_late|rating_sum|rating_count   hash title_id -> number
    p:v:<v>:{p:g}:r:<region>:counts|decayed|decayed_late                hash title_id -> number
                                             (decayed_late: relative to the meta's late_epoch, ``homepage.decay``)
    p:v:<v>:{p:g}:regions            set     regions with counters
    p:v:<v>:{p:g}:users              set     users with at least one counted event
    p:{p:g}:events                   stream  every accepted event (capped): u user, v version, e event JSON,
                                             q the user's sequence number of it
    p:{p:g}:applied                  hash    user id -> highest outbox sequence applied here
    p:{p:g}:events_tally             hash    entries ever added to / erased from the events stream, and its
                                             epoch (set by the first publish: a new one after a restart empty)
    p:{p:g}:erased                   hash    user id -> events stream position of their DELETE /users
    p:{p:g}:erased_seq               hash    user id -> their event sequence at that DELETE (``q`` up to it: erased)
    p:{p:g}:erasure_count            hash    user id -> how many DELETEs erased them (tells two at one position apart)
    p:{p:g}:served_sweeps            hash    user id -> "<served stream id>|<unix ms>": re-sweep the served
                                             stream past that id for the user's pages until then

    single keys, each in its own slot
    p:v:<v>:bundle                   hash    relative path -> file bytes of the model bundle
    p:served                         stream  served pages (capped)
    p:bench:floor                    string  bench/serve.py's precomputed page (its floor endpoint)

A page request reads one user slot (one pipelined round-trip); the world counters are read
from the global slot every few seconds and the pointer and metadata from the control slot
(cached), each in its own call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields

from homepage.store.errors import StoreCorrupt

VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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
    def reloads(self) -> str:
        return f"{self.prefix}:{self._ctl}:reloads"

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
        """A global counter hash: ``counts``, ``decayed``, ``decayed_late``, ``rating_sum``, ``rating_count``."""
        return f"{self.prefix}:v:{v}:{self._g}:{name}"

    def region(self, v: str, region: str, name: str) -> str:
        """A per-region counter hash: ``counts``, ``decayed`` or ``decayed_late``."""
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

    @property
    def erased_seq(self) -> str:
        """user id -> their event sequence at their erasure: stream entries numbered above it are new activity."""
        return f"{self.prefix}:{self._g}:erased_seq"

    @property
    def erasure_count(self) -> str:
        """user id -> how many times they were erased (an erasure's identity, with its position)."""
        return f"{self.prefix}:{self._g}:erasure_count"

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
    state: str  # "writing", "complete", or "deleting" (an orphan a gc has claimed)
    as_of: int
    epoch: int
    half_life: float
    created: float
    n_titles: int
    n_users: int = 0
    bundle_version: str | None = None
    source: str | None = None
    late_epoch: int | None = None  # the late decayed sums' epoch (``homepage.decay``); None: none (an old record reads as ``late_epoch_of``)
    # the world counter hashes publish wrote, as (region or None, name, titles in it): events only add titles to them,
    # so a hash holding fewer was lost (evicted) since; None for records written before 2026-12-07
    world_fields: tuple[tuple[str | None, str, int], ...] | None = None

    def to_redis(self) -> dict[str, str]:
        out = {f.name: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}
        if self.world_fields is not None:
            out["world_fields"] = json.dumps([list(w) for w in self.world_fields])
        return out

    def world_lost(self, held: Mapping[tuple[str | None, str], int]) -> list[str]:
        """The world hashes publish wrote that hold fewer titles now than then (``held``: (region or None, name) -> titles)."""
        lost = []
        for region, name, n in self.world_fields or ():
            if held.get((region, name), 0) < n:
                where = f"region {region!r} {name}" if region is not None else name
                lost.append(f"{where} ({held.get((region, name), 0):,} of {n:,} titles)")
        return lost

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes]) -> VersionMeta:
        """The record as stored; ``StoreCorrupt`` naming the fields it lacks (a record cut short, e.g. evicted and partly rewritten)."""
        d = {k.decode(): v.decode() for k, v in raw.items()}
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise StoreCorrupt(f"version metadata {d.get('version', '?')!r} lacks {', '.join(missing)} (evicted by Redis's maxmemory-policy?)")
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
            late_epoch=int(d["late_epoch"]) if "late_epoch" in d else late_epoch_of(int(d["as_of"]), float(d["created"])),
            world_fields=tuple((r, str(name), int(n)) for r, name, n in json.loads(d["world_fields"])) if "world_fields" in d else None,
        )


def late_epoch_of(as_of: int, created: float) -> int:
    """The late decayed sums' epoch of a version published at ``created`` with its state as of ``as_of``.

    A record from before ``late_epoch`` was stored gets the epoch its publish would have taken: a
    worker of this release serving it on the wall clock still counts events there (without it every
    one overflowed, a 500, until a republish).
    """
    return max(int(as_of), int(created))
