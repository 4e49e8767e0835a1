"""Exponentially decayed counters kept in "log-time" form, so an update is O(1) per event.

The decayed count of a title at time ``now`` is ``sum_i 2**(-(now - ts_i) / h)``. Stored
naively, every stored value would have to be multiplied down as time passes. Instead the
store keeps ``S = sum_i 2**((ts_i - epoch) / h)`` for a fixed ``epoch``: an event adds
its own weight and nothing else changes, and a read multiplies by ``2**(-(now - epoch) / h)``.
Weights grow by 2 per half-life after ``epoch``; float64 holds 2**1000, so an epoch is
good for about a thousand half-lives. Publish rebases the epoch to the published state's time.

That time may be years before the clock events arrive on (a MovieLens release served on the wall
clock: ml-1m's ratings end in 2003, over a thousand 7-day half-lives ago). So a version also keeps
a second set of sums relative to its ``late_epoch`` (the wall clock at publish): an event too far
after ``epoch`` for the first set adds its weight to the second, and a read adds the two up.
"""

from __future__ import annotations

import numpy as np

# exponent above which a weight is too close to float64 overflow to be trusted
MAX_EXPONENT = 1000.0
# exponent above which an event goes to the late sums (room left for 2**100 events before a sum overflows)
LATE_EXPONENT = 900.0


def split_weights(ts: np.ndarray, epoch: int, late_epoch: int | None, half_life: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight, goes to the late sums) per event: relative to ``epoch``, or to ``late_epoch`` past ``LATE_EXPONENT`` half-lives after it."""
    ts = np.asarray(ts, dtype=np.float64)
    x = (ts - float(epoch)) / float(half_life)
    late = x > LATE_EXPONENT if late_epoch is not None else np.zeros(x.shape, bool)
    if late_epoch is not None:
        x = np.where(late, (ts - float(late_epoch)) / float(half_life), x)
    # only a large positive exponent overflows: a late event long before ``late_epoch`` weighs 0, as it does by now
    if np.any(x > MAX_EXPONENT):
        raise OverflowError(
            f"decay epochs {epoch} and {late_epoch} too far from ts {int(np.max(ts))} for a half-life of {half_life:g} s: "
            "republish (a publish takes the wall clock as its late epoch)"
        )
    return np.exp2(x), late


def late_decayed(stored: np.ndarray, now: int, late_epoch: int, half_life: float) -> np.ndarray:
    """The late sums decayed to ``now``: ``stored * 2**(-(now - late_epoch) / h)``, in log form (its factor alone may overflow)."""
    stored = np.asarray(stored, dtype=np.float64)
    out = np.zeros(stored.shape, np.float64)
    pos = stored > 0
    out[pos] = np.exp2(np.log2(stored[pos]) - (float(now) - float(late_epoch)) / float(half_life))
    return out


def read_scale(now: int, epoch: int, half_life: float) -> float:
    """The factor turning stored log-time sums into decayed counts as of ``now``."""
    return float(np.exp2(-(float(now) - float(epoch)) / float(half_life)))


def to_stored(decayed: np.ndarray, as_of: int, epoch: int, half_life: float) -> np.ndarray:
    """Stored form of counts decayed to ``as_of`` (``GlobalState.decayed``), relative to ``epoch``."""
    return np.asarray(decayed, dtype=np.float64) / read_scale(as_of, epoch, half_life)

