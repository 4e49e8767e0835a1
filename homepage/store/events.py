"""Events into the store: three single-slot steps per batch, each atomic and safe to repeat (``scripts``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from homepage.catalog import Catalog
from homepage.domain import EVENT_CODES, Event
from homepage.state import PLAY, RATING
from homepage.store.base import DELETE_BATCH, SCAN_COUNT, StoreBase
from homepage.store.errors import IdempotencyConflict, StoreError, guarded
from homepage.store.records import HISTORY_DTYPE, LEGACY_KEY_VALUE, OutboxEntry, counted, event_payloads, event_record, key_digest, user_of_key
from homepage.store.scripts import ATTEMPT_TTL_SECONDS, GLOBAL_STEP, TRIM_STEP, USER_STEP


class EventWrites(StoreBase):
    """Appending events (user slots, then the global slot, then the user slots again) and reading the events stream."""

    @guarded
    def append_events(
        self,
        events: Sequence[Event],
        catalog: Catalog,
        idempotency_keys: Sequence[str | None] | None = None,
        event_digests: Sequence[str | None] | None = None,
    ) -> int:
        """Apply a batch of events to the active version; returns how many applied (not duplicates).

        Three single-slot steps (user slots, global slot, user slots), each atomic and safe to
        repeat; see ``homepage.store.scripts``. An event whose idempotency key the user already sent
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
        digests = [key_digest(key, e, d) for key, e, d in zip(ikeys, events, given)]
        if len(by_user) > 1 and (reused := self._reused_keys(events, ikeys, digests)):
            raise IdempotencyConflict(reused)  # before any user's step 1: nothing of the batch is written
        payloads = event_payloads(events, catalog, v, m, token)
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
    ) -> tuple[int, dict[int, list[OutboxEntry]], list[int]]:
        """Step 1: each user's events into their slot (one script per user, pipelined).

        Returns the events applied, the outboxes, and the batch positions of events refused for a
        reused key (their user's events are not written).
        """
        k, s = self.keys, self.settings
        # past the bound a history keeps its newest three quarters: trimmed once every quarter, not per event
        most_bytes = s.max_history_records * HISTORY_DTYPE.itemsize
        kept_bytes = (3 * s.max_history_records // 4) * HISTORY_DTYPE.itemsize
        pipe = self.client.pipeline(transaction=False)
        for u, idx in by_user.items():
            keys = [k.hist(v, u), k.page(v, u), k.api_profile(u), k.outbox(u), k.seq(u), k.attempt(u, token), k.profile(v, u)]
            args: list[Any] = [s.idempotency_ttl_seconds, ATTEMPT_TTL_SECONDS, most_bytes, kept_bytes, HISTORY_DTYPE.itemsize]
            for i in idx:
                if ikeys[i]:
                    keys.append(k.idempotency(u, ikeys[i]))
                    args.append(len(keys))
                else:
                    args.append(0)
                args.append(digests[i])
                args.append(event_record(events[i]) if EVENT_CODES[events[i].kind] in (PLAY, RATING) else b"")
                args.append(payloads[i])
            self._queue_script(pipe, USER_STEP, keys, args)
        applied = 0
        outboxes: dict[int, list[OutboxEntry]] = {}
        reused: list[int] = []
        for (u, idx), (n, entries) in zip(by_user.items(), pipe.execute()):
            if int(n) < 0:
                reused += [idx[int(p) - 1] for p in entries]
                continue
            applied += int(n)
            outboxes[u] = [OutboxEntry.parse(u, raw) for raw in entries]
        return applied, outboxes, sorted(reused)

    def _step_global_slot(
        self, outboxes: Mapping[int, Sequence[OutboxEntry]], token: str, active: str | None = None
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
                v, tid = p["v"], p["t"]
                c = counted(e, self.meta(v) if e.earliest is not None else None)
                if c.count:
                    ops.append(["HINCRBY", ki(k.glob(v, "counts")), tid, "1"])
                for sums, w in c.weights:
                    ops.append(["HINCRBYFLOAT", ki(k.glob(v, sums)), tid, w])
                if c.stars is not None:
                    ops.append(["HINCRBYFLOAT", ki(k.glob(v, "rating_sum")), tid, c.stars])
                if c.rating_count:
                    ops.append(["HINCRBY", ki(k.glob(v, "rating_count")), tid, "1"])
                ops.append(["SADD", ki(k.users(v)), str(e.user_id)])
                if e.region and (c.count or c.weights):
                    ops.append([
                        "REGION", ki(k.regions(v)), e.region, ki(k.region(v, e.region, "counts")), "1" if c.count else "0",
                        [[ki(k.region(v, e.region, sums)), w] for sums, w in c.weights], tid, self.settings.max_regions,
                    ])
            doc.append([str(e.user_id), str(e.seq), ["u", str(e.user_id), "v", p["v"], "e", p["e"], "q", str(e.seq)], ops])
        keys = sorted(key_index, key=key_index.__getitem__)
        out = self.client.eval(GLOBAL_STEP, len(keys), *keys, str(self.settings.events_maxlen), json.dumps(doc))
        return {int(out[i]): int(out[i + 1]) for i in range(0, len(out), 2)}

    def _step_trim_outboxes(self, marks: Mapping[int, int]) -> None:
        """Step 3: drop outbox entries the global slot has applied (one script per user, pipelined)."""
        if not marks:
            return
        pipe = self.client.pipeline(transaction=False)
        for u, mark in marks.items():
            self._queue_script(pipe, TRIM_STEP, [self.keys.outbox(u)], [str(mark)])
        pipe.execute()

    @guarded
    def drain_outboxes(self) -> int:
        """Finish events an interrupted, never-retried call left in users' outboxes; returns how many users.

        Steps 2 and 3 for every non-empty outbox (found with SCAN). ``gc`` runs it.
        """
        users = sorted({user_of_key(key) for key in self.client.scan_iter(match=self.keys.outbox_pattern, count=SCAN_COUNT)})
        for start in range(0, len(users), DELETE_BATCH):
            chunk = users[start : start + DELETE_BATCH]
            pipe = self.client.pipeline(transaction=False)
            for u in chunk:
                pipe.lrange(self.keys.outbox(u), 0, -1)
            outboxes = {u: [OutboxEntry.parse(u, raw) for raw in raw_list] for u, raw_list in zip(chunk, pipe.execute())}
            self._step_trim_outboxes(self._step_global_slot(outboxes, ""))
        return len(users)

    @guarded
    def event_entries(self) -> list[tuple[str, int, str]]:
        """(stream id, user id, event JSON) of the events stream, oldest first."""
        return [(eid.decode(), int(f[b"u"]), f[b"e"].decode()) for eid, f in self._stream_entries(self.keys.events)]

    @guarded
    def events_since(self, after: str | None) -> tuple[list[tuple[str, int, str, int | None]], dict[str, int]]:
        """The events stream's entries after ``after`` and the stream's tally (added, erased, and its ``epoch``) as of the last one.

        Entries are (stream id, user id, event JSON, the user's sequence number of it: None for
        entries written before they carried one).

        Read in chunks; the last chunk and the tally in one transaction, so the tally counts
        exactly the entries up to the last one returned (both keys are in the global slot).
        """
        k = self.keys
        out: list[tuple[str, int, str, int | None]] = []
        last = after
        while True:
            chunk = self.client.xrange(k.events, min="-" if last is None else "(" + last, max="+", count=SCAN_COUNT)
            out.extend(_stream_entry(eid, f) for eid, f in chunk)
            if chunk:
                last = chunk[-1][0].decode()
            if len(chunk) < SCAN_COUNT:
                break
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xrange(k.events, min="-" if last is None else "(" + last, max="+")
            pipe.hgetall(k.events_tally)
            rest, tally = pipe.execute()
        out.extend(_stream_entry(eid, f) for eid, f in rest)
        counts = {"added": int(tally.get(b"added", 0)), "erased": int(tally.get(b"erased", 0))}
        return out, {**counts, "epoch": tally[b"epoch"].decode()} if b"epoch" in tally else counts


def _stream_entry(eid: bytes, f: dict[bytes, bytes]) -> tuple[str, int, str, int | None]:
    """(stream id, user id, event JSON, the user's sequence number of it or None) of an events stream entry."""
    q = f.get(b"q")
    return eid.decode(), int(f[b"u"]), f[b"e"].decode(), int(q) if q is not None else None
