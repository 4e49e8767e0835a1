"""Erasure of one user (``DELETE /users``): every key and stream entry, in every version."""

from __future__ import annotations

import time

from homepage.store.base import DELETE_BATCH, SCAN_COUNT, StoreBase
from homepage.store.errors import guarded
from homepage.store.scripts import ERASE_ENTRIES, ERASE_MARK, ERASE_USER_SLOT, REPLACE_IF_SAME
from homepage.stream_ids import stream_id_key

SERVED_SWEEP_SECONDS = 60  # after an erasure, pages built before it and logged late are swept this long


class UserErasure(StoreBase):
    """Erasing a user, and sweeping the served pages logged after their erasure."""

    @guarded
    def delete_user(self, user_id: int) -> int:
        """Erase every key and stream entry of one user, in every version; returns how many went.

        World counters are aggregates and stay; the user leaves the active-users sets. Their
        pending outbox is dropped with their other keys (their events are being erased). What
        stays: the user's event sequence counter, with the applied mark raised to it, so that a
        batch in flight at the erasure cannot reach the stream afterwards; the erasure's
        position in the events stream and that sequence (``Keyspace.erased``, ``erased_seq``), so that a later publish or
        ``merge-events`` leaves out what datasets hold of the user from before it
        (``homepage.erasure``); the served-page sweep mark for ``SERVED_SWEEP_SECONDS``; and the
        user's idempotency keys (an event digest each) until their TTL, so that a client's retry
        of an erased event is a duplicate instead of bringing it back.

        An event batch racing the erasure is erased whole or kept whole: one whose user step
        came before the erasure's (its sequence number at or below the one read there) goes from
        the history and the stream; one after it is new activity and stays in both.
        """
        k = self.keys
        u = int(user_id)
        versions = sorted(v.decode() for v in self.client.smembers(k.all_versions))
        # keys outside the user step (attempt results) first: a batch landing after this is handled by the step
        kept = {k.seq(u).encode(), k.outbox(u).encode()}
        idem = k.idempotency(u, "").encode()
        own = [
            key for key in self.client.scan_iter(match=k.user_unversioned_pattern(u), count=SCAN_COUNT)
            if key not in kept and not key.startswith(idem)
        ]
        n = sum(self.client.unlink(*own[i : i + DELETE_BATCH]) for i in range(0, len(own), DELETE_BATCH))
        state = [k.api_profile(u)] + [k.user(v, u, part) for v in versions for part in ("hist", "profile", "page")]
        # the user's state and outbox go with reading their sequence: a batch numbered up to it is from before
        seq, gone = (int(x) for x in self.client.eval(ERASE_USER_SLOT, 2 + len(state), k.seq(u), k.outbox(u), *state))
        n += gone
        at_key = self._mark_erasure(u, seq)
        # after the mark: a batch from before the erasure whose stream step came in between added the user back
        pipe = self.client.pipeline(transaction=False)
        for v in versions:
            pipe.srem(k.users(v), str(u))
        pipe.execute()
        swept, swept_to = self._erase_stream_entries(u, seq, at_key)
        # a page read before the erasure can be logged after the sweep (the served stream is in
        # another slot than the user's state): ``sweep_served_after_erasures`` looks again
        until_ms = int((time.time() + SERVED_SWEEP_SECONDS) * 1000)
        self.client.hset(k.served_sweeps, str(u), f"{swept_to}|{until_ms}")
        return n + swept

    def _mark_erasure(self, u: int, seq: int) -> tuple[int, int]:
        """Record the erasure's position in the events stream and raise the user's applied mark to ``seq``; the position."""
        k = self.keys
        at = self.client.eval(ERASE_MARK, 5, k.events, k.erased, k.applied, k.erased_seq, k.erasure_count, str(u), str(seq))
        return stream_id_key(at.decode() if isinstance(at, bytes) else str(at))

    def _erase_stream_entries(self, u: int, seq: int, at_key: tuple[int, int]) -> tuple[int, str]:
        """Delete the user's events numbered up to ``seq`` and all their served pages; (how many, served id swept to).

        An events entry names its user sequence (``q``); one written before entries did is the
        user's if it is at or before the erasure's stream position ``at_key``.
        """
        k = self.keys
        user = str(u).encode()
        n, swept_to = 0, "0-0"
        for stream in (k.events, k.served):
            ids: list[bytes] = []
            for eid, fields in self._stream_entries(stream):
                if stream == k.served:
                    swept_to = eid.decode()
                if fields.get(b"u") != user:
                    continue
                q = fields.get(b"q")
                if stream == k.served or (int(q) <= seq if q is not None else stream_id_key(eid.decode()) <= at_key):
                    ids.append(eid)
            for start in range(0, len(ids), DELETE_BATCH):
                batch = ids[start : start + DELETE_BATCH]
                if stream == k.events:  # the tally counts the entries XDEL removed, in the same step
                    n += int(self.client.eval(ERASE_ENTRIES, 2, k.events, k.events_tally, *batch))
                else:
                    n += self.client.xdel(stream, *batch)
        return n, swept_to

    @guarded
    def recently_erased(self) -> list[int]:
        """Users erased in the last ``SERVED_SWEEP_SECONDS`` (their served pages are still being swept); one HKEYS."""
        return sorted(int(u) for u in self.client.hkeys(self.keys.served_sweeps))

    @guarded
    def sweep_served_after_erasures(self, now_ms: int | None = None) -> int:
        """Erase served pages of recently erased users logged after their erasure's sweep; returns how many went.

        A page whose read came before ``delete_user`` is logged after it when its write was in
        flight. For ``SERVED_SWEEP_SECONDS`` after an erasure the tail of the served stream
        past the erasure's sweep is swept again for the user (the API's refresh task calls this
        every few seconds; the pages a returning user is served in that window go too). One
        HGETALL when nothing is pending.
        """
        k = self.keys
        marks = self._served_sweep_marks()
        if not marks:
            return 0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        start = min(pos for pos, _, _ in marks.values())
        end = start  # the last entry looked at: the next sweep starts after it
        ids: list[bytes] = []
        for eid, fields in self._stream_entries(k.served, after=f"{start[0]}-{start[1]}"):
            end = stream_id_key(eid.decode())
            u = fields.get(b"u")
            user = int(u) if u is not None and u.isdigit() else None
            if user in marks and end > marks[user][0]:
                ids.append(eid)
        n = 0
        for at in range(0, len(ids), DELETE_BATCH):
            n += self.client.xdel(k.served, *ids[at : at + DELETE_BATCH])
        for user, (pos, until, raw) in marks.items():
            swept = max(end, pos)
            new = "" if now_ms >= until else f"{swept[0]}-{swept[1]}|{until}"
            self.client.eval(REPLACE_IF_SAME, 1, k.served_sweeps, str(user), raw, new)
        return n
