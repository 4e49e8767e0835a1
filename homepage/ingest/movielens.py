"""MovieLens layouts: detect which release a directory holds and read its files.

Three layouts cover every GroupLens release:

- ``movielens-csv``: ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m
  (``movies.csv``, ``ratings.csv``, optional ``tags.csv`` and ``links.csv``; UTF-8);
- ``movielens-dat``: ml-1m, ml-10m (``::``-separated ``movies.dat``, ``ratings.dat``,
  optional ``users.dat`` and ``tags.dat``; latin-1);
- ``movielens-100k``: ml-100k (``u.data`` tab-separated, ``u.item`` and ``u.user``
  ``|``-separated; latin-1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from homepage.dataset import sha256_file
from homepage.errors import HomepageError
from homepage.ingest.badrows import BadRows
from homepage.ingest.ratings import DelimitedFormat, Ratings, read_ratings
from homepage.ingest.textrows import TextFormat, read_rows

OnBytes = Callable[[int], None] | None  # progress callback: bytes just read
NO_GENRE = {"(no genres listed)", "unknown", ""}
GENRE_ALIASES = {"Children's": "Children"}  # ml-1m/ml-100k spelling -> the newer releases' spelling
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Layout:
    """One MovieLens file layout: its name, the files that identify it, the releases using it."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    releases: str


LAYOUTS: tuple[Layout, ...] = (
    Layout("movielens-csv", ("movies.csv", "ratings.csv"), ("tags.csv", "links.csv"),
           "ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m"),
    Layout("movielens-dat", ("movies.dat", "ratings.dat"), ("users.dat", "tags.dat"), "ml-1m, ml-10m"),
    Layout("movielens-100k", ("u.data", "u.item"), ("u.user",), "ml-100k"),
)  # fmt: skip


RELEASES_HINT = "the releases are at https://grouplens.org/datasets/movielens/"


def _understood() -> str:
    return "; ".join(f"{lay.name} ({' + '.join(lay.required)}: {lay.releases})" for lay in LAYOUTS)


def detect_layout(src: Path) -> tuple[Layout, Path]:
    """The layout of ``src`` and the directory holding its files.

    A directory whose only entry is one sub-directory (an unpacked zip) is looked into.
    """
    src = Path(src)
    if not src.exists():
        raise HomepageError(f"{src}: no such directory; expected an unpacked MovieLens release ({RELEASES_HINT})")
    if src.is_file() and src.suffix.lower() == ".zip":
        raise HomepageError(f"{src}: a zip archive; unzip it and pass the directory it unpacks to")
    if not src.is_dir():
        raise HomepageError(f"{src}: not a directory; expected an unpacked MovieLens release ({RELEASES_HINT})")
    for d in (src, *_single_subdir(src)):
        for lay in LAYOUTS:
            if all((d / f).is_file() for f in lay.required):
                return lay, d
    found = ", ".join(sorted(p.name for p in src.iterdir())[:12]) or "nothing"
    raise HomepageError(f"{src}: unknown MovieLens layout (found {found}); understood layouts: {_understood()}")


def _single_subdir(src: Path) -> list[Path]:
    entries = [p for p in src.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]  # macOS zips add __MACOSX
    return entries if len(entries) == 1 and entries[0].is_dir() else []


@dataclass
class MovieLensTables:
    """What a release holds, as read: ratings arrays and small frames, plus input hashes."""

    layout: Layout
    ratings: Ratings
    movies: pd.DataFrame  # title_id, title, genres (list), year_hint (0 unknown)
    tags: pd.DataFrame | None  # user_id, title_id, tag, ts
    users: pd.DataFrame | None  # user_id, zip
    inputs_sha256: dict[str, str] = field(default_factory=dict)


def input_files(layout: Layout, d: Path) -> list[Path]:
    """The files of ``d`` that an ingest of ``layout`` reads."""
    return [d / f for f in (*layout.required, *layout.optional) if (d / f).is_file()]


def read_movielens(
    src: Path, bad: BadRows, *, on_bytes: OnBytes = None
) -> MovieLensTables:
    """Detect the layout of ``src`` and read it; malformed rows go through ``bad``."""
    layout, d = detect_layout(src)
    reader = {"movielens-csv": _read_csv, "movielens-dat": _read_dat, "movielens-100k": _read_100k}[layout.name]
    tables = reader(layout, d, bad, on_bytes)
    for p in input_files(layout, d):
        if p.name not in tables.inputs_sha256:
            tables.inputs_sha256[p.name] = sha256_file(p)
            if on_bytes is not None:
                on_bytes(p.stat().st_size)
    return tables


def split_genres(raw: pd.Series) -> pd.Series:
    """``"A|B|C"`` -> ``["A", "B", "C"]``, without the no-genre markers, with aliases applied."""

    def one(s: str) -> list[str]:
        return [GENRE_ALIASES.get(g, g) for g in (x.strip() for x in s.split("|")) if g not in NO_GENRE]

    uniq = raw.drop_duplicates()
    lookup = dict(zip(uniq, (one(s) for s in uniq)))
    return raw.map(lookup)


def _movies_frame(rows: list[list[str]], title_at: int, genres: pd.Series | None = None) -> pd.DataFrame:
    ids = np.fromiter((int(r[0]) for r in rows), np.int64, len(rows))
    titles = pd.Series([r[title_at].strip() for r in rows], dtype=object)
    if genres is None:
        genres = split_genres(pd.Series([r[-1] for r in rows], dtype=object))
    return pd.DataFrame({"title_id": ids, "title": titles, "genres": genres.to_numpy()})


def _tags_frame(rows: list[list[str]], tag_at: int = 2, ts_at: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.fromiter((int(r[0]) for r in rows), np.int64, len(rows)),
            "title_id": np.fromiter((int(r[1]) for r in rows), np.int64, len(rows)),
            "tag": [r[tag_at] for r in rows],
            "ts": np.fromiter((int(r[ts_at]) for r in rows), np.int64, len(rows)),
        }
    )


def _users_frame(rows: list[list[str]], zip_at: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.fromiter((int(r[0]) for r in rows), np.int64, len(rows)),
            "zip": [r[zip_at].strip() for r in rows],
        }
    )


def _ratings(path: Path, fmt: DelimitedFormat, bad: BadRows, on_bytes: OnBytes, hashes: dict[str, str]) -> Ratings:
    r, digest = read_ratings(path, fmt, bad, on_bytes=on_bytes)
    hashes[path.name] = digest
    return r


def _read_csv(layout: Layout, d: Path, bad: BadRows, on_bytes: OnBytes) -> MovieLensTables:
    hashes: dict[str, str] = {}
    rows, _ = read_rows(d / "movies.csv", TextFormat(",", 3, ("movieId", "title", "genres")), bad)
    movies = _movies_frame(rows, 1)
    ratings = _ratings(d / "ratings.csv", DelimitedFormat(b",", ("userId", "movieId", "rating", "timestamp")), bad, on_bytes, hashes)
    tags = None
    if (d / "tags.csv").is_file():
        fmt = TextFormat(",", 4, ("userId", "movieId", "tag", "timestamp"), int_fields=(0, 1, 3))
        tags = _tags_frame(read_rows(d / "tags.csv", fmt, bad)[0])
    return MovieLensTables(layout, ratings, movies, tags, None, hashes)


def _read_dat(layout: Layout, d: Path, bad: BadRows, on_bytes: OnBytes) -> MovieLensTables:
    hashes: dict[str, str] = {}
    rows, _ = read_rows(
        d / "movies.dat", TextFormat("::", 3, rest_field=1), bad, names=("MovieID", "Title", "Genres")
    )
    movies = _movies_frame(rows, 1)
    ratings = _ratings(
        d / "ratings.dat",
        DelimitedFormat(b"::", None, encoding="latin-1"),
        bad,
        on_bytes,
        hashes,
    )
    users = tags = None
    if (d / "users.dat").is_file():
        rows, _ = read_rows(
            d / "users.dat", TextFormat("::", 5), bad, names=("UserID", "Gender", "Age", "Occupation", "Zip-code")
        )
        users = _users_frame(rows, 4)
    if (d / "tags.dat").is_file():
        fmt = TextFormat("::", 4, int_fields=(0, 1, 3), rest_field=2)
        tags = _tags_frame(read_rows(d / "tags.dat", fmt, bad, names=("UserID", "MovieID", "Tag", "Timestamp"))[0])
    return MovieLensTables(layout, ratings, movies, tags, users, hashes)


def _flags_ok(fields: list[str]) -> str | None:
    for name, v in zip(ML100K_GENRES, fields[5:]):
        if v.strip() not in ("0", "1"):
            return f"genre flag {name} {v!r} is not 0 or 1"
    return None


def _read_100k(layout: Layout, d: Path, bad: BadRows, on_bytes: OnBytes) -> MovieLensTables:
    hashes: dict[str, str] = {}
    names = ("movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES)
    rows, _ = read_rows(d / "u.item", TextFormat("|", 24), bad, names=names, check=_flags_ok)
    flags = np.array([[f.strip() == "1" for f in r[5:]] for r in rows], dtype=bool).reshape(len(rows), 19)
    genre_names = np.array([GENRE_ALIASES.get(g, g) for g in ML100K_GENRES], dtype=object)
    keep = np.array([g not in NO_GENRE for g in ML100K_GENRES])
    genres = pd.Series([list(genre_names[keep][f[keep]]) for f in flags], dtype=object)
    movies = _movies_frame(rows, 1, genres)
    # the release date ("01-Jan-1995") gives the year when the title has none
    movies["year_hint"] = pd.to_datetime(
        pd.Series([r[2].strip() for r in rows]), format="%d-%b-%Y", errors="coerce"
    ).dt.year.fillna(0).astype(np.int32).to_numpy()
    ratings = _ratings(d / "u.data", DelimitedFormat(b"\t", None, encoding="latin-1"), bad, on_bytes, hashes)
    users = None
    if (d / "u.user").is_file():
        rows, _ = read_rows(
            d / "u.user", TextFormat("|", 5, int_fields=(0, 1)), bad, names=("user id", "age", "gender", "occupation", "zip code")
        )
        users = _users_frame(rows, 4)
    return MovieLensTables(layout, ratings, movies, None, users, hashes)
