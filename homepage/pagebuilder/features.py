"""Stage features: every remaining candidate row described given the rows already placed.

The same code feeds training (labels from the replay machinery) and inference, so the
model is always scored on exactly the features it was trained on.

The per-title signals of every candidate row are gathered once per request; when a row
is placed, the titles it shows are marked and every row's effective titles and
aggregates are re-derived in one pass of whole-matrix operations, and the page-level
columns (similarity to the page, rows of the same kind above, the stage) are updated in
a few whole-column operations. A stage therefore costs a fixed, small number of numpy
calls whatever the number of rows (``bench/pagebuilder_speed.py``).
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

# per-position channels summed over a row's effective titles (StageFeatures.ch)
_CH = ("head", "pers", "pop", "trend", "fresh", "value", "valued")
_CH_HEAD, _CH_PERS, _CH_POP, _CH_TREND, _CH_FRESH, _CH_VALUE, _CH_VALUED = range(len(_CH))
# columns written by the per-row aggregation (NaN where the user has no personal scores)
_AGG = ("fill", "dup_share", "pers_mean", "pop_mean", "trend_mean", "fresh_mean", "pers_max", "pers_first", "value_disc", "value_viewport", "value_count", "value_share")
_AGG_COLS = np.array([COL[c] for c in _AGG], dtype=np.int64)
_FILL, _DUP, _PERS_MEAN, _PERS_MAX, _PERS_FIRST, _PERS_REL = (COL[c] for c in ("fill", "dup_share", "pers_mean", "pers_max", "pers_first", "pers_rel"))
_VALUE_DISC, _VALUE_COUNT, _VALUE_SHARE, _VALUE_REL = (COL[c] for c in ("value_disc", "value_count", "value_share", "value_rel"))
_GENRE_SIM_PAGE, _GENRE_SIM_MAX_ABOVE, _NEW_GENRES = (COL[c] for c in ("genre_sim_page", "genre_sim_max_above", "new_genres"))
_SAME_RANKER_ABOVE, _SAME_KIND_ABOVE, _STAGE = (COL[c] for c in ("same_ranker_above", "same_kind_above", "stage"))
# adjacent feature columns written as one block
_POP_TREND_FRESH = slice(COL["pop_mean"], COL["fresh_mean"] + 1)
_VALUE_DISC_VIEWPORT = slice(COL["value_disc"], COL["value_viewport"] + 1)
assert (COL["trend_mean"], COL["fresh_mean"], COL["value_viewport"]) == (COL["pop_mean"] + 1, COL["pop_mean"] + 2, COL["value_disc"] + 1)


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
    them); ``csum`` - 1 is their column. A view never changes after it is made.
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
    puts a row on the page. Every stage re-derives the effective titles and aggregates of
    all K rows in one pass of whole-matrix numpy calls: at K x L of a few thousand cells a
    call costs the same whatever its size, so a fixed, small number of calls per stage is
    cheaper than gathering and scattering the rows that changed. Rows that lost no title
    they would show get exactly the values they had. Genres are 64-bit sets: a row's genres
    are the OR of its effective titles', and the genre features are set overlaps
    (popcounts), so no (rows x titles x genres) array is ever built. Per-request constants
    (signals gathered per position, same-ranker and same-kind pairs) are computed once.
    """

    def __init__(
        self, cm: CandidateMatrix, stats: TitleStats, user: UserSignals, cols: int, n_rankers: int, n_kinds: int, viewport_rows: int
    ) -> None:
        K, L = cm.titles.shape
        self.cm, self.cols, self.viewport_rows = cm, cols, viewport_rows
        self.T = cm.titles
        self.Tc = Tc = np.maximum(cm.titles, 0)
        self.valid = valid = cm.valid
        self.head = min(cols, L)
        pers, value = user.personal, user.value
        # per-position signals, zero at padding; a stage sums them over each row's effective
        # titles with one product and one matrix-vector call
        ch = np.zeros((len(_CH), K, L), dtype=np.float32)
        ch[_CH_HEAD, :, : self.head] = 1.0
        if pers is not None:
            ch[_CH_PERS] = pers[Tc]
        ch[_CH_POP] = stats.popularity[Tc]
        ch[_CH_TREND] = stats.trend[Tc]
        ch[_CH_FRESH] = stats.freshness[Tc]
        if value is not None:
            ch[_CH_VALUE] = value[Tc]
            ch[_CH_VALUED] = ch[_CH_VALUE] > 0
        ch *= valid
        self.ch = ch
        self.ones = np.ones(L, dtype=np.float32)
        self.head_valid = ch[_CH_HEAD].sum(axis=1)
        self.head_n = np.maximum(self.head_valid, 1.0)
        self.pers = np.where(valid, ch[_CH_PERS], -np.inf).ravel() if pers is not None else None
        if value is not None:
            total = ch[_CH_VALUE].sum(axis=1)
            # a row with no valuable title has value_share 0 (0 / inf)
            self.value_total = np.where(total > 0, total, np.float32(np.inf))
        self.has_value = value is not None
        self.bits = np.where(valid, stats.genre_bits[Tc], np.uint64(0))
        disc = (1.0 / np.log2(np.arange(L) + 2.0)).astype(np.float32)
        pos = np.arange(L)
        # column discounts of the page and of the viewport, looked up at csum (0: not shown)
        self.disc2 = np.zeros((2, L + 1), dtype=np.float32)
        self.disc2[0, 1:] = np.where(pos < cols, disc, 0.0)
        self.disc2[1, 1:] = np.where(pos < min(VIEWPORT_COLS, cols), disc, 0.0)
        self.row_start = np.arange(K) * L

        self.shown = np.zeros(stats.popularity.shape[0], dtype=bool)
        self.avail = valid
        self.stale = True  # the effective titles must be re-derived before the next view
        self.page_bits = np.uint64(0)
        self.viewport_bits = np.uint64(0)
        self.above = np.zeros(K, dtype=np.uint64)  # genre sets of the placed rows, in order
        self.n_above = 0
        self.ranker_count = np.zeros(n_rankers + 1, dtype=np.int64)
        self.kind_count = np.zeros(n_kinds + 1, dtype=np.int64)
        # placing row r adds 1 to same_ranker_above / same_kind_above of every row sharing its ranker / kind
        self.same_ranker = (cm.ranker[:, None] == cm.ranker[None, :]).astype(np.float32)
        self.same_kind = (cm.kind[:, None] == cm.kind[None, :]).astype(np.float32)

        X = np.zeros((K, len(FEATURE_NAMES)), dtype=np.float32)
        X[:, COL["ranker"]] = cm.ranker
        X[:, COL["reason_kind"]] = cm.kind
        X[:, COL["row_score"]] = cm.row_score
        X[:, COL["row_len"]] = cm.length
        X[:, COL["hist_len_log"]] = np.log1p(user.history_len)
        X[:, COL["days_since_last"]] = user.days_since_last
        X[:, COL["device"]] = user.device if user.device >= 0 else np.nan
        X[:, COL["hour"]] = user.hour if user.hour >= 0 else np.nan
        X[:, _AGG_COLS] = np.nan
        if pers is None:
            X[:, COL["pers_rel"]] = np.nan
        if value is None:
            X[:, COL["value_rel"]] = np.nan
        self.X = X

    @property
    def viewport_genre_count(self) -> int:
        return int(self.viewport_bits).bit_count()

    def _aggregate(self) -> None:
        """Re-derive every row's effective titles and title aggregates from the titles still available.

        ``take`` and ``csum`` are new arrays each time and never written afterwards, so a
        ``StageView`` holding them stays valid after later stages.
        """
        cols, avail, X = self.cols, self.avail, self.X
        K, L = avail.shape
        csum = np.add.accumulate(avail, axis=1, dtype=np.int32)
        take = avail & (csum <= cols)
        n_eff = np.minimum(csum[:, -1], cols) if L else np.zeros(K, np.int64)
        self.take, self.csum, self.n_eff = take, csum, n_eff
        denom = np.maximum(n_eff, 1).astype(np.float32)
        # every channel summed over the effective titles: (channels, K)
        per_pos = self.ch * take
        sums = (per_pos.reshape(-1, L) @ self.ones).reshape(len(_CH), K)
        self.row_bits = np.bitwise_or.reduce(np.where(take, self.bits, np.uint64(0)), axis=1)
        X[:, _FILL] = n_eff / cols
        # lost titles among the first ``cols`` positions: valid ones there that are not effective
        X[:, _DUP] = (self.head_valid - sums[_CH_HEAD]) / self.head_n
        X[:, _POP_TREND_FRESH] = (sums[_CH_POP : _CH_FRESH + 1] / denom).T
        if self.pers is not None:
            X[:, _PERS_MEAN] = sums[_CH_PERS] / denom
            has = n_eff > 0
            X[:, _PERS_MAX] = np.where(has, np.where(take.ravel(), self.pers, -np.inf).reshape(K, L).max(axis=1), np.nan)
            X[:, _PERS_FIRST] = np.where(has, self.pers.take(self.row_start + take.argmax(axis=1)), np.nan)
        if self.has_value:
            # value discounted by the column each effective title would take (csum - 1)
            X[:, _VALUE_DISC_VIEWPORT] = ((self.disc2.take(csum, axis=1) * per_pos[_CH_VALUE]).reshape(-1, L) @ self.ones).reshape(2, K).T
            X[:, _VALUE_COUNT] = sums[_CH_VALUED]
            X[:, _VALUE_SHARE] = sums[_CH_VALUE] / self.value_total

    def view(self, stage: int, remaining: np.ndarray, snapshot: bool = False) -> StageView:
        """Features of the ``remaining`` rows at ``stage``.

        Views never change after they are made (``snapshot`` is kept for callers that asked
        for copies; every view is one now).
        """
        if self.stale:
            self._aggregate()
            self.stale = False
        Xr = self.X.take(remaining, axis=0)
        Xr[:, _STAGE] = stage
        rb = self.row_bits.take(remaining)
        n_g = np.maximum(popcount(rb), 1.0)
        Xr[:, _GENRE_SIM_PAGE] = popcount(rb & self.page_bits) / n_g
        if self.n_above:
            a = self.above[None, : self.n_above]
            r = rb[:, None]
            Xr[:, _GENRE_SIM_MAX_ABOVE] = (popcount(r & a) / np.maximum(popcount(r | a), 1.0)).max(axis=1)
        else:
            Xr[:, _GENRE_SIM_MAX_ABOVE] = 0.0
        Xr[:, _NEW_GENRES] = popcount(rb & ~self.viewport_bits)
        if self.pers is not None and remaining.size:
            pm = Xr[:, _PERS_MEAN]
            top = pm.max()
            if np.isnan(top):
                top = np.max(pm, initial=-np.inf, where=~np.isnan(pm))
            Xr[:, _PERS_REL] = pm - top
        if self.has_value and remaining.size:
            vd = Xr[:, _VALUE_DISC]
            Xr[:, _VALUE_REL] = vd - vd.max()
        return StageView(remaining, self.T, self.take, self.csum, self.n_eff.take(remaining), Xr)

    def place(self, row: int, stage: int) -> np.ndarray:
        """Put candidate ``row`` on the page at ``stage``; returns the catalog indices it shows."""
        titles = self.T[row][self.take[row]]
        self.shown[titles] = True
        bits = self.row_bits[row]
        self.page_bits |= bits
        self.above[self.n_above] = bits
        self.n_above += 1
        self.ranker_count[self.cm.ranker[row]] += 1
        self.kind_count[self.cm.kind[row]] += 1
        self.X[:, _SAME_RANKER_ABOVE] += self.same_ranker[row]
        self.X[:, _SAME_KIND_ABOVE] += self.same_kind[row]
        if stage < self.viewport_rows:
            self.viewport_bits |= bits
        self.avail = self.valid > self.shown[self.Tc]  # valid and not yet shown
        self.stale = True
        return titles
