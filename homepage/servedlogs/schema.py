"""The served-log format: one Parquet row per impression of a title on a served page.

This module is the one place the columns are defined; ``homepage logs export`` (the
service) and ``homepage simulate-logs`` (the synthetic world) both write exactly
``SERVED_LOG_SCHEMA``, and every reader goes through ``read_served_logs``.

Columns:

- ``page_id`` (string): the served page; all impressions of one page share it.
- ``user_id`` (int64), ``ts`` (int64, Unix seconds): who was served, when.
- ``policy`` (string): the policy that built the page; pages whose policy is listed as
  randomised (``RANDOM_POLICY`` by default) are the ones examination is estimated from.
- ``row_index``, ``col_index`` (int32, 0-based): the slot on the page.
- ``row_id`` (string), ``ranker`` (string): the candidate row placed at ``row_index``.
- ``title_id`` (int64), ``variant_id`` (string, null when no artwork choice was made).
- ``row_propensity`` (float64 in (0, 1]): probability that the logging policy chose this
  row at this stage (1 for a deterministic policy).
- ``artwork_propensity`` (float64 in (0, 1], null without artwork choice): probability of
  the artwork variant shown.
- ``played`` (int8 0/1): a play attributed to this impression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from homepage.errors import HomepageError
from homepage.replaced_file import replaced

RANDOM_POLICY = "random"

SERVED_LOG_SCHEMA = pa.schema(
    [
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("row_index", pa.int32(), nullable=False),
        pa.field("col_index", pa.int32(), nullable=False),
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("ranker", pa.string(), nullable=False),
        pa.field("title_id", pa.int64(), nullable=False),
        pa.field("variant_id", pa.string(), nullable=True),
        pa.field("row_propensity", pa.float64(), nullable=False),
        pa.field("artwork_propensity", pa.float64(), nullable=True),
        pa.field("played", pa.int8(), nullable=False),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SERVED_LOG_SCHEMA.names)
_REQUIRED = tuple(f.name for f in SERVED_LOG_SCHEMA if not f.nullable)


def to_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as a table of exactly ``SERVED_LOG_SCHEMA`` (missing nullable columns become null)."""
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise HomepageError(f"served log: missing column(s) {', '.join(missing)}")
    if "ts" in frame.columns and not pd.api.types.is_integer_dtype(frame["ts"].dtype):
        # a Parquet timestamp would be read as microseconds since 1970: pages far in the future, rebuilt with later history
        raise HomepageError(f"served log: ts is {frame['ts'].dtype}, not integer Unix seconds")
    cols = {}
    for f in SERVED_LOG_SCHEMA:
        if f.name in frame.columns:
            cols[f.name] = pa.array(frame[f.name], type=f.type, from_pandas=True)
        else:
            cols[f.name] = pa.nulls(len(frame), type=f.type)
    return pa.table(cols, schema=SERVED_LOG_SCHEMA)


def write_served_logs(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as a served-log Parquet file (validated first)."""
    table = to_table(frame)
    validate(table.to_pandas(), str(path))
    path = Path(path)
    with replaced(path) as tmp:  # two exports may run at once: the last rename wins whole
        pq.write_table(table, tmp)
    return path


def read_served_logs(path: Path) -> pd.DataFrame:
    """Read and validate a served-log file; sorted by (ts, page_id, row_index, col_index)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError as e:
        raise HomepageError(f"{path}: served-log file not found") from e
    except pa.ArrowInvalid as e:
        raise HomepageError(f"{path}: not a Parquet file ({e})") from e
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise HomepageError(f"{path}: served log lacks column(s) {', '.join(missing)}")
    try:
        frame = to_table(table.to_pandas()).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as e:
        raise HomepageError(f"{path}: served log has a column of the wrong type ({e})") from e
    validate(frame, str(path))
    return frame.sort_values(["ts", "page_id", "row_index", "col_index"], kind="stable").reset_index(drop=True)


def validate(frame: pd.DataFrame, where: str) -> None:
    """Reject impossible values, naming the first offending row (0-based) and field."""
    if not len(frame):
        raise HomepageError(f"{where}: no impressions")
    for name in _REQUIRED:
        nulls = frame[name].isna().to_numpy()
        if nulls.any():
            raise HomepageError(f"{where}: row {int(np.flatnonzero(nulls)[0])}: {name} is null")
    for name in ("row_index", "col_index"):
        if int(frame[name].min()) != 0:
            raise HomepageError(f"{where}: {name} starts at {int(frame[name].min())}: slots are numbered from 0")
    checks = (
        ("row_index", frame["row_index"].to_numpy() < 0),
        ("col_index", frame["col_index"].to_numpy() < 0),
        ("played", ~np.isin(frame["played"].to_numpy(), (0, 1))),
        ("row_propensity", ~((frame["row_propensity"].to_numpy() > 0) & (frame["row_propensity"].to_numpy() <= 1))),
    )
    for name, bad in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HomepageError(f"{where}: row {i}: {name} = {frame[name].iloc[i].item()!r} is out of range")
    ap = frame["artwork_propensity"].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isnan(ap) & ~((ap > 0) & (ap <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HomepageError(f"{where}: row {i}: artwork_propensity = {float(ap[i])!r} is out of range")
    dup = frame.duplicated(["page_id", "row_index", "col_index"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise HomepageError(f"{where}: row {i}: slot (row_index, col_index) repeated within page {frame['page_id'].iloc[i]}")
