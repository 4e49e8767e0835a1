"""The log-time decayed counters (``homepage.decay``) against their definition, sum of 2^-(now - ts) / h."""

from __future__ import annotations

import numpy as np
import pytest

from homepage.decay import late_decayed, read_scale, split_weights, to_stored

H = 7 * 86_400.0


def test_early_and_late_sums_together_give_the_decayed_count() -> None:
    """Events up to 900 half-lives after the epoch go to the first sums, later ones to the late sums; a read adds both."""
    epoch, late_epoch = 0, int(1000 * H)
    ts = np.array([10 * H, 500 * H, 899 * H, 950 * H, 1001 * H, 1002.5 * H])
    now = int(1003 * H)
    w, late = split_weights(ts, epoch, late_epoch, H)
    assert late.tolist() == [False, False, False, True, True, True]
    early_sum, late_sum = w[~late].sum(), np.array([w[late].sum()])
    got = early_sum * read_scale(now, epoch, H) + late_decayed(late_sum, now, late_epoch, H)[0]
    assert got == pytest.approx(np.exp2(-(now - ts) / H).sum(), rel=1e-9)
    # counts decayed to a time go back to the stored form they came from
    decayed = np.exp2(-(now - ts[:3]) / H)
    assert to_stored(decayed, now, epoch, H) == pytest.approx(w[:3], rel=1e-9)


def test_an_event_too_far_past_both_epochs_is_refused_not_stored_as_infinity() -> None:
    with pytest.raises(OverflowError, match="republish"):
        split_weights(np.array([1050 * H]), 0, None, H)
    with pytest.raises(OverflowError, match="republish"):
        split_weights(np.array([2050 * H]), 0, int(1000 * H), H)
