"""Join the MeLU movie metadata (director, cast, maturity rating, poster) by MovieLens id.

The file format is ``movies_people_posters.csv`` from shared/data/movie-metadata-melu-ml1m:
CSV with a header ``movieId,title,year,rated,released,genre,director,actors,poster_url``;
``director`` and ``actors`` are comma-separated (actors in billing order); empty is missing.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from homepage.errors import HomepageError
from homepage.ingest.badrows import BadRows
from homepage.ingest.textrows import TextFormat, decode_text, read_rows

REQUIRED = ("movieId", "rated", "director", "actors", "poster_url")


@dataclass(frozen=True, slots=True)
class Metadata:
    """Per-movie people and maturity, and poster URLs, keyed by MovieLens id."""

    director: dict[int, list[str]]
    cast: dict[int, list[str]]
    maturity: dict[int, str]
    posters: dict[int, str]
    rows: int


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip() and x.strip() != "N/A"]


def read_metadata(path: Path, bad: BadRows) -> Metadata:
    """Read a MeLU-format metadata CSV; malformed rows go through ``bad``."""
    path = Path(path)
    if not path.is_file():
        raise HomepageError(f"{path}: metadata file not found")
    first = next(csv.reader(io.StringIO(decode_text(path), newline="")), [])
    header = tuple(c.strip().lstrip("\ufeff") for c in first)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise HomepageError(f"{path.name}:1: expected columns including {','.join(REQUIRED)}, missing {','.join(missing)}")
    at = {c: header.index(c) for c in REQUIRED}
    rows, _ = read_rows(path, TextFormat(",", len(header), header, int_fields=(at["movieId"],)), bad)
    director: dict[int, list[str]] = {}
    cast: dict[int, list[str]] = {}
    maturity: dict[int, str] = {}
    posters: dict[int, str] = {}
    for r in rows:
        mid = int(r[at["movieId"]])
        if d := _names(r[at["director"]]):
            director[mid] = d
        if c := _names(r[at["actors"]]):
            cast[mid] = c
        if (m := r[at["rated"]].strip()) and m != "N/A":
            maturity[mid] = m
        if (p := r[at["poster_url"]].strip()) and p != "N/A":
            posters[mid] = p
    return Metadata(director, cast, maturity, posters, len(rows))


def join_metadata(titles: pd.DataFrame, meta: Metadata) -> tuple[pd.DataFrame, dict[int, str]]:
    """Titles with director, cast and maturity filled where known; posters of catalog titles."""
    t = titles.copy()
    ids = t["title_id"]
    t["director"] = [meta.director.get(int(i), []) for i in ids]
    t["cast"] = [meta.cast.get(int(i), []) for i in ids]
    t["maturity"] = ids.map(meta.maturity).astype(object).where(ids.isin(list(meta.maturity)), None)
    known = set(ids.tolist())
    posters = {i: u for i, u in meta.posters.items() if i in known}
    return t, posters
