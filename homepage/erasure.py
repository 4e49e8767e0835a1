"""Erasure requests (``DELETE /users/{id}``) applied to a dataset's tables and to stream entries.

Redis forgets an erased user at once, but datasets are files: a later publish from a dataset
that still holds the user's events would bring them back. The store records each erasure as
a position in the events stream (the last id it generated at that moment). A dataset merged from
the stream past that position has already been cleaned (``merge-events`` did it), and what it
holds of the user since is their new activity; any other dataset (merged before the erasure,
or never) still holds what came before, so all of the user's rows are left out. Positions, not
clocks: event timestamps are the client's and cannot tell old activity from new.

A model bundle can hold a user's own parameters too (the artwork selector's per-user weights):
``user_weight_file`` names the file and ``file_without_users`` rewrites it. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from artwork.selector import ArtworkSelector
from homepage.stream_ids import stream_id_key


@dataclass(frozen=True)
class Erased:
    """A dataset's tables without the users erasures cover, and how many rows went."""

    events: pd.DataFrame
    users: pd.DataFrame
    events_dropped: int
    users_dropped: int


def pending_erasures(
    erasures: Mapping[int, str],
    merged_to: str | None,
    applied: Mapping[int, str] | None = None,
    counts: Mapping[int, int] | None = None,
) -> set[int]:
    """Users erased after a dataset's last merge position (every erased user for a dataset never merged).

    ``applied``: the erasures a merge already applied to the dataset (user -> ``erasure_id``): a
    user whose last erasure is that one is not pending, although its position can be at or past
    the mark (the stream generated nothing after it): what the merge took of them since is their
    new activity. ``counts``: how many times each user was erased (part of an erasure's identity).
    """
    applied = applied or {}
    mark = stream_id_key(merged_to) if merged_to is not None else None
    return {
        u for u, at in erasures.items()
        if (mark is None or stream_id_key(at) >= mark) and applied.get(u) != erasure_id(at, (counts or {}).get(u, 0))
    }


def erasure_id(at: str, count: int) -> str:
    """One erasure's identity: its stream position and the user's erasure count (two erasures with no stream
    entry in between share the position)."""
    return f"{at}#{count}"


def applied_erasures(mark: Mapping[str, object] | None) -> dict[int, str]:
    """The erasures a dataset's merge mark says it applied (user -> ``erasure_id``)."""
    raw = (mark or {}).get("erasures_applied") or {}
    return {int(u): str(at) for u, at in raw.items()}  # type: ignore[union-attr]


def drop_users(events: pd.DataFrame, users: pd.DataFrame, user_ids: set[int]) -> Erased:
    """Every events row and users row of ``user_ids`` left out."""
    if not user_ids:
        return Erased(events, users, 0, 0)
    ids = list(user_ids)
    ev = events["user_id"].isin(ids).to_numpy() if len(events) else None
    us = users["user_id"].isin(ids).to_numpy() if len(users) else None
    n_ev = int(ev.sum()) if ev is not None else 0
    n_us = int(us.sum()) if us is not None else 0
    return Erased(
        events[~ev].reset_index(drop=True) if n_ev else events,
        users[~us].reset_index(drop=True) if n_us else users,
        n_ev,
        n_us,
    )


def erased_entry(
    user_id: int, stream_id: str, erasures: Mapping[int, str], seq: int | None = None, erased_seqs: Mapping[int, int] | None = None
) -> bool:
    """Whether a stream entry of a user is from before that user's erasure (a merge must not take it).

    By the user's sequence number when the entry and the erasure both have one (a batch the
    erasure kept as new activity can sit in the stream before the erasure's position), else by
    the position.
    """
    at = erasures.get(user_id)
    if at is None:
        return False
    mark = erased_seqs.get(user_id) if erased_seqs is not None else None
    if seq is not None and mark is not None:
        return seq <= mark
    return stream_id_key(stream_id) <= stream_id_key(at)


def user_weight_file(manifest: bytes | None) -> str | None:
    """The file of a model bundle (from its ``manifest.json``) that holds weights of each user, or None."""
    return user_weight_path(json.loads(manifest)) if manifest else None


def user_weight_path(manifest: dict[str, Any]) -> str | None:
    """``user_weight_file`` of a parsed manifest.

    Only a trained artwork selector keeps per-user weights; rankers and the page model keep none
    (they fold a user's history in at request time).
    """
    artwork = manifest.get("components", {}).get("artwork")
    return f"{artwork['dir']}/selector.npz" if artwork and artwork.get("trained") else None


def file_without_users(data: bytes, user_ids: Iterable[int]) -> bytes | None:
    """``user_weight_file``'s bytes without these users' weights, or None when it has none of them."""
    return ArtworkSelector.saved_without_users(data, user_ids)
