"""Served logs grouped into layouts: one entry per distinct page shown (several visits may share one)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from homepage.catalog import Catalog


@dataclass(frozen=True, eq=False)
class Layout:
    """A page as served, with plays summed over the visits that saw it."""

    user_id: int
    ts: int
    policy: str
    row_ids: tuple[str, ...]  # by row_index
    grid: np.ndarray  # (R, C) catalog indices, -1 empty or unknown
    plays: np.ndarray  # (R, C) plays summed over visits
    visits: int


def layouts(logs: pd.DataFrame, catalog: Catalog) -> Iterator[Layout]:
    """Distinct layouts of ``logs``, ordered by (user, ts, policy); adjacent visits of one page merge.

    Rows from the first gap in ``row_index`` on are dropped.
    """
    frame = logs.sort_values(["user_id", "ts", "policy", "page_id", "row_index", "col_index"], kind="stable")
    page = frame["page_id"].to_numpy()
    user = frame["user_id"].to_numpy(np.int64)
    ts = frame["ts"].to_numpy(np.int64)
    policy = frame["policy"].to_numpy()
    r_all = frame["row_index"].to_numpy(np.int64)
    c_all = frame["col_index"].to_numpy(np.int64)
    t_all = catalog.index_of(frame["title_id"].to_numpy(np.int64))
    y_all = frame["played"].to_numpy(np.float64)
    rid_all = frame["row_id"].to_numpy()
    if page.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, page[1:] != page[:-1]])
    ends = np.r_[starts[1:], page.size]
    current: Layout | None = None
    for a, b in zip(starts, ends):
        r, c = r_all[a:b], c_all[a:b]
        R, C = int(r.max()) + 1, int(c.max()) + 1
        grid = np.full((R, C), -1, dtype=np.int64)
        grid[r, c] = t_all[a:b]
        plays = np.zeros((R, C))
        plays[r, c] = y_all[a:b]
        present = np.zeros(R, dtype=bool)
        present[r] = True
        n_rows = int(np.argmin(present)) if not present.all() else R
        first = np.r_[True, r[1:] != r[:-1]]
        rows = tuple(str(x) for x in rid_all[a:b][first][:n_rows])
        key = (int(user[a]), int(ts[a]), str(policy[a]))
        if current is not None and (current.user_id, current.ts, current.policy) == key and current.row_ids == rows and np.array_equal(current.grid, grid[:n_rows]):
            current = Layout(*key, rows, current.grid, current.plays + plays[:n_rows], current.visits + 1)
            continue
        if current is not None:
            yield current
        current = Layout(*key, rows, grid[:n_rows], plays[:n_rows], 1)
    if current is not None:
        yield current
