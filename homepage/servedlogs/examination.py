"""Examination probability of each slot (row, column), estimated from randomised served logs.

On randomised pages (rows permuted, titles shuffled within rows) a row's position and a
title's column are independent of what is shown, so under the position-based model the click-through rate of slot (r, c) is
``theta[r, c] * mean attraction``: examination is the CTR profile up to one scale, which
clicks cannot identify. Estimates are therefore relative to the top-left slot
(``theta[0, 0] = 1``); IPS corrections only need ratios, so the scale cancels.

Two estimators: ``full`` (one CTR per slot, unbiased but noisy in the sparse lower
right) and ``factorised`` (``theta[r, c] = a[r] * b[c]``, the row and column marginals
of the CTR, pooling every impression of a row or column; exact when examination
separates as the simulator's does, and far less noisy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from homepage.errors import HomepageError
from homepage.servedlogs.schema import RANDOM_POLICY


@dataclass(frozen=True)
class ExaminationEstimate:
    """Relative examination per slot and the evidence behind it."""

    theta: np.ndarray  # (R, C) relative examination, theta[0, 0] = 1
    impressions: np.ndarray  # (R, C) randomised impressions per slot
    plays: np.ndarray  # (R, C) plays among them
    method: str
    pages: int


def moved_play_weight(theta: np.ndarray, served: tuple[int, int], moved: tuple[int, int], floor: float) -> float:
    """What a play seen at slot ``served`` counts for at slot ``moved``: theta(moved) / theta(served).

    Slots beyond ``theta``'s shape take its last row or column; the denominator is floored, so
    one play never weighs more than 1 / ``floor``.
    """
    R, C = theta.shape
    shown = theta[min(served[0], R - 1), min(served[1], C - 1)]
    return float(theta[min(moved[0], R - 1), min(moved[1], C - 1)] / max(shown, floor))


MIN_RANDOM_PAGES = 20
MIN_RANDOM_PLAYS = 30


def estimate_examination(
    logs: pd.DataFrame,
    rows: int | None = None,
    cols: int | None = None,
    method: str = "factorised",
    randomised_policies: tuple[str, ...] = (RANDOM_POLICY,),
    prior: float = 1.0,
    full_rows_only: bool = True,
    strict_size: bool = False,
    where: str = "served log",
) -> ExaminationEstimate:
    """Estimate relative examination from the randomised pages of ``logs`` (a served-log frame).

    Only rows filled to full width are used by default (``full_rows_only``): a short row
    occupies only the first columns, and its content differs from a full row's.
    ``prior`` adds pseudo-impressions at the overall CTR to every slot (light smoothing), so
    slots the randomised pages never showed get the prior; ``strict_size`` refuses instead a
    ``rows`` or ``cols`` larger than the randomised pages (the ``examination`` command's options).
    ``where`` names the log in errors (its file).
    """
    if method not in ("factorised", "full"):
        raise HomepageError(f"method: {method!r} is not one of factorised, full")
    rand = logs[logs["policy"].isin(randomised_policies)]
    if rand.empty:
        raise HomepageError(f"{where}: no randomised pages (policy in {list(randomised_policies)}) to estimate examination from")
    logged_rows = int(rand["row_index"].max()) + 1
    logged_cols = int(rand["col_index"].max()) + 1
    if strict_size and rows is not None and rows > logged_rows:
        raise HomepageError(f"rows {rows}: the randomised pages of the served log have {logged_rows} rows")
    if strict_size and cols is not None and cols > logged_cols:
        raise HomepageError(f"cols {cols}: the randomised pages of the served log have {logged_cols} columns")
    if full_rows_only:
        # short rows fill only the first columns and differ in content from full ones
        width = rand.groupby(["page_id", "row_index"])["col_index"].transform("size").to_numpy()
        rand = rand[width == logged_cols]
    r = rand["row_index"].to_numpy(np.int64)
    c = rand["col_index"].to_numpy(np.int64)
    y = rand["played"].to_numpy(np.float64)
    R = int(rows if rows is not None else r.max() + 1)
    C = int(cols if cols is not None else c.max() + 1)
    keep = (r < R) & (c < C)
    r, c, y = r[keep], c[keep], y[keep]
    imp = np.zeros((R, C))
    clk = np.zeros((R, C))
    np.add.at(imp, (r, c), 1.0)
    np.add.at(clk, (r, c), y)
    total = clk.sum()
    if total <= 0:
        raise HomepageError(f"{where}: the randomised pages have no plays; examination cannot be estimated")
    pages = int(rand["page_id"].nunique())
    if pages < MIN_RANDOM_PAGES or total < MIN_RANDOM_PLAYS or imp[0, 0] == 0:
        # one randomised page gave a slot 1,178x the top-left one, used as a correction without a word
        raise HomepageError(
            f"{where}: {pages} randomised pages with {int(total)} plays ({int(imp[0, 0])} impressions in the top-left slot) "
            f"are too few to estimate examination (at least {MIN_RANDOM_PAGES} pages, {MIN_RANDOM_PLAYS} plays and a shown "
            "top-left slot); estimate it from a larger log (`homepage examination --json`, then --examination), or train with --no-correction"
        )
    base = total / imp.sum()
    if method == "full":
        ctr = (clk + prior * base) / (imp + prior)
    else:
        # CTR of slot (r, c) = a_r b_c m with impressions spread over the grid unevenly (short
        # rows); a few alternating updates fit the rank-one model to the counts exactly.
        a = np.ones(R)
        b = np.ones(C)
        for _ in range(50):
            a = (clk.sum(1) + prior * base) / ((imp * b[None, :]).sum(1) + prior)
            b = (clk.sum(0) + prior * base) / ((imp * a[:, None]).sum(0) + prior)
        ctr = a[:, None] * b[None, :]
    theta = ctr / ctr[0, 0]
    return ExaminationEstimate(theta, imp, clk, method, int(rand["page_id"].nunique()))
