"""Redis stream entry ids ("<ms>-<seq>") as sortable values: merge marks and erasure positions compare them."""

from __future__ import annotations

from homepage.errors import HomepageError


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as a (milliseconds, sequence) pair; ids compare as numbers, not strings."""
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError as e:
        raise HomepageError(f"not a stream id: {stream_id!r}") from e
