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
    """Distinct layouts of ``logs`` in time order; rows beyond a gap in row_index are dropped."""
    tidx = catalog.index_of(logs["title_id"].to_numpy(np.int64))
    frame = logs.assign(_t=tidx)
    frame["_key"] = frame.groupby("page_id", sort=False)["_t"].transform(lambda s: hash(tuple(s)))
    for (uid, ts, policy, _), g in frame.groupby(["user_id", "ts", "policy", "_key"], sort=True):
        visits = int(g["page_id"].nunique())
        first = g[g["page_id"] == g["page_id"].iloc[0]]
        R = int(first["row_index"].max()) + 1
        C = int(first["col_index"].max()) + 1
        grid = np.full((R, C), -1, dtype=np.int64)
        grid[first["row_index"].to_numpy(), first["col_index"].to_numpy()] = first["_t"].to_numpy()
        plays = np.zeros((R, C))
        np.add.at(plays, (g["row_index"].to_numpy(), g["col_index"].to_numpy()), g["played"].to_numpy(np.float64))
        rid = first.drop_duplicates("row_index").set_index("row_index")["row_id"]
        rows = []
        for r in range(R):
            if r not in rid.index:
                break
            rows.append(str(rid.loc[r]))
        yield Layout(int(uid), int(ts), str(policy), tuple(rows), grid[: len(rows)], plays[: len(rows)], visits)
