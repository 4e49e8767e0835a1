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
_CH = ("one", "head", "pers", "pop", "trend", "fresh", "value", "valued", "value_disc", "value_viewport")
_CH_ONE, _CH_HEAD, _CH_PERS, _CH_POP, _CH_TREND, _CH_FRESH, _CH_VALUE, _CH_VALUED, _CH_VALUE_DISC, _CH_VALUE_VIEWPORT = range(len(_CH))
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
_PERS_FIRST_MAX = [COL["pers_first"], COL["pers_max"]]
_SAME_ABOVE = slice(COL["same_ranker_above"], COL["same_kind_above"] + 1)
_REL_FROM, _REL_TO = [COL["pers_mean"], COL["value_disc"]], [COL["pers_rel"], COL["value_rel"]]
assert COL["same_kind_above"] == COL["same_ranker_above"] + 1
assert (COL["trend_mean"], COL["fresh_mean"], COL["value_viewport"]) == (COL["pop_mean"] + 1, COL["pop_mean"] + 2, COL["value_disc"] + 1)


_ALL_GENRES = np.uint64(2**64 - 1)


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
        # Per-position signals, zero at padding. A stage weighs them by a lookup on each
        # position's column (csum): 1 for the first ``cols`` available titles (the effective
        # ones), the page or viewport column discount for the value channels; one product
        # and one matrix-vector call then give every row's sums.
        ch = np.zeros((len(_CH), K, L), dtype=np.float32)
        ch[_CH_ONE] = 1.0
        ch[_CH_HEAD, :, : self.head] = 1.0
        if pers is not None:
            ch[_CH_PERS] = pers[Tc]
        padded = np.where(valid, cm.titles, stats.popularity.shape[0])  # padding reads the zero entry
        stats.padded_signals.take(padded, axis=1, out=ch[_CH_POP : _CH_FRESH + 1])
        if value is not None:
            ch[_CH_VALUE] = value[Tc]
            ch[_CH_VALUED] = ch[_CH_VALUE] > 0
            ch[_CH_VALUE_DISC] = ch[_CH_VALUE_VIEWPORT] = ch[_CH_VALUE]
        ch *= valid
        self.ch = ch
        disc = 1.0 / np.log2(np.arange(L) + 2.0)
        pos = np.arange(L)
        # weights by column + 1 (0: not effective): 1 for the first ``cols``, then the page and viewport discounts
        self.weight = np.zeros((3, L + 1), dtype=np.float32)
        self.weight[0, 1 : cols + 1] = 1.0
        self.weight[1, 1:] = np.where(pos < cols, disc, 0.0)
        self.weight[2, 1:] = np.where(pos < min(VIEWPORT_COLS, cols), disc, 0.0)
        self.weighted = np.empty_like(ch)  # the channels times their weights, rewritten every stage
        self.ones = np.ones(L, dtype=np.float32)
        self.head_valid = ch[_CH_HEAD].sum(axis=1)
        self.head_n = np.maximum(self.head_valid, 1.0)
        if value is not None:
            total = ch[_CH_VALUE].sum(axis=1)
            self.value_total = np.where(total > 0, total, np.float32(np.inf))  # no valuable title: share 0
        self.has_pers, self.has_value = pers is not None, value is not None
        if pers is not None:
            # pers_first and pers_max are the personal score at the first effective position
            # in row order and in order of decreasing score: one argmax over both orders
            P = np.where(valid, ch[_CH_PERS], -np.inf)
            order = np.empty((K, 2, L), dtype=np.int64)  # flat positions in row order, then by decreasing score
            order[:, 0] = np.arange(K * L).reshape(K, L)
            np.add(np.argsort(-P, axis=1, kind="stable"), order[:, 0, :1], out=order[:, 1])
            self.pers_order = order
            self.pers_ordered = P.ravel().take(order).ravel()  # the scores in those orders
            self.pers_offset = np.arange(K)[:, None] * (2 * L) + np.array([0, L])  # (K, 2) start of each order
        self.bits = stats.padded_genre_bits.take(padded)

        self.shown = np.zeros(stats.popularity.shape[0], dtype=bool)
        self.avail = valid
        self.stale = True  # the effective titles must be re-derived before the next view
        # genre sets a row is compared with: everything, the page, genres not yet in the viewport, then each row above
        self.masks = np.zeros(3 + K, dtype=np.uint64)
        self.masks[0] = self.masks[2] = _ALL_GENRES
        # denominators of the overlaps: own count for the page, own + |above| - overlap per row above, 1 otherwise
        self.own_weight = np.ones(3 + K, dtype=np.float32)
        self.own_weight[[0, 2]] = 0.0
        self.union_add = np.zeros(3 + K, dtype=np.float32)
        self.union_add[[0, 2]] = 1.0
        self.union_sub = np.ones(3 + K, dtype=np.float32)
        self.union_sub[:3] = 0.0
        self.n_above = 0
        self.ranker_count = np.zeros(n_rankers + 1, dtype=np.int64)
        # placing row r adds 1 to same_ranker_above and same_kind_above of every row sharing its ranker / kind
        self.same = np.stack([cm.ranker[:, None] == cm.ranker[None, :], cm.kind[:, None] == cm.kind[None, :]], axis=2).astype(np.float32)

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
        return 64 - int(self.masks[2]).bit_count()

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
        # every channel summed over the effective titles, with its column weight: (channels, K)
        column = csum * avail  # column + 1 of each effective title, 0 elsewhere
        w, wc = self.weight, self.weighted
        np.multiply(self.ch[:_CH_VALUE_DISC], w[0].take(column), out=wc[:_CH_VALUE_DISC])
        np.multiply(self.ch[_CH_VALUE_DISC], w[1].take(column), out=wc[_CH_VALUE_DISC])
        np.multiply(self.ch[_CH_VALUE_VIEWPORT], w[2].take(column), out=wc[_CH_VALUE_VIEWPORT])
        sums = (wc.reshape(-1, L) @ self.ones).reshape(len(_CH), K)
        self.row_bits = np.bitwise_or.reduce(self.bits * take, axis=1)
        X[:, _FILL] = n_eff / cols
        # lost titles among the first ``cols`` positions: valid ones there that are not effective
        X[:, _DUP] = (self.head_valid - sums[_CH_HEAD]) / self.head_n
        means = sums[_CH_PERS : _CH_FRESH + 1] / np.maximum(sums[_CH_ONE], 1.0)
        X[:, _POP_TREND_FRESH] = means[1:].T
        if self.has_pers:
            X[:, _PERS_MEAN] = means[0]
        if self.has_pers and L:  # (rows without titles keep NaN)
            first = take.ravel().take(self.pers_order).argmax(axis=2)  # (K, 2): first effective in row order, by score
            pf_pm = self.pers_ordered.take(self.pers_offset + first)
            pf_pm[n_eff == 0] = np.nan
            X[:, _PERS_FIRST_MAX] = pf_pm
        if self.has_value:
            X[:, _VALUE_DISC_VIEWPORT] = sums[_CH_VALUE_DISC : _CH_VALUE_VIEWPORT + 1].T
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
        n = self.n_above
        # Genre overlaps of each row with: everything (its own count), the page, the genres
        # not yet in the viewport, each row above; then shares of the row's own genres (page)
        # and of the union with each row above (|a| + |b| - |a & b|), all in one division.
        inter = np.bitwise_count(self.row_bits.take(remaining)[:, None] & self.masks[: 3 + n]).astype(np.float32)
        union = np.maximum(inter[:, :1] * self.own_weight[: 3 + n] + (self.union_add[: 3 + n] - self.union_sub[: 3 + n] * inter), 1.0)
        share = inter / union
        Xr[:, _GENRE_SIM_PAGE] = share[:, 1]
        Xr[:, _NEW_GENRES] = inter[:, 2]
        Xr[:, _GENRE_SIM_MAX_ABOVE] = share[:, 3:].max(axis=1) if n else 0.0
        if remaining.size and (self.has_pers or self.has_value):
            rel = Xr[:, _REL_FROM]
            top = rel.max(axis=0)
            if np.isnan(top[0]) and self.has_pers:  # a NaN personal mean is left out of the max
                top[0] = np.max(rel[:, 0], initial=-np.inf, where=~np.isnan(rel[:, 0]))
            Xr[:, _REL_TO] = rel - top
        return StageView(remaining, self.T, self.take, self.csum, self.n_eff.take(remaining), Xr)

    def place(self, row: int, stage: int) -> np.ndarray:
        """Put candidate ``row`` on the page at ``stage``; returns the catalog indices it shows."""
        titles = self.T[row][self.take[row]]
        self.shown[titles] = True
        bits = self.row_bits[row]
        masks = self.masks
        masks[1] |= bits
        if stage < self.viewport_rows:
            masks[2] &= ~bits
        masks[3 + self.n_above] = bits
        self.union_add[3 + self.n_above] = int(bits).bit_count()
        self.n_above += 1
        self.ranker_count[self.cm.ranker[row]] += 1
        self.X[:, _SAME_ABOVE] += self.same[row]
        self.avail = self.valid > self.shown[self.Tc]  # valid and not yet shown
        self.stale = True
        return titles
