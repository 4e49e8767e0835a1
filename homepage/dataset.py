"""The on-disk dataset: columnar Parquet tables plus a manifest, written atomically.

A dataset directory holds ``events.parquet``, ``titles.parquet``, ``variants.parquet``,
``users.parquet`` and ``manifest.json``. Ingest and the synthetic generator both write it
with :func:`write_dataset`; everything else reads it with :func:`load_dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from homepage.domain import KIND_BY_CODE
from homepage.errors import HomepageError

FORMAT_VERSION = 1

EVENT_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("title_id", pa.int64()),
        ("kind", pa.int8()),  # homepage.domain.EVENT_CODES
        ("ts", pa.int64()),
        ("watch_seconds", pa.float32()),
        ("progress", pa.float32()),
        ("stars", pa.float32()),
        ("page_id", pa.string()),
        ("row_id", pa.string()),
        ("row_index", pa.int16()),
        ("col_index", pa.int16()),
        ("variant_id", pa.string()),
        ("propensity", pa.float32()),
    ]
)
TITLE_SCHEMA = pa.schema(
    [
        ("title_id", pa.int64()),
        ("name", pa.string()),
        ("year", pa.int32()),  # 0 when unknown
        ("genres", pa.list_(pa.string())),
        ("cast", pa.list_(pa.string())),
        ("director", pa.list_(pa.string())),
        ("maturity", pa.string()),
        ("tags", pa.list_(pa.string())),
    ]
)
VARIANT_SCHEMA = pa.schema(
    [
        ("variant_id", pa.string()),
        ("title_id", pa.int64()),
        ("emphasis_genre", pa.string()),
        ("featured_cast", pa.string()),
        ("tone", pa.string()),
        ("image_url", pa.string()),
    ]
)
USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("region", pa.string()),
        ("created", pa.int64()),
        ("favourite_genres", pa.list_(pa.string())),  # set through PUT /users; older datasets lack the column
    ]
)

TABLES: dict[str, pa.Schema] = {
    "events": EVENT_SCHEMA,
    "titles": TITLE_SCHEMA,
    "variants": VARIANT_SCHEMA,
    "users": USER_SCHEMA,
}


class DatasetError(HomepageError):
    """A dataset directory is missing, incomplete or of an unknown format."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a dataset is: where it came from, how big, which time range."""

    source: str
    created: float
    counts: dict[str, int]
    kind_counts: dict[str, int]
    first_ts: int | None
    last_ts: int | None
    inputs_sha256: dict[str, str]
    extra: dict[str, object]
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, object]:
        return {
            "format_version": self.format_version,
            "source": self.source,
            "created": self.created,
            "counts": self.counts,
            "kind_counts": self.kind_counts,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "inputs_sha256": self.inputs_sha256,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Manifest:
        return cls(
            source=str(data["source"]),
            created=float(data["created"]),  # type: ignore[arg-type]
            counts=dict(data["counts"]),  # type: ignore[arg-type]
            kind_counts=dict(data.get("kind_counts", {})),  # type: ignore[arg-type]
            first_ts=data.get("first_ts"),  # type: ignore[arg-type]
            last_ts=data.get("last_ts"),  # type: ignore[arg-type]
            inputs_sha256=dict(data.get("inputs_sha256", {})),  # type: ignore[arg-type]
            extra=dict(data.get("extra", {})),  # type: ignore[arg-type]
            format_version=int(data.get("format_version", 0)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded dataset: pandas frames with the schemas above, events sorted by time."""

    path: Path
    manifest: Manifest
    events: pd.DataFrame
    titles: pd.DataFrame
    variants: pd.DataFrame
    users: pd.DataFrame


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def conform(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Turn a frame into an Arrow table of exactly ``schema``; missing nullable columns become null."""
    cols = {}
    n = len(frame)
    for f in schema:
        if f.name in frame.columns:
            cols[f.name] = pa.array(frame[f.name], type=f.type, from_pandas=True)
        elif pa.types.is_floating(f.type):
            cols[f.name] = pa.array(np.full(n, np.nan), type=f.type)
        elif pa.types.is_integer(f.type) and f.name in ("row_index", "col_index"):
            cols[f.name] = pa.array(np.full(n, -1), type=f.type)
        elif pa.types.is_list(f.type):
            cols[f.name] = pa.array([[] for _ in range(n)], type=f.type)
        else:
            cols[f.name] = pa.nulls(n, type=f.type)
    return pa.table(cols, schema=schema)


def write_dataset(
    out: Path,
    *,
    source: str,
    events: pd.DataFrame | pa.Table,
    titles: pd.DataFrame,
    users: pd.DataFrame,
    variants: pd.DataFrame | None = None,
    inputs_sha256: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
    extra_arrays: dict[str, dict[str, np.ndarray]] | None = None,
) -> Manifest:
    """Write a dataset into ``out`` atomically: the old contents stay until the new are complete.

    The tables are written into a temporary sibling directory, which then replaces ``out``
    by renames, so a crash at any point leaves either the old or the new dataset.
    ``extra_arrays`` maps a file stem to arrays saved beside the tables as ``<stem>.npz``
    (the synthetic world keeps its ground truth there).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ev = events if isinstance(events, pa.Table) else conform(events, EVENT_SCHEMA)
        if ev.schema != EVENT_SCHEMA:
            ev = ev.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        ts = ev.column("ts").to_numpy()
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            ev = ev.take(pa.array(order))
            ts = ts[order]
        pq.write_table(ev, tmp / "events.parquet", row_group_size=1 << 20)
        pq.write_table(conform(titles, TITLE_SCHEMA), tmp / "titles.parquet")
        var = variants if variants is not None else pd.DataFrame(columns=VARIANT_SCHEMA.names)
        pq.write_table(conform(var, VARIANT_SCHEMA), tmp / "variants.parquet")
        pq.write_table(conform(users, USER_SCHEMA), tmp / "users.parquet")
        for stem, arrays in (extra_arrays or {}).items():
            np.savez_compressed(tmp / f"{stem}.npz", **arrays)
        kinds = ev.column("kind").to_numpy()
        kind_counts = {KIND_BY_CODE[int(k)].value: int(c) for k, c in zip(*np.unique(kinds, return_counts=True))}
        manifest = Manifest(
            source=source,
            created=time.time(),
            counts={
                "events": int(ev.num_rows),
                "titles": int(len(titles)),
                "users": int(len(users)),
                "variants": int(len(var)),
            },
            kind_counts=kind_counts,
            first_ts=int(ts[0]) if ts.size else None,
            last_ts=int(ts[-1]) if ts.size else None,
            inputs_sha256=dict(inputs_sha256 or {}),
            extra=dict(extra or {}),
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
        _swap_in(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames; ``out`` is never half-written."""
    os.chmod(tmp, 0o755)
    if not out.exists():
        os.rename(tmp, out)
        return
    if not out.is_dir():
        raise DatasetError(f"{out}: exists and is a file, not a dataset; refusing to replace it")
    if not (out / "manifest.json").exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not a dataset; refusing to replace it")
    old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: Path) -> Manifest:
    """Read and check a dataset's manifest."""
    mpath = Path(path) / "manifest.json"
    if not mpath.is_file():
        raise DatasetError(f"{path}: not a dataset (no manifest.json)")
    manifest = Manifest.from_json(json.loads(mpath.read_text()))
    if manifest.format_version != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format {manifest.format_version}, this code reads {FORMAT_VERSION}")
    return manifest


def load_dataset(path: Path, *, columns: list[str] | None = None) -> Dataset:
    """Load a dataset; ``columns`` limits which event columns are read (saves memory at scale)."""
    path = Path(path)
    manifest = read_manifest(path)
    for name in TABLES:
        if not (path / f"{name}.parquet").is_file():
            raise DatasetError(f"{path}: incomplete dataset, {name}.parquet is missing")
    events = pq.read_table(path / "events.parquet", columns=columns).to_pandas()
    return Dataset(
        path=path,
        manifest=manifest,
        events=events,
        titles=pq.read_table(path / "titles.parquet").to_pandas(),
        variants=pq.read_table(path / "variants.parquet").to_pandas(),
        users=pq.read_table(path / "users.parquet").to_pandas(),
    )


def dataset_info(path: Path) -> dict[str, object]:
    """The summary printed by ``homepage dataset info``."""
    m = read_manifest(Path(path))

    def iso(ts: int | None) -> str | None:
        return None if ts is None else pd.Timestamp(ts, unit="s", tz="UTC").isoformat()

    return {
        "events": m.counts.get("events", 0),
        "titles": m.counts.get("titles", 0),
        "users": m.counts.get("users", 0),
        "variants": m.counts.get("variants", 0),
        "first": iso(m.first_ts),
        "last": iso(m.last_ts),
        "kinds": m.kind_counts,
        "source": m.source,
    }
