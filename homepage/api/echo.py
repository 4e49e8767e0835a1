"""Bounds on client input echoed back in error bodies.

An error names what was wrong, but echoing a 20 kB query value or a 50 kB JSON key back makes
every bad request an amplifier and buries the message; the first ``MAX_ECHO`` characters say
enough, and the marker says how much was cut.
"""

from __future__ import annotations

MAX_ECHO = 200  # characters of client input an error repeats
MAX_MESSAGE = 600  # characters of a whole error message (server text around at most one echo)


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def quoted(value: str, limit: int = MAX_ECHO) -> str:
    """``repr`` of a client's value for a message, clipped like ``clip`` (the marker outside the quotes)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value) - limit} more characters)"
