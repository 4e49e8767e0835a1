"""Join the MeLU movie metadata (director, cast, maturity rating, poster) by MovieLens id.

The file format is ``movies_people_posters.csv`` from shared/data/movie-metadata-melu-ml1m:
CSV with a header ``movieId,title,year,rated,released,genre,director,actors,poster_url``;
``director`` and ``actors`` are comma-separated (actors in billing order); empty is missing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
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
    years: dict[int, int] = field(default_factory=dict)  # from the optional ``year`` column: checks the join


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
    years: dict[int, int] = {}
    year_at = header.index("year") if "year" in header else None
    for r in rows:
        mid = int(r[at["movieId"]])
        if year_at is not None and re.fullmatch(r"[0-9]{4}", y := r[year_at].strip()[:4]):
            years[mid] = int(y)
        if d := _names(r[at["director"]]):
            director[mid] = d
        if c := _names(r[at["actors"]]):
            cast[mid] = c
        if (m := r[at["rated"]].strip()) and m != "N/A":
            maturity[mid] = m
        if (p := r[at["poster_url"]].strip()) and p != "N/A":
            posters[mid] = p
    return Metadata(director, cast, maturity, posters, len(rows), years)


MIN_COMPARED_YEARS = 20
MIN_AGREEING_YEARS = 0.5


def check_same_ids(titles: pd.DataFrame, meta: Metadata, source: str) -> None:
    """Refuse metadata numbered for another catalog: its years must mostly match the titles' of the same id.

    MeLU's metadata is keyed by the MovieLens movie ids of ml-1m (which ml-10m, ml-20m, ml-25m and
    ml-latest share); ml-100k numbers its movies differently, and an id join would give
    Toy Story's neighbour the cast of another film. A year may be off by one (release dates).
    """
    pairs = [(int(y), meta.years[int(i)]) for i, y in zip(titles["title_id"], titles["year"]) if int(y) > 0 and int(i) in meta.years]
    if len(pairs) < MIN_COMPARED_YEARS:
        return
    agree = sum(abs(a - b) <= 1 for a, b in pairs) / len(pairs)
    if agree < MIN_AGREEING_YEARS:
        raise HomepageError(
            f"{source}: the metadata's years match only {agree:.0%} of the {len(pairs)} titles with the same id: "
            "it is numbered for another catalog (MeLU metadata uses ml-1m's movie ids; ml-100k has its own)"
        )


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
