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
# What the page model reads: every stage feature except the row's identity and the ranker's
# own row score. Row scores are on each ranker's private scale, and ranker or reason codes
# let the model memorise how the rankers behaved at the inner split it was trained on; on a
# validation split inside the training window the model generalised better without them.
# They stay in FEATURE_NAMES for explain output and rules.
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURE_NAMES if f not in ())
CATEGORICAL: tuple[str, ...] = ("ranker", "reason_kind", "device")
DEVICES: tuple[str, ...] = ("tv", "web", "mobile", "tablet")
VIEWPORT_COLS = 6  # columns a user sees without scrolling, for the viewport value feature

# per-position signals averaged over a row's effective titles, in this order in StageFeatures.sig
_SIG = ("pers_mean", "pop_mean", "trend_mean", "fresh_mean")
# columns written by the per-row re-aggregation, in one block
_AGG = ("fill", "dup_share", *_SIG, "pers_max", "pers_first", "value_disc", "value_viewport", "value_count", "value_share")
_AGG_COLS = np.array([COL[c] for c in _AGG], dtype=np.int64)


def popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.float32)


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

    ``take`` marks, per candidate row (all K, indexed by ``remaining``) and original
    position, the titles the row would show now (still new to the page, first ``cols`` of
    them); ``csum`` - 1 is their column. In explain mode these are snapshots; otherwise
    they are the live arrays and are valid only until the next row is placed.
    """

    remaining: np.ndarray  # (k,) row indices into the candidate matrix
    titles: np.ndarray  # (K, L) catalog indices, -1 pad
    take: np.ndarray  # (K, L) bool
    csum: np.ndarray  # (K, L) int, available titles up to and including each position
    n_effective: np.ndarray  # (k,)
    X: np.ndarray  # (k, len(FEATURE_NAMES)) float32

    def effective(self, j: int) -> np.ndarray:
        """Catalog indices row ``j`` (a position in ``remaining``) would show now, in order."""
        r = self.remaining[j]
        return self.titles[r][self.take[r]]

    def discounted_hits(self, targets: np.ndarray, disc: np.ndarray) -> np.ndarray:
        """Per remaining row: sum of ``disc[column]`` over its effective titles in ``targets``."""
        rem = self.remaining
        hit = self.take[rem] & np.isin(self.titles[rem], targets)
        col = np.clip(self.csum[rem] - 1, 0, disc.size - 1)
        return np.where(hit, disc[col], 0.0).sum(axis=1)


class StageFeatures:
    """The page being built and the stage features of every candidate row, kept up to date.

    ``view(stage, remaining)`` gives the features of the remaining rows; ``place(row)``
    puts a row on the page and marks the rows that lost titles to it for re-aggregation.
    Genres are 64-bit sets: a row's genres are the OR of its effective titles', and the
    genre features are set overlaps (popcounts), so no (rows x titles x genres) array is
    ever built.
    """

    def __init__(
        self, cm: CandidateMatrix, stats: TitleStats, user: UserSignals, cols: int, n_rankers: int, n_kinds: int, viewport_rows: int
    ) -> None:
        K, L = cm.titles.shape
        self.cm, self.cols, self.viewport_rows = cm, cols, viewport_rows
        self.T = cm.titles
        self.Tc = Tc = np.maximum(cm.titles, 0)
        valid = cm.valid
        pers = user.personal
        sig = np.zeros((K, L, len(_SIG)), dtype=np.float32)
        if pers is not None:
            sig[:, :, 0] = pers[Tc]
        sig[:, :, 1] = stats.popularity[Tc]
        sig[:, :, 2] = stats.trend[Tc]
        sig[:, :, 3] = stats.freshness[Tc]
        sig *= valid[:, :, None]
        self.sig = sig
        self.pers = np.where(valid, sig[:, :, 0], -np.inf) if pers is not None else None
        self.value = np.where(valid, user.value[Tc], 0.0).astype(np.float32) if user.value is not None else None
        self.value_total = self.value.sum(axis=1) if self.value is not None else None
        self.bits = np.where(valid, stats.genre_bits[Tc], np.uint64(0))
        disc = (1.0 / np.log2(np.arange(L + 1) + 2.0)).astype(np.float32)
        pos = np.arange(L + 1)
        # column discounts of the page and of the viewport, looked up at csum - 1 (index -1: unused)
        self.disc2 = np.stack([np.where(pos < cols, disc, 0.0), np.where(pos < min(VIEWPORT_COLS, cols), disc, 0.0)], axis=1).astype(np.float32)
        self.head = min(cols, L)
        self.head_n = np.maximum(valid[:, : self.head].sum(axis=1), 1).astype(np.float32)

        self.shown = np.zeros(stats.popularity.shape[0], dtype=bool)
        self.avail = valid.copy()
        self.take = np.zeros((K, L), dtype=bool)
        self.csum = np.zeros((K, L), dtype=np.int32)
        self.n_eff = np.zeros(K, dtype=np.int64)
        self.row_bits = np.zeros(K, dtype=np.uint64)
        self.page_bits = np.uint64(0)
        self.viewport_bits = np.uint64(0)
        self.above = np.zeros(0, dtype=np.uint64)
        self.ranker_count = np.zeros(n_rankers + 1, dtype=np.int64)
        self.kind_count = np.zeros(n_kinds + 1, dtype=np.int64)

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
            X[:, COL["pers_rel"]] = np.nan
        if user.value is None:
            X[:, COL["value_rel"]] = np.nan
        self.X = X
        self.dirty = np.arange(K)

    @property
    def viewport_genre_count(self) -> int:
        return int(np.bitwise_count(self.viewport_bits))

    def _aggregate(self, rows: np.ndarray) -> None:
        """Re-derive the effective titles and title aggregates of ``rows`` (those that lost titles)."""
        cols, k = self.cols, rows.size
        avail = self.avail[rows]
        csum = np.add.accumulate(avail, axis=1, dtype=np.int32)
        take = avail & (csum <= cols)
        n_eff = np.minimum(csum[:, -1], cols) if csum.shape[1] else np.zeros(k, np.int64)
        self.take[rows], self.csum[rows], self.n_eff[rows] = take, csum, n_eff
        has = n_eff > 0
        denom = np.maximum(n_eff, 1).astype(np.float32)
        self.row_bits[rows] = np.bitwise_or.reduce(np.where(take, self.bits[rows], np.uint64(0)), axis=1)
        block = np.full((k, len(_AGG)), np.nan, dtype=np.float32)
        block[:, 0] = n_eff / cols
        h = self.head
        block[:, 1] = (self.cm.valid[rows, :h] & ~avail[:, :h]).sum(axis=1) / self.head_n[rows]
        block[:, 2:6] = np.matmul(take.astype(np.float32)[:, None, :], self.sig[rows])[:, 0] / denom[:, None]
        if self.pers is not None:
            P = np.where(take, self.pers[rows], -np.inf)
            best = P.max(axis=1)
            block[:, 6] = np.where(has, best, np.nan)
            block[:, 7] = np.where(has, P[np.arange(k), np.argmax(take, axis=1)], np.nan)
        else:
            block[:, 2] = np.nan
        if self.value is not None:
            V = np.where(take, self.value[rows], 0.0).astype(np.float32)
            block[:, 8:10] = np.matmul(V[:, None, :], self.disc2[csum - 1])[:, 0]
            block[:, 10] = (V > 0).sum(axis=1)
            total = self.value_total[rows]  # type: ignore[index]
            block[:, 11] = np.divide(V.sum(axis=1), total, out=np.zeros(k, np.float32), where=total > 0)
        self.X[rows[:, None], _AGG_COLS] = block

    def view(self, stage: int, remaining: np.ndarray, snapshot: bool = False) -> StageView:
        """Features of the ``remaining`` rows at ``stage`` (``snapshot``: copies that outlive later stages)."""
        if self.dirty.size:
            self._aggregate(self.dirty)
            self.dirty = self.dirty[:0]
        Xr = self.X[remaining]
        Xr[:, COL["stage"]] = stage
        rb = self.row_bits[remaining]
        n_g = np.maximum(popcount(rb), 1.0)
        Xr[:, COL["genre_sim_page"]] = popcount(rb & self.page_bits) / n_g
        if self.above.size:
            a = self.above[None, :]
            Xr[:, COL["genre_sim_max_above"]] = (popcount(rb[:, None] & a) / np.maximum(popcount(rb[:, None] | a), 1.0)).max(axis=1)
        else:
            Xr[:, COL["genre_sim_max_above"]] = 0.0
        Xr[:, COL["new_genres"]] = popcount(rb & ~self.viewport_bits)
        Xr[:, COL["same_ranker_above"]] = self.ranker_count[self.cm.ranker[remaining]]
        Xr[:, COL["same_kind_above"]] = self.kind_count[self.cm.kind[remaining]]
        if self.pers is not None and remaining.size:
            pm = Xr[:, COL["pers_mean"]]
            Xr[:, COL["pers_rel"]] = pm - np.max(pm, initial=-np.inf, where=~np.isnan(pm))
        if self.value is not None and remaining.size:
            vd = Xr[:, COL["value_disc"]]
            Xr[:, COL["value_rel"]] = vd - vd.max()
        take, csum = (self.take.copy(), self.csum.copy()) if snapshot else (self.take, self.csum)
        return StageView(remaining, self.T, take, csum, self.n_eff[remaining], Xr)

    def place(self, row: int, stage: int) -> np.ndarray:
        """Put candidate ``row`` on the page at ``stage``; returns the catalog indices it shows."""
        titles = self.T[row][self.take[row]]
        self.shown[titles] = True
        bits = self.row_bits[row]
        self.page_bits |= bits
        self.above = np.append(self.above, bits)
        self.ranker_count[self.cm.ranker[row]] += 1
        self.kind_count[self.cm.kind[row]] += 1
        if stage < self.viewport_rows:
            self.viewport_bits |= bits
        lost = self.take & self.shown[self.Tc]
        # a row changes only if it loses a title it would show: titles beyond its first
        # ``cols`` available ones do not enter any feature until it loses one of those
        self.dirty = np.flatnonzero(lost.any(axis=1))
        self.avail[self.shown[self.Tc]] = False
        return titles
