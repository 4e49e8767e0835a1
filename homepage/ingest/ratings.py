"""Chunked, vectorised reader for the big ratings file of every MovieLens layout.

The file is read in blocks of bytes cut at line ends, so memory stays bounded however
large the file is, and each block is parsed by pandas' C parser straight into numbers
(the fast path). Only a block that fails to parse cleanly is re-read as strings, where
masks find the bad rows and their 1-based line numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from homepage.domain import LATEST_TIME
from homepage.errors import HomepageError
from homepage.ingest.badrows import BadRows

RATING_MIN, RATING_MAX = 0.5, 5.0
FIELD_SEP = b"\x1f"  # multi-byte separators (``::``) are rewritten to this before parsing
_INT = r"[0-9]{1,18}"  # ids and times fit int64 (19 digits may not); ASCII only (\d takes other scripts' digits)
# pandas' int64 parser (the fast path) also takes integral floats such as "964982703.0" or
# "9.6e8", which a pandas round-trip of a column with NaNs writes; the slow path takes them too,
# so a row gets the same verdict whichever path reads its block
_INT_AS_FLOAT = r"[0-9]+(?:\.[0-9]*)?(?:[eE]\+?[0-9]+)?"
_EXACT_FLOAT_INT = 2**53


@dataclass(frozen=True, slots=True)
class DelimitedFormat:
    """How one ratings file is laid out: separator, header, and where each field is."""

    sep: bytes
    header: tuple[str, ...] | None  # expected column names, or None when the file has no header
    n_fields: int = 4
    user: int = 0
    item: int = 1
    rating: int = 2
    ts: int = 3
    encoding: str = "utf-8"


@dataclass(frozen=True, slots=True)
class Ratings:
    """Ratings as compact parallel arrays (28 bytes a rating)."""

    user_id: np.ndarray  # int64
    title_id: np.ndarray  # int64
    stars: np.ndarray  # float32
    ts: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.user_id.shape[0])


def iter_blocks(
    path: Path,
    *,
    skip_lines: int,
    block_bytes: int,
    on_bytes: Callable[[int], None] | None,
    hasher: hashlib._Hash | None,
) -> Iterator[tuple[bytes, int, list[bytes]]]:
    """Yield ``(block, first_line_number, skipped_lines)``; blocks end at a line end.

    ``skipped_lines`` (the header) is only non-empty with the first block.
    """
    with open(path, "rb") as fh:
        head: list[bytes] = []
        for _ in range(skip_lines):
            line = fh.readline()
            head.append(line)
            if hasher is not None:
                hasher.update(line)
            if on_bytes is not None:
                on_bytes(len(line))
        line_no = skip_lines + 1
        rest = b""
        while True:
            chunk = fh.read(block_bytes)
            if hasher is not None and chunk:
                hasher.update(chunk)
            if on_bytes is not None and chunk:
                on_bytes(len(chunk))
            if not chunk:
                if rest or head:
                    yield rest, line_no, head
                return
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            block, rest = data[: cut + 1], data[cut + 1 :]
            yield block, line_no, head
            head = []
            line_no += block.count(b"\n")


def _check_header(name: str, fmt: DelimitedFormat, head: list[bytes]) -> DelimitedFormat:
    """Map the header's column names to field positions; a missing column is an error."""
    if fmt.header is None:
        return fmt
    if not head or not head[0].strip():
        raise HomepageError(f"{name}:1: empty file, expected a header {','.join(fmt.header)}")
    cols = [c.strip() for c in head[0].decode(fmt.encoding, "replace").lstrip("\ufeff").strip().split(fmt.sep.decode())]
    missing = [c for c in fmt.header if c not in cols]
    if missing:
        raise HomepageError(f"{name}:1: expected columns {','.join(fmt.header)}, found {','.join(cols)}")
    pos = {c: i for i, c in enumerate(cols)}
    u, i, r, t = (pos[c] for c in fmt.header)
    return DelimitedFormat(fmt.sep, fmt.header, len(cols), u, i, r, t, fmt.encoding)


def _fast_parse(block: bytes, fmt: DelimitedFormat) -> pd.DataFrame | None:
    """Parse a clean block straight into numbers; None when anything is off."""
    dtypes: dict[int, str] = {fmt.user: "int64", fmt.item: "int64", fmt.rating: "float64", fmt.ts: "int64"}
    try:
        # a value such as 1e400 in an int64 column: numpy's "invalid value encountered in cast" on the
        # user's terminal before the ValueError that sends the block to the slow path, which names the row
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            df = pd.read_csv(
                io.BytesIO(block),
                sep=FIELD_SEP.decode() if len(fmt.sep) > 1 else fmt.sep.decode(),
                header=None,
                usecols=list(dtypes),
                dtype=dtypes,
                quoting=csv.QUOTE_NONE,
                engine="c",
                na_filter=False,
            )
    except (ValueError, pd.errors.ParserError, OverflowError):
        return None
    sep = FIELD_SEP if len(fmt.sep) > 1 else fmt.sep
    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    # usecols lets over-long lines through silently; exact totals catch them (and blank lines)
    if df.shape[1] != 4 or len(df) != n_lines or block.count(sep) != n_lines * (fmt.n_fields - 1):
        return None
    r = df[fmt.rating].to_numpy()
    if (
        not np.isfinite(r).all()
        or (r < RATING_MIN).any()
        or (r > RATING_MAX).any()
        or (df[fmt.user].to_numpy() < 0).any()
        or (df[fmt.item].to_numpy() < 0).any()
        or (df[fmt.ts].to_numpy() < 0).any()
        or (df[fmt.ts].to_numpy() > LATEST_TIME).any()
    ):
        return None
    return df


def _field_counts(block: bytes, sep: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per physical line of ``block``: number of fields, and whether the line is blank."""
    a = np.frombuffer(block, dtype=np.uint8)
    nl = a == 10
    line_of = np.cumsum(nl) - nl  # line index of every byte
    n_lines = int(nl.sum()) + (0 if block.endswith(b"\n") else 1)
    seps = np.bincount(line_of[a == sep[0]], minlength=n_lines)
    content = np.bincount(line_of[(a != 10) & (a != 13) & (a != 32) & (a != 9)], minlength=n_lines)
    return seps[:n_lines] + 1, content[:n_lines] == 0


def row_problem(fields: list[str], fmt: DelimitedFormat, names: tuple[str, str, str, str]) -> str | None:
    """The problem with one split row, or None: the scalar twin of the masks in ``_slow_parse``."""
    if len(fields) != fmt.n_fields:
        return f"expected {fmt.n_fields} fields, found {len(fields)}"
    user, item, rating, ts = (fields[p].strip() for p in (fmt.user, fmt.item, fmt.rating, fmt.ts))
    for label, v in ((names[0], user), (names[1], item)):
        n = _int_text(v)
        if n is None:
            return f"{label} {v!r} is not an integer"
        if n >= 1 << 63:
            return f"{label} {v} is out of range (more than 18 digits)"
    try:
        r = float(rating)
    except ValueError:
        return f"{names[2]} {rating!r} is not a number"
    if not RATING_MIN <= r <= RATING_MAX:
        return f"{names[2]} {rating} is outside {RATING_MIN:g}..{RATING_MAX:g}{_scale_hint(r)}"
    t = _int_text(ts)
    if t is None:
        return f"{names[3]} {ts!r} is not an integer"
    if t > LATEST_TIME:
        return f"{names[3]} {ts} is out of range (after the year 9999: Unix seconds expected, not milliseconds)"
    return None


def _scale_hint(r: float) -> str:
    """What an out-of-range rating suggests about the file, where it suggests something."""
    if RATING_MAX < r <= 2 * RATING_MAX:
        return " (a 1-10 scale? MovieLens stars run from 0.5 to 5: halve the ratings; --skip-bad would drop every one above 5)"
    if r == 0:
        return " (0 is no MovieLens rating: for implicit feedback write 1)"
    return ""


def _int_text(v: str) -> int | None:
    """The non-negative integer ``v`` spells (ASCII digits, or an integral float), or None."""
    if re.fullmatch(r"[0-9]+", v):  # not str.isdigit: it takes '²', which int() refuses
        return int(v) if len(v) <= 18 else 1 << 63
    if not re.fullmatch(_INT_AS_FLOAT, v):
        return None
    f = float(v)
    return int(f) if math.isfinite(f) and f == int(f) and f < _EXACT_FLOAT_INT else None


def _int_column(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(ok, value) per row of a stripped text column: plain digits, or an integral float as pandas' parser takes it."""
    plain = text.str.fullmatch(_INT).fillna(False).to_numpy(bool, copy=True)
    values = np.zeros(len(text), np.int64)
    values[plain] = text[plain].astype("int64").to_numpy()
    maybe = ~plain & text.str.fullmatch(_INT_AS_FLOAT).fillna(False).to_numpy(bool)
    if maybe.any():
        f = pd.to_numeric(text[maybe], errors="coerce").to_numpy(np.float64)
        good = np.isfinite(f) & (f < _EXACT_FLOAT_INT) & (f == np.floor(f))
        idx = np.flatnonzero(maybe)
        values[idx[good]] = f[good].astype(np.int64)
        plain[idx[good]] = True
    return plain, values


def _slow_parse(
    block: bytes, first_line: int, fmt: DelimitedFormat, name: str, names: tuple[str, str, str, str], bad: BadRows
) -> pd.DataFrame:
    """Parse a block that failed the fast path: find bad rows with masks, report, drop them."""
    sep = FIELD_SEP if len(fmt.sep) > 1 else fmt.sep
    n_fields, blank = _field_counts(block, sep)
    wrong = (n_fields != fmt.n_fields) & ~blank
    if wrong.any():  # blank out over-long lines so every physical line stays one parsed row
        lines = block.split(b"\n")
        for i in np.flatnonzero(wrong):
            lines[i] = b""
        block = b"\n".join(lines)
    df = pd.read_csv(
        io.BytesIO(block),
        sep=sep.decode(),
        header=None,
        names=list(range(fmt.n_fields)),
        dtype=str,
        quoting=csv.QUOTE_NONE,
        engine="c",
        na_filter=False,
        skip_blank_lines=False,
        encoding=fmt.encoding,
        encoding_errors="replace",
    )
    df = df.iloc[: len(n_fields)]
    strip = {k: df[p].str.strip() for k, p in (("u", fmt.user), ("i", fmt.item), ("r", fmt.rating), ("t", fmt.ts))}
    stars = pd.to_numeric(strip["r"], errors="coerce").to_numpy(np.float64)
    (ok_u, users), (ok_i, items), (ok_t, times) = (_int_column(strip[k]) for k in "uit")
    ok_num = ok_u & ok_i & ok_t & (times <= LATEST_TIME) & (stars >= RATING_MIN) & (stars <= RATING_MAX)
    bad_mask = ~blank & (wrong | ~ok_num)
    if bad_mask.any():
        idx = np.flatnonzero(bad_mask)
        i0 = int(idx[0])
        if wrong[i0]:
            msg = f"expected {fmt.n_fields} fields, found {int(n_fields[i0])}"
        else:
            msg = row_problem([str(x) for x in df.iloc[i0].tolist()], fmt, names) or "unparsable line"
        bad.found(name, idx + first_line, msg)
    keep = ~blank & ~bad_mask
    return pd.DataFrame({fmt.user: users[keep], fmt.item: items[keep], fmt.rating: stars[keep], fmt.ts: times[keep]})


def read_ratings(
    path: Path,
    fmt: DelimitedFormat,
    bad: BadRows,
    *,
    on_bytes: Callable[[int], None] | None = None,
    block_bytes: int = 32 << 20,
) -> tuple[Ratings, str]:
    """Read a ratings file of any layout into compact arrays; also returns its sha256.

    Memory is about the final arrays (28 bytes a rating) plus two blocks.
    """
    name = path.name
    names = fmt.header if fmt.header is not None else ("user id", "item id", "rating", "timestamp")
    hasher = hashlib.sha256()
    cols: tuple[list[np.ndarray], ...] = ([], [], [], [])  # per column, so each is joined and freed alone
    skip = 1 if fmt.header is not None else 0
    for block, first_line, head in iter_blocks(path, skip_lines=skip, block_bytes=block_bytes, on_bytes=on_bytes, hasher=hasher):
        if head:
            fmt = _check_header(name, fmt, head)
        if not block.strip():
            continue
        if len(fmt.sep) > 1:
            block = block.replace(fmt.sep, FIELD_SEP)
        df = _fast_parse(block, fmt)
        if df is None:
            df = _slow_parse(block, first_line, fmt, name, names, bad)  # type: ignore[arg-type]
        for k, (pos, dt) in enumerate(((fmt.user, np.int64), (fmt.item, np.int64), (fmt.rating, np.float32), (fmt.ts, np.int64))):
            cols[k].append(df[pos].to_numpy(dt))
        del df
    joined = []
    for parts, dt in zip(cols, (np.int64, np.int64, np.float32, np.int64)):
        joined.append(np.concatenate(parts) if parts else np.zeros(0, dt))
        parts.clear()
    return Ratings(*joined), hasher.hexdigest()
