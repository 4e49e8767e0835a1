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
from homepage.replaced_file import swap_in_dir

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

# optional: who tagged which title when (MovieLens tags). Titles' top tags are recomputed from
# the tags written up to a model's training cut (``homepage.ingest.titles.titles_as_of``), so a
# model fitted at T never sees tags from after T; datasets without the table keep their titles' tags
TAG_EVENT_SCHEMA = pa.schema([("user_id", pa.int64()), ("title_id", pa.int64()), ("tag", pa.string()), ("ts", pa.int64())])

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
    tag_events: pd.DataFrame | None = None  # TAG_EVENT_SCHEMA; None when the dataset has no tags table


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
    tag_events: pd.DataFrame | None = None,
) -> Manifest:
    """Write a dataset into ``out`` atomically: the old contents stay until the new are complete.

    The tables are written into a temporary sibling directory, which then replaces ``out``
    by renames, so a crash at any point leaves either the old or the new dataset.
    ``extra_arrays`` maps a file stem to arrays saved beside the tables as ``<stem>.npz``
    (the synthetic world keeps its ground truth there). ``tag_events`` (``TAG_EVENT_SCHEMA``)
    is written as ``tag_events.parquet`` when given.
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
        if tag_events is not None:
            pq.write_table(conform(tag_events, TAG_EVENT_SCHEMA), tmp / "tag_events.parquet")
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
                **({"tag_events": int(len(tag_events))} if tag_events is not None else {}),
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


def _is_model_bundle(path: Path) -> bool:
    """Whether ``path``'s manifest is a model bundle's (its own format key); a damaged or older dataset's is not."""
    try:
        data = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("bundle_format" in data or "components" in data)


def check_replaceable(out: Path) -> None:
    """Raise unless ``out`` is absent or a dataset a new one may replace (never a bundle, a models directory or other files)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"{out}: exists and is a file, not a dataset; refusing to replace it")
    if _is_model_bundle(out):
        raise DatasetError(f"{out}: is a model bundle, not a dataset; refusing to replace it")
    if (out / "LATEST").exists():
        raise DatasetError(f"{out}: holds model bundles (it has a LATEST file); refusing to replace it")
    if not (out / "manifest.json").exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not a dataset; refusing to replace it")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames; ``out`` is never half-written."""
    if out.exists():
        check_replaceable(out)
    swap_in_dir(tmp, out)


MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "created": (int, float),
    "counts": (dict,),
    "kind_counts": (dict,),
    "first_ts": (int, type(None)),
    "last_ts": (int, type(None)),
    "inputs_sha256": (dict,),
    "extra": (dict,),
    "format_version": (int,),
}
MANIFEST_REQUIRED = ("source", "created", "counts")


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and check a dataset's manifest; a ``DatasetError`` naming the file when it is unreadable or malformed."""
    mpath = Path(path) / "manifest.json"
    if not mpath.is_file():
        raise DatasetError(f"{path}: not a dataset (no manifest.json)")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mpath}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{mpath}: not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise DatasetError(f"{mpath}: cannot read: {e.strerror or e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{mpath}: not a dataset manifest: a JSON {type(data).__name__}, not an object")
    missing = [k for k in MANIFEST_REQUIRED if k not in data]
    if missing:
        raise DatasetError(f"{mpath}: not a dataset manifest: missing {', '.join(repr(k) for k in missing)}")
    for key, types in MANIFEST_FIELDS.items():
        value = data.get(key)
        if key in data and (not isinstance(value, types) or isinstance(value, bool)):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise DatasetError(f"{mpath}: {key!r} is {json.dumps(value)[:60]}, expected {want}")
    for key in ("counts", "kind_counts"):
        bad = [k for k, v in data.get(key, {}).items() if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            raise DatasetError(f"{mpath}: {key}[{bad[0]!r}] is {json.dumps(data[key][bad[0]])[:60]}, expected int")
    manifest = Manifest.from_json(data)
    if manifest.format_version != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format {manifest.format_version}, this code reads {FORMAT_VERSION}")
    return manifest


def open_table(path: Path, name: str, columns: list[str] | None = None) -> pq.ParquetFile:
    """The Parquet file of one table of the dataset at ``path``, its footer read and its columns checked.

    A ``DatasetError`` naming the file when it is missing, not Parquet (truncated, overwritten)
    or lacks a column asked for (or, with ``columns`` None, one every reader needs).
    """
    file = Path(path) / f"{name}.parquet"
    if not file.is_file():
        raise DatasetError(f"{path}: incomplete dataset, {name}.parquet is missing")
    try:
        pf = pq.ParquetFile(file)
        have = set(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DatasetError(f"{file}: not a readable Parquet file ({_first_line(e)})") from e
    lacking = [c for c in (columns if columns is not None else REQUIRED_COLUMNS[name]) if c not in have]
    if lacking:
        raise DatasetError(f"{file}: not the {name} table: it has no column {', '.join(repr(c) for c in lacking)}")
    return pf


def read_table(path: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One table of the dataset at ``path`` as a frame; a ``DatasetError`` naming the file when it cannot be read."""
    open_table(path, name, columns).close()
    file = Path(path) / f"{name}.parquet"
    try:
        return pq.read_table(file, columns=columns).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:  # a page or column chunk damaged past the footer
        raise DatasetError(f"{file}: not a readable Parquet file ({_first_line(e)})") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# columns every reader relies on; the others may be absent from older datasets
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("user_id", "title_id", "kind", "ts"),
    "titles": ("title_id",),
    "variants": ("variant_id", "title_id"),
    "users": ("user_id",),
    "tag_events": ("user_id", "title_id", "tag", "ts"),
}


def load_dataset(path: str | os.PathLike[str], *, columns: list[str] | None = None) -> Dataset:
    """Load a dataset; ``columns`` limits which event columns are read (saves memory at scale).

    A missing, truncated or malformed manifest or table is a ``DatasetError`` naming the file.
    """
    path = Path(path)
    manifest = read_manifest(path)
    for name in TABLES:
        if not (path / f"{name}.parquet").is_file():
            raise DatasetError(f"{path}: incomplete dataset, {name}.parquet is missing")
    return Dataset(
        path=path,
        manifest=manifest,
        events=read_table(path, "events", columns),
        titles=read_table(path, "titles"),
        variants=read_table(path, "variants"),
        users=read_table(path, "users"),
        tag_events=read_table(path, "tag_events") if (path / "tag_events.parquet").is_file() else None,
    )


def dataset_info(path: str | os.PathLike[str]) -> dict[str, object]:
    """The summary printed by ``homepage dataset info``; the tables' Parquet footers are checked too (cheap)."""
    m = read_manifest(Path(path))
    for name in TABLES:
        open_table(Path(path), name).close()

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
