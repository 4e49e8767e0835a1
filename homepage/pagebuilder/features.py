"""Stage features: every remaining candidate row described given the rows already placed.

The same code feeds training (labels from the replay machinery) and inference, so the
model is always scored on exactly the features it was trained on.

It is incremental: the per-title signals of every candidate row are gathered once per
request (``RowTables``); when a row is placed, only the rows that lose titles to it are
re-aggregated, and the page-level columns (similarity to the page, rows of the same
kind above, the stage) are updated in a few whole-column operations. A stage therefore
costs a fixed, small number of numpy calls whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats

FEATURE_NAMES: tuple[str, ...] = (
    "ranker",
    "reason_kind",
    "row_score",
    "row_len",
    "fill",
    "dup_share",
    "pers_mean",
    "pers_max",
    "pers_first",
    "pers_rel",
    "value_disc",
    "value_viewport",
    "value_count",
    "value_rel",
    "value_share",
    "pop_mean",
    "trend_mean",
    "fresh_mean",
    "genre_sim_page",
    "genre_sim_max_above",
    "new_genres",
    "same_ranker_above",
    "same_kind_above",
    "stage",
    "hist_len_log",
    "days_since_last",
    "device",
    "hour",
)
COL: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
CATEGORICAL: tuple[str, ...] = ("ranker", "reason_kind", "device")
DEVICES: tuple[str, ...] = ("tv", "web", "mobile", "tablet")
VIEWPORT_COLS = 6  # columns a user sees without scrolling, for the viewport value feature

# per-position signals aggregated over a row's effective titles, in this order in RowTables.signals
_PERS, _POP, _TREND, _FRESH, _GENRE0 = 0, 1, 2, 3, 4


@dataclass(frozen=True, eq=False)
class UserSignals:
    """Per-request inputs that are the same for every row."""

    personal: np.ndarray | None  # (n_titles,) float32 personalised scores, standardised; None if cold
    value: np.ndarray | None  # (n_titles,) 1/log2(2 + rank) for the user's top unseen titles, else 0
    history_len: int
    days_since_last: float  # NaN for cold users
    device: int  # index in DEVICES, or NaN-coded -1
    hour: int  # -1 unknown

    @staticmethod
    def rank_value(scores: np.ndarray | None, exclude: np.ndarray, top: int = 200) -> np.ndarray | None:
        """How valuable each title is to this user by personal rank, 0 beyond the top ``top`` unseen."""
        if scores is None or scores.size == 0:
            return None
        s = scores.astype(np.float64, copy=True)
        s[exclude] = -np.inf
        k = min(top, int(np.isfinite(s).sum()))
        value = np.zeros(s.size, dtype=np.float32)
        if k == 0:
            return value
        best = np.argpartition(-s, k - 1)[:k]
        best = best[np.lexsort((best, -s[best]))]
        value[best] = 1.0 / np.log2(np.arange(k) + 2.0)
        return value

    @staticmethod
    def standardise(scores: np.ndarray | None) -> np.ndarray | None:
        if scores is None or scores.size == 0:
            return None
        s = scores.astype(np.float32)
        sd = float(s.std())
        return (s - float(s.mean())) / sd if sd > 0 else s - float(s.mean())


@dataclass(frozen=True, eq=False)
class StageView:
    """One stage: the remaining rows, their effective titles and their feature matrix.

    ``take`` marks, per remaining row and original position, the titles the row would show
    now (still new to the page, first ``cols`` of them); ``rank`` is their column.
    """

    remaining: np.ndarray  # (k,) row indices into the candidate matrix
    titles: np.ndarray  # (k, L) catalog indices, -1 pad
    take: np.ndarray  # (k, L) bool
    rank: np.ndarray  # (k, L) int, column of each taken title
    n_effective: np.ndarray  # (k,)
    profiles: np.ndarray  # (k, n_genres) mean genre vector of the effective titles
    X: np.ndarray  # (k, len(FEATURE_NAMES)) float32

    def effective(self, j: int) -> np.ndarray:
        """Catalog indices row ``j`` (a position in ``remaining``) would show now, in order."""
        return self.titles[j][self.take[j]]

    def discounted_hits(self, targets: np.ndarray, disc: np.ndarray) -> np.ndarray:
        """Per row: sum of ``disc[column]`` over its effective titles that are in ``targets``."""
        hit = self.take & np.isin(self.titles, targets)
        return np.where(hit, disc[np.minimum(self.rank, disc.size - 1)], 0.0).sum(axis=1)


class StageFeatures:
    """The page being built and the stage features of every candidate row, kept up to date.

    ``view(stage, remaining)`` gives the features of the remaining rows; ``place(row)``
    puts a row on the page and marks the rows that lost titles to it for re-aggregation.
    """

    def __init__(
        self, cm: CandidateMatrix, stats: TitleStats, user: UserSignals, cols: int, n_rankers: int, n_kinds: int, viewport_rows: int
    ) -> None:
        K, L = cm.titles.shape
        self.cm, self.cols, self.viewport_rows = cm, cols, viewport_rows
        self.T = cm.titles
        Tc = np.maximum(cm.titles, 0)
        self.Tc = Tc
        n_titles = stats.popularity.shape[0]
        G = stats.genre_unit.shape[1]
        sig = np.zeros((K, L, _GENRE0 + G), dtype=np.float32)
        pers = user.personal
        if pers is not None:
            sig[:, :, _PERS] = pers[Tc]
        sig[:, :, _POP] = stats.popularity[Tc]
        sig[:, :, _TREND] = stats.trend[Tc]
        sig[:, :, _FRESH] = stats.freshness[Tc]
        sig[:, :, _GENRE0:] = stats.genre_unit[Tc]
        sig *= cm.valid[:, :, None]
        self.sig = sig
        self.pers = np.where(cm.valid, sig[:, :, _PERS], -np.inf) if pers is not None else None
        self.value = np.where(cm.valid, user.value[Tc], 0.0).astype(np.float32) if user.value is not None else None
        width = max(L, 1)
        self.disc = (1.0 / np.log2(np.arange(width) + 2.0)).astype(np.float32)
        self.disc_c = np.where(np.arange(width) < cols, self.disc, 0.0).astype(np.float32)
        self.disc_v = np.where(np.arange(width) < min(VIEWPORT_COLS, cols), self.disc, 0.0).astype(np.float32)
        self.head = min(cols, L)
        self.head_n = np.maximum(cm.valid[:, : self.head].sum(axis=1), 1)

        self.shown = np.zeros(n_titles, dtype=bool)
        self.avail = cm.valid.copy()
        self.take = np.zeros((K, L), dtype=bool)
        self.rank = np.zeros((K, L), dtype=np.int64)
        self.n_eff = np.zeros(K, dtype=np.int64)
        self.prof = np.zeros((K, G), dtype=np.float32)
        self.pnorm = np.zeros((K, G), dtype=np.float32)
        self.page_genre = np.zeros(G, dtype=np.float32)
        self.above: list[np.ndarray] = []
        self.ranker_count = np.zeros(n_rankers + 1, dtype=np.int64)
        self.kind_count = np.zeros(n_kinds + 1, dtype=np.int64)
        self.viewport_genres = np.zeros(G, dtype=bool)

        X = np.zeros((K, len(FEATURE_NAMES)), dtype=np.float32)
        X[:, COL["ranker"]] = cm.ranker
        X[:, COL["reason_kind"]] = cm.kind
        X[:, COL["row_score"]] = cm.row_score
        X[:, COL["row_len"]] = cm.length
        X[:, COL["hist_len_log"]] = np.log1p(user.history_len)
        X[:, COL["days_since_last"]] = user.days_since_last
        X[:, COL["device"]] = user.device if user.device >= 0 else np.nan
        X[:, COL["hour"]] = user.hour if user.hour >= 0 else np.nan
        if pers is None:
            X[:, COL["pers_mean"] : COL["pers_rel"] + 1] = np.nan
        if self.value is None:
            X[:, COL["value_disc"] : COL["value_share"] + 1] = np.nan
        self.X = X
        self.dirty = np.arange(K)

    def _aggregate(self, rows: np.ndarray) -> None:
        """Re-derive the effective titles and title aggregates of ``rows`` (those that lost titles)."""
        X, cols = self.X, self.cols
        avail = self.avail[rows]
        csum = np.cumsum(avail, axis=1)
        take = avail & (csum <= cols)
        rank = csum - 1
        n_eff = np.minimum(csum[:, -1], cols) if csum.shape[1] else np.zeros(rows.size, np.int64)
        self.take[rows], self.rank[rows], self.n_eff[rows] = take, rank, n_eff
        denom = np.maximum(n_eff, 1).astype(np.float32)
        sums = np.einsum("kl,klf->kf", take.astype(np.float32), self.sig[rows]) / denom[:, None]
        prof = sums[:, _GENRE0:]
        self.prof[rows] = prof
        pn = np.linalg.norm(prof, axis=1, keepdims=True)
        self.pnorm[rows] = np.divide(prof, pn, out=np.zeros_like(prof), where=pn > 0)
        has = n_eff > 0
        X[rows, COL["fill"]] = n_eff / cols
        X[rows, COL["pop_mean"]] = sums[:, _POP]
        X[rows, COL["trend_mean"]] = sums[:, _TREND]
        X[rows, COL["fresh_mean"]] = sums[:, _FRESH]
        head = self.head
        X[rows, COL["dup_share"]] = (self.cm.valid[rows, :head] & ~avail[:, :head]).sum(axis=1) / self.head_n[rows]
        if self.pers is not None:
            P = self.pers[rows]
            X[rows, COL["pers_mean"]] = np.where(has, sums[:, _PERS], np.nan)
            X[rows, COL["pers_max"]] = np.where(has, np.where(take, P, -np.inf).max(axis=1), np.nan)
            first = np.argmax(take, axis=1)
            X[rows, COL["pers_first"]] = np.where(has, P[np.arange(rows.size), first], np.nan)
        if self.value is not None:
            V = np.where(take, self.value[rows], 0.0)
            r = np.minimum(rank, self.disc.size - 1)
            X[rows, COL["value_disc"]] = (V * self.disc_c[r]).sum(axis=1)
            X[rows, COL["value_viewport"]] = (V * self.disc_v[r]).sum(axis=1)
            X[rows, COL["value_count"]] = (V > 0).sum(axis=1)
            total = self.value[rows].sum(axis=1)
            X[rows, COL["value_share"]] = np.divide(V.sum(axis=1), total, out=np.zeros(rows.size, np.float32), where=total > 0)

    def view(self, stage: int, remaining: np.ndarray) -> StageView:
        """Features of the ``remaining`` rows at ``stage``."""
        if self.dirty.size:
            self._aggregate(self.dirty)
            self.dirty = self.dirty[:0]
        X = self.X
        X[:, COL["stage"]] = stage
        pnorm = self.pnorm[remaining]
        g = float(np.linalg.norm(self.page_genre))
        Xr = X[remaining]
        Xr[:, COL["genre_sim_page"]] = pnorm @ (self.page_genre / g) if g > 0 else 0.0
        Xr[:, COL["genre_sim_max_above"]] = (pnorm @ np.stack(self.above).T).max(axis=1) if self.above else 0.0
        prof = self.prof[remaining]
        Xr[:, COL["new_genres"]] = ((prof > 0) & ~self.viewport_genres).sum(axis=1)
        Xr[:, COL["same_ranker_above"]] = self.ranker_count[self.cm.ranker[remaining]]
        Xr[:, COL["same_kind_above"]] = self.kind_count[self.cm.kind[remaining]]
        if self.pers is not None and remaining.size:
            pm = Xr[:, COL["pers_mean"]]
            Xr[:, COL["pers_rel"]] = pm - (np.nanmax(pm) if not np.all(np.isnan(pm)) else 0.0)
        if self.value is not None and remaining.size:
            vd = Xr[:, COL["value_disc"]]
            Xr[:, COL["value_rel"]] = vd - vd.max()
        return StageView(
            remaining, self.T[remaining], self.take[remaining], self.rank[remaining], self.n_eff[remaining], prof, Xr
        )

    def place(self, row: int, stage: int) -> np.ndarray:
        """Put candidate ``row`` on the page at ``stage``; returns the catalog indices it shows."""
        titles = self.T[row][self.take[row]]
        self.shown[titles] = True
        prof = self.prof[row]
        self.page_genre += prof
        self.above.append(self.pnorm[row].copy())
        self.ranker_count[self.cm.ranker[row]] += 1
        self.kind_count[self.cm.kind[row]] += 1
        if stage < self.viewport_rows:
            self.viewport_genres |= prof > 0
        lost = self.avail & self.shown[self.Tc]
        self.dirty = np.flatnonzero(lost.any(axis=1))
        self.avail &= ~lost
        return titles
