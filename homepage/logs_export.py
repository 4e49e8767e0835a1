"""Served pages joined with their attributed plays, in the served-log format replay and training read.

Pure: takes the served-stream records and event-stream records (as read by the store) and
returns a frame of ``homepage.servedlogs.schema.SERVED_LOG_SCHEMA`` columns, one row per
impression. A play is attributed to an impression by (page id, row index, column index),
or by (page id, title id) when the client sent no position.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd

from homepage.servedlogs.schema import COLUMNS


def served_impressions(served: Iterable[tuple[str, int, str]], events: Iterable[tuple[str, int, str]]) -> pd.DataFrame:
    """One row per (page, row, column) served, with ``played`` from the attributed plays.

    A play counts for a slot only if it is the page's user playing the title shown there: a
    client's wrong slot or page id must not credit another title (or another user's page).
    """
    by_slot: set[tuple[str, int, int, int, int]] = set()
    by_title: set[tuple[str, int, int]] = set()
    for _, user, raw in events:
        e = json.loads(raw)
        if e.get("kind") != "play" or not e.get("page_id"):
            continue
        if e.get("row_index") is not None and e.get("col_index") is not None:
            by_slot.add((e["page_id"], int(e["row_index"]), int(e["col_index"]), int(e["title_id"]), int(user)))
        else:
            by_title.add((e["page_id"], int(e["title_id"]), int(user)))
    out: dict[str, list[object]] = {c: [] for c in COLUMNS}
    for _, _, raw in served:
        p = json.loads(raw)
        for ri, row in enumerate(p["rows"]):
            variants = row.get("variants") or []
            props = row.get("propensities") or []
            for ci, tid in enumerate(row["titles"]):
                out["page_id"].append(p["page_id"])
                out["user_id"].append(int(p["user_id"]))
                out["ts"].append(int(p["ts"]))
                out["policy"].append(p["policy"])
                out["row_index"].append(ri)
                out["col_index"].append(ci)
                out["row_id"].append(row["row_id"])
                out["ranker"].append(row["ranker"])
                out["title_id"].append(int(tid))
                out["variant_id"].append(variants[ci] if ci < len(variants) else None)
                out["row_propensity"].append(1.0)  # the served policies are deterministic
                out["artwork_propensity"].append(float(props[ci]) if ci < len(props) else None)
                user = int(p["user_id"])
                played = (p["page_id"], ri, ci, int(tid), user) in by_slot or (p["page_id"], int(tid), user) in by_title
                out["played"].append(int(played))
    return pd.DataFrame(out, columns=list(COLUMNS))
