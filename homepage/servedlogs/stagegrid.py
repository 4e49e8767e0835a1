"""The (rows x columns) grid of titles each remaining row would show at a stage.

``StageView`` is being reworked (a dense ``effective`` array, or an ``effective(j)`` method
over lazily kept arrays); this adapter reads either through the public attribute only, so the served-log code does
not depend on which one is installed.
"""

from __future__ import annotations

import numpy as np

from homepage.pagebuilder.features import StageView


def effective_grid(view: StageView, cols: int) -> np.ndarray:
    """(k, cols) catalog indices of the titles each remaining row would show now, -1 pad."""
    eff = getattr(view, "effective")
    if not callable(eff):
        out = np.asarray(eff)[:, :cols]
        if out.shape[1] < cols:
            out = np.pad(out, ((0, 0), (0, cols - out.shape[1])), constant_values=-1)
        return out
    out = np.full((view.remaining.size, cols), -1, dtype=np.int64)
    for j in range(view.remaining.size):
        titles = np.asarray(eff(j))[:cols]
        out[j, : titles.size] = titles
    return out
