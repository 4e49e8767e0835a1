"""A catalog's artwork variants as padded arrays (title index x variant position) for vectorised scoring."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from artwork.context import ContextLayout
from homepage.catalog import Catalog


@dataclass(frozen=True, eq=False)
class VariantTable:
    """Per title, its variants' tags as integer codes; K is the largest variant count, padding is masked."""

    title_ids: np.ndarray  # int64 (n_titles,)
    n_variants: np.ndarray  # int64 (n_titles,)
    emphasis: np.ndarray  # int64 (n_titles, K): genre index, n_genres when none or unknown
    tone: np.ndarray  # int64 (n_titles, K): index into ``tones``, len(tones) when unknown
    cast: np.ndarray  # int64 (n_titles, K): index into the layout's cast vocabulary, -1 when none
    variant_ids: np.ndarray  # str (n_titles, K), "" for padding
    tones: tuple[str, ...]
    n_genres: int
    n_cast: int

    @property
    def max_variants(self) -> int:
        return int(self.emphasis.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """bool (n_titles, K): which positions hold a real variant."""
        return np.arange(self.max_variants)[None, :] < self.n_variants[:, None]

    @cached_property
    def lookup_codes(self) -> np.ndarray:
        """(n_titles, K, 3) positions in the concatenated [emphasis | tone | cast] lookup vector of ``score_one``."""
        g1, t1 = self.n_genres + 1, len(self.tones) + 1
        cast = np.where(self.cast >= 0, self.cast, self.n_cast)
        return np.stack([self.emphasis, g1 + self.tone, g1 + t1 + cast], axis=-1).astype(np.intp)

    def fingerprint(self) -> str:
        """A short hash of the variant ids, to tell catalogs apart."""
        return hashlib.sha256("\n".join(self.variant_ids.ravel().tolist()).encode()).hexdigest()[:12]

    @classmethod
    def of(cls, catalog: Catalog, layout: ContextLayout, tones: tuple[str, ...] | None = None) -> VariantTable:
        """Encode ``catalog``'s variants; ``tones`` defaults to the catalog's own tone vocabulary."""
        if tones is None:
            tones = tuple(sorted({v.tone for vs in catalog.variants for v in vs if isinstance(v.tone, str)} | {"neutral"}))
        n = len(catalog)
        k = max((len(vs) for vs in catalog.variants), default=0) or 1
        g = {name: i for i, name in enumerate(layout.genres)}
        a = {name: i for i, name in enumerate(layout.cast)}
        t = {name: i for i, name in enumerate(tones)}
        emphasis = np.full((n, k), len(layout.genres), np.int64)
        tone = np.full((n, k), len(tones), np.int64)
        cast = np.full((n, k), -1, np.int64)
        ids = np.full((n, k), "", dtype=object)
        nv = np.zeros(n, np.int64)
        for i, vs in enumerate(catalog.variants):
            nv[i] = len(vs)
            for j, v in enumerate(vs):
                # .get with defaults also covers NaN, which a frame-built catalog may hold for "none"
                emphasis[i, j] = g.get(v.emphasis_genre, len(layout.genres))  # type: ignore[arg-type]
                tone[i, j] = t.get(v.tone, len(tones))
                cast[i, j] = a.get(v.featured_cast, -1)  # type: ignore[arg-type]
                ids[i, j] = v.variant_id
        return cls(catalog.title_ids.astype(np.int64), nv, emphasis, tone, cast, ids.astype(str), tuple(tones), len(layout.genres), len(layout.cast))
