"""Reader for the small MovieLens files (movies, tags, users, metadata) with exact line numbers.

These files are at most a few million short lines, so they are read line by line with
the ``csv`` module (quoted CSV) or a plain split (``::``, ``|``, tab), which keeps the
physical line number of every row for error messages.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from homepage.errors import HomepageError
from homepage.ingest.badrows import BadRows


@dataclass(frozen=True, slots=True)
class TextFormat:
    """Layout of one small file. ``sep`` ``","`` means quoted CSV; others are split literally."""

    sep: str
    n_fields: int
    header: tuple[str, ...] | None = None  # required column names when the file has a header
    int_fields: tuple[int, ...] = (0,)  # positions that must be non-negative integers
    rest_field: int | None = None  # a free-text field that may contain ``sep`` (rejoined)


def decode_text(path: Path) -> str:
    """File text: UTF-8 when it decodes, else line by line UTF-8 or cp1252 (ml-1m, ml-10m, ml-100k are latin-1).

    Line by line, so one latin-1 line in a UTF-8 file (an edited release) leaves the others
    intact instead of turning every accented title of the file into mojibake. cp1252 is latin-1
    with printable characters where latin-1 has C1 controls (0x80-0x9f): a file saved on Windows
    writes "Don't" with 0x92 and "..." as 0x85, which latin-1 read as invisible control characters.
    A line holding one of the five bytes cp1252 leaves undefined is read as latin-1.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\n".join(_decode_line(line) for line in raw.split(b"\n"))


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")


_LINE_END = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")


def _lines(text: str, fmt: TextFormat) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` per non-blank row; CSV rows keep the line they start on."""
    if fmt.sep == ",":
        reader = csv.reader(io.StringIO(text, newline=""), strict=False)
        start = 1
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                yield start, fields
            start = reader.line_num + 1
        return
    # only CR/LF end a line: str.splitlines also breaks at \x85, \x0c, \x1c-\x1e, U+2028, which
    # titles can hold (a latin-1 0x85, a form feed)
    for i, line in enumerate(_LINE_END.split(text.removeprefix("\ufeff")), start=1):
        if line.strip():
            yield i, line.split(fmt.sep)


def _problem(fields: list[str], fmt: TextFormat, names: tuple[str, ...]) -> str | None:
    if len(fields) != fmt.n_fields:
        return f"expected {fmt.n_fields} fields, found {len(fields)}"
    for p in fmt.int_fields:
        v = fields[p].strip()
        if not _DIGITS.fullmatch(v):  # not str.isdigit: it takes '²', which int() refuses
            return f"{names[p]} {v!r} is not an integer"
        if len(v) > 18:
            return f"{names[p]} {v} is out of range (more than 18 digits)"
    return None


def read_rows(
    path: Path,
    fmt: TextFormat,
    bad: BadRows,
    *,
    names: tuple[str, ...] | None = None,
    check: Callable[[list[str]], str | None] | None = None,
) -> tuple[list[list[str]], list[int]]:
    """Read a small delimited file; returns good rows (header removed) and their line numbers.

    ``names`` label fields in messages (defaults to the header); ``check`` adds a per-row rule.
    """
    name = path.name
    rows: list[list[str]] = []
    line_nos: list[int] = []
    bad_lines: list[int] = []
    first_msg = ""
    it = _lines(decode_text(path), fmt)
    keep: int | None = None
    labels = names or fmt.header or tuple(f"field {i + 1}" for i in range(fmt.n_fields))
    if fmt.header is not None:
        first = next(it, None)
        cols = [c.strip().lstrip("\ufeff") for c in first[1]] if first else []
        if cols[: len(fmt.header)] != list(fmt.header):
            found = ",".join(cols) if cols else "an empty file"
            raise HomepageError(f"{name}:1: expected columns {','.join(fmt.header)}, found {found}")
        if len(cols) > fmt.n_fields and fmt.rest_field is None:  # extra columns after ours: read, then dropped
            keep, fmt = fmt.n_fields, replace(fmt, n_fields=len(cols))
    for line_no, fields in it:
        if keep is not None and keep <= len(fields) < fmt.n_fields:
            fields = fields + [""] * (fmt.n_fields - len(fields))  # a row without the extra columns' values
        if fmt.rest_field is not None and len(fields) > fmt.n_fields:
            extra = len(fields) - fmt.n_fields
            r = fmt.rest_field
            fields = fields[:r] + [fmt.sep.join(fields[r : r + extra + 1])] + fields[r + extra + 1 :]
        msg = _problem(fields, fmt, labels) or (check(fields) if check else None)
        if msg is not None:
            if not bad_lines:
                first_msg = msg
            bad_lines.append(line_no)
            if not bad.skip:
                break
            continue
        rows.append(fields if keep is None else fields[:keep])
        line_nos.append(line_no)
    bad.found(name, bad_lines, first_msg)
    return rows, line_nos
