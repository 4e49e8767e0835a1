"""The catalog as dense arrays: title ids in sorted order, genre matrix, years, variants.

Rankers and the page builder index titles by their position in ``Catalog.title_ids``
("title index"), so per-title statistics are plain numpy vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from homepage.domain import ArtworkVariant, Title
from homepage.state import frozen


@dataclass(frozen=True, eq=False)
class Catalog:
    """Titles and their artwork variants, indexed densely."""

    title_ids: np.ndarray  # int64, sorted ascending, unique
    names: tuple[str, ...]
    years: np.ndarray  # int32, 0 when unknown
    genres: tuple[str, ...]  # the genre vocabulary, sorted
    genre_matrix: np.ndarray  # bool (n_titles, n_genres)
    cast: tuple[tuple[str, ...], ...]
    director: tuple[tuple[str, ...], ...]
    maturity: tuple[str | None, ...]
    tags: tuple[tuple[str, ...], ...]
    variants: tuple[tuple[ArtworkVariant, ...], ...]

    def __post_init__(self) -> None:
        # shared by every request and ranker of a model version: a plug-in writing into it would change every page
        for name in ("title_ids", "years", "genre_matrix"):
            a = getattr(self, name)
            if a.flags.writeable:
                object.__setattr__(self, name, frozen(a))

    def __len__(self) -> int:
        return int(self.title_ids.shape[0])

    def index_of(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Title indices of ``ids``; -1 for ids not in the catalog."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.title_ids, ids)
        pos_c = np.minimum(pos, max(len(self) - 1, 0))
        ok = (pos < len(self)) & (self.title_ids[pos_c] == ids) if len(self) else np.zeros(ids.shape, bool)
        return np.where(ok, pos_c, -1).astype(np.int64)

    def title(self, idx: int) -> Title:
        """The full record of one title, by index."""
        return Title(
            title_id=int(self.title_ids[idx]),
            name=self.names[idx],
            year=int(self.years[idx]) or None,
            genres=tuple(g for g, on in zip(self.genres, self.genre_matrix[idx]) if on),
            cast=self.cast[idx],
            director=self.director[idx],
            maturity=self.maturity[idx],
            variants=self.variants[idx],
        )

    def genres_of(self, idx: int) -> tuple[str, ...]:
        return tuple(self.genres[j] for j in np.flatnonzero(self.genre_matrix[idx]))

    @cached_property
    def genre_index(self) -> dict[str, int]:
        return {g: i for i, g in enumerate(self.genres)}

    @classmethod
    def from_frames(cls, titles: pd.DataFrame, variants: pd.DataFrame | None = None) -> Catalog:
        """Build from the dataset's ``titles`` and ``variants`` tables."""
        t = titles.sort_values("title_id", kind="stable").drop_duplicates("title_id")
        ids = t["title_id"].to_numpy(np.int64)

        def tuples(col: str) -> tuple[tuple[str, ...], ...]:
            if col not in t.columns:
                return tuple(() for _ in range(len(t)))
            return tuple(tuple(x) if x is not None and len(x) else () for x in t[col])

        genre_lists = tuples("genres")
        vocab = tuple(sorted({g for gs in genre_lists for g in gs}))
        gidx = {g: i for i, g in enumerate(vocab)}
        gm = np.zeros((len(t), len(vocab)), dtype=bool)
        for i, gs in enumerate(genre_lists):
            for g in gs:
                gm[i, gidx[g]] = True
        per_title: list[list[ArtworkVariant]] = [[] for _ in range(len(t))]
        if variants is not None and len(variants):
            pos = np.searchsorted(ids, variants["title_id"].to_numpy(np.int64))
            for p, row in zip(pos, variants.itertuples(index=False)):
                if p < len(ids) and ids[p] == row.title_id:
                    per_title[p].append(
                        ArtworkVariant(
                            variant_id=str(row.variant_id),
                            title_id=int(row.title_id),
                            emphasis_genre=_text(row.emphasis_genre),
                            featured_cast=_text(row.featured_cast),
                            tone=_text(row.tone) or "neutral",
                            image_url=_text(row.image_url) or "",
                        )
                    )
        years = t["year"].fillna(0).to_numpy(np.int32) if "year" in t.columns else np.zeros(len(t), np.int32)
        maturity = tuple(_text(m) for m in t["maturity"]) if "maturity" in t.columns else (None,) * len(t)
        return cls(
            title_ids=ids,
            names=tuple(str(n) for n in t["name"]),
            years=years,
            genres=vocab,
            genre_matrix=gm,
            cast=tuples("cast"),
            director=tuples("director"),
            maturity=maturity,
            tags=tuples("tags"),
            variants=tuple(tuple(v) for v in per_title),
        )


def _text(x: object) -> str | None:
    """A string cell as str, or None when missing (pandas gives None or NaN for missing strings)."""
    if x is None or (isinstance(x, float) and x != x):
        return None
    s = str(x)
    return s or None


MIN_SHARED_TITLES = 0.5  # below this share of titles matching (either way, or by name), a bundle was trained on another catalog


def catalog_mismatch(ids: np.ndarray, names: object, bundle: Catalog, where: str) -> str | None:
    """Why a bundle's catalog is not the one of the titles ``ids``/``names`` (a dataset's, named ``where``), or None.

    Most titles must match both ways (a catalog grows and is edited, so not all), and most ids
    both hold must name the same title: two catalogs numbered 1..n share their ids.
    """
    ids = np.asarray(ids, dtype=np.int64)
    theirs = np.asarray(bundle.title_ids)
    mine_in = np.isin(ids, theirs)
    shares = {
        f"of {where}'s {ids.size} titles are in it": float(mine_in.mean()) if ids.size else 1.0,
        f"of its {theirs.size} titles are in {where}": float(np.isin(theirs, ids).mean()) if theirs.size else 1.0,
    }
    if mine_in.any():
        mine_names = np.asarray([str(n) for n in names], dtype=object)[mine_in]  # type: ignore[attr-defined]  # as Catalog stores them
        their_names = np.asarray(bundle.names, dtype=object)[np.searchsorted(theirs, ids[mine_in])]
        shares[f"of the {int(mine_in.sum())} title ids both hold name the same title"] = float((mine_names == their_names).mean())
    for what, share in shares.items():
        if share < MIN_SHARED_TITLES:
            return f"{share:.0%} {what}"
    return None
