"""Candidate rows as one padded matrix, plus the per-title statistics the page builder reads.

Turning the rankers' rows into arrays once per request lets every stage of the page
loop be a handful of numpy operations over (rows x positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import CandidateRow
from homepage.state import GlobalState


@dataclass(frozen=True, eq=False)
class TitleStats:
    """Per-title signals as of the world's time, each scaled to about [0, 1]."""

    popularity: np.ndarray  # log1p(count) / max
    trend: np.ndarray  # log1p(decayed) / max
    freshness: np.ndarray  # 1 for this year's titles, 0 for 30+ years old or unknown
    genre_bits: np.ndarray  # (n_titles,) uint64, bit g set when the title has genre g (first 64 genres)
    unseen: np.ndarray  # (n_titles,) bool: no event yet, so not shown (see CandidateMatrix.build)

    @staticmethod
    def compute(world: GlobalState, catalog: Catalog) -> TitleStats:
        def scaled(x: np.ndarray) -> np.ndarray:
            v = np.log1p(np.asarray(x, dtype=np.float64))
            m = v.max() if v.size else 0.0
            return (v / m if m > 0 else v).astype(np.float32)

        year_now = 1970 + world.as_of / (365.25 * 86_400)
        years = catalog.years.astype(np.float32)
        fresh = np.where(years > 0, np.clip(1.0 - (year_now - years) / 30.0, 0.0, 1.0), 0.0).astype(np.float32)
        return TitleStats(scaled(world.counts), scaled(world.decayed), fresh, genre_bits(catalog.genre_matrix), world.counts == 0)

    @cached_property
    def padded_signals(self) -> np.ndarray:
        """(3, n_titles + 1) popularity, trend, freshness with a zero column at index n_titles (padding)."""
        out = np.zeros((3, self.popularity.shape[0] + 1), dtype=np.float32)
        out[:, :-1] = (self.popularity, self.trend, self.freshness)
        return out

    @cached_property
    def padded_genre_bits(self) -> np.ndarray:
        """``genre_bits`` with an empty set at index n_titles (padding)."""
        return np.append(self.genre_bits, np.uint64(0))


def genre_bits(genre_matrix: np.ndarray) -> np.ndarray:
    """Each title's genres as one 64-bit set, so a row's genres are one OR-reduction.

    Catalogs with more than 64 genres keep the first 64 (MovieLens has 20).
    """
    gm = np.asarray(genre_matrix, dtype=bool)[:, :64]
    weights = np.left_shift(np.uint64(1), np.arange(gm.shape[1], dtype=np.uint64))
    return (gm.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64) if gm.shape[1] else np.zeros(gm.shape[0], np.uint64)


class TitleLookup:
    """Title id -> catalog index, -1 for unknown or disallowed titles, made once per catalog.

    Ids that are small non-negative integers (MovieLens, the synthetic world) are looked up in
    a dense table, one gather a page instead of a binary search; other catalogs (and
    ``max_table=0``) use ``Catalog.index_of``. Same answers either way.
    """

    def __init__(self, catalog: Catalog, allowed: np.ndarray | None = None, max_table: int = 4_000_000) -> None:
        self.catalog, self.allowed = catalog, allowed
        ids = catalog.title_ids
        self.table: np.ndarray | None = None
        if max_table > 0 and ids.size and int(ids.min()) >= 0 and int(ids.max()) < max(max_table, 8 * ids.size):
            index = np.arange(ids.size, dtype=np.int64)
            if allowed is not None:
                index = np.where(allowed, index, -1)
            self.table = np.full(int(ids.max()) + 2, -1, dtype=np.int64)  # the last entry answers every id out of range
            self.table[ids] = index

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return self.table.take(np.clip(ids, -1, self.table.size - 1))
        flat = self.catalog.index_of(ids)
        if self.allowed is not None and flat.size:
            flat = np.where((flat >= 0) & self.allowed[np.maximum(flat, 0)], flat, -1)
        return flat


@dataclass(frozen=True, eq=False)
class CandidateMatrix:
    """K candidate rows padded to L positions: title indices (-1 pad) and row attributes."""

    rows: tuple[CandidateRow, ...]
    titles: np.ndarray  # (K, L) int64 catalog indices, -1 pad
    valid: np.ndarray  # (K, L) bool
    scores: np.ndarray  # (K, L) float32 the ranker's title scores, NaN pad
    ranker: np.ndarray  # (K,) int, code in the ranker vocabulary (len(vocab) = other)
    kind: np.ndarray  # (K,) int, code in the reason-kind vocabulary
    row_score: np.ndarray  # (K,) float32
    length: np.ndarray  # (K,) int

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def build(
        rows: list[CandidateRow],
        catalog: Catalog,
        ranker_vocab: tuple[str, ...],
        kind_vocab: tuple[str, ...],
        allowed: np.ndarray | None = None,
        lookup: TitleLookup | None = None,
        unseen: np.ndarray | None = None,
        own: np.ndarray | None = None,
    ) -> CandidateMatrix:
        """Map every row's title ids to catalog indices in one call; drop unknown, disallowed and unseen titles.

        ``lookup`` (made from the same catalog and ``allowed``) saves rebuilding the id index per call.
        ``unseen`` marks titles with no event yet: a MovieLens movies file lists titles first rated
        years later, and showing one before anyone could have watched it credits a replayed page
        with the future. The user's ``own`` titles are kept (the world state can lag their events).
        """
        k = len(rows)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        width = int(lengths.max()) if k else 0
        look = lookup if lookup is not None else TitleLookup(catalog, allowed, max_table=0)
        # as int64: one plug-in's uint64 ids beside int64 ones would make numpy concatenate to float64
        # (an id past int64 wraps negative, unknown, and is dropped like any unknown id)
        flat = look(np.concatenate([r.title_ids for r in rows], dtype=np.int64)) if k else np.zeros(0, np.int64)
        if unseen is not None and flat.size:
            hide = unseen[np.maximum(flat, 0)] & (flat >= 0)
            if hide.any():
                if own is not None and own.size:
                    hide &= ~np.isin(flat, own)
                flat = np.where(hide, -1, flat)
        titles = np.full((k, width), -1, dtype=np.int64)
        scores = np.full((k, width), np.nan, dtype=np.float32)
        if flat.size:
            # every row's known titles moved to its front, in one scatter
            row_of = np.repeat(np.arange(k), lengths)
            keep = flat >= 0
            kept_before = np.cumsum(keep) - keep
            row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            col = kept_before - kept_before[np.minimum(row_start, flat.size - 1)][row_of]
            titles[row_of[keep], col[keep]] = flat[keep]
            scores[row_of[keep], col[keep]] = np.concatenate([r.scores for r in rows])[keep]
        valid = titles >= 0
        rindex = {n: i for i, n in enumerate(ranker_vocab)}
        kindex = {n: i for i, n in enumerate(kind_vocab)}
        return CandidateMatrix(
            rows=tuple(rows),
            titles=titles,
            valid=valid,
            scores=scores,
            ranker=np.array([rindex.get(r.ranker, len(ranker_vocab)) for r in rows], dtype=np.int64),
            kind=np.array([kindex.get(r.reason.kind, len(kind_vocab)) for r in rows], dtype=np.int64),
            row_score=np.array([r.row_score for r in rows], dtype=np.float32),
            length=valid.sum(axis=1),
        )
