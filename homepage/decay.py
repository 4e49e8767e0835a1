"""Exponentially decayed counters kept in "log-time" form, so an update is O(1) per event.

The decayed count of a title at time ``now`` is ``sum_i 2**(-(now - ts_i) / h)``. Stored
naively, every stored value would have to be multiplied down as time passes. Instead the
store keeps ``S = sum_i 2**((ts_i - epoch) / h)`` for a fixed ``epoch``: an event adds
its own weight and nothing else changes, and a read multiplies by ``2**(-(now - epoch) / h)``.
Weights grow by 2 per half-life after ``epoch``; float64 holds 2**1000, so an epoch is
good for about a thousand half-lives. Publish rebases the epoch to the publish time.
"""

from __future__ import annotations

import numpy as np

# exponent above which a weight is too close to float64 overflow to be trusted
MAX_EXPONENT = 1000.0


def event_weight(ts: np.ndarray | int, epoch: int, half_life: float) -> np.ndarray:
    """What each event adds to its stored counter: ``2**((ts - epoch) / half_life)``."""
    x = (np.asarray(ts, dtype=np.float64) - float(epoch)) / float(half_life)
    if np.any(x > MAX_EXPONENT):
        raise OverflowError(f"decay epoch {epoch} too old for ts {int(np.max(ts))}: rebase it (republish)")
    return np.exp2(x)


def read_scale(now: int, epoch: int, half_life: float) -> float:
    """The factor turning stored log-time sums into decayed counts as of ``now``."""
    return float(np.exp2(-(float(now) - float(epoch)) / float(half_life)))


def to_stored(decayed: np.ndarray, as_of: int, epoch: int, half_life: float) -> np.ndarray:
    """Stored form of counts decayed to ``as_of`` (``GlobalState.decayed``), relative to ``epoch``."""
    return np.asarray(decayed, dtype=np.float64) / read_scale(as_of, epoch, half_life)

