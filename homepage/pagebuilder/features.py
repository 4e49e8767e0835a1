"""Stage features: every remaining candidate row described given the rows already placed.

The same code feeds training (labels from the replay machinery) and inference, so the
model is always scored on exactly the features it was trained on.

The per-title signals of every candidate row are gathered once per request; when a row
is placed, the titles it shows are marked and every row's effective titles and
aggregates are re-derived in one compiled pass over the candidate matrix, and the
page-level columns (similarity to the page, rows of the same kind above, the stage) in
another (``stage_kernels``): three kernel calls a stage whatever the number of rows
(``bench/pagebuilder_speed.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats
from homepage.pagebuilder.stage_kernels import SIG_FRESH, SIG_PERS, SIG_POP, SIG_VALUE, aggregate_rows, page_columns, place_row

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
# What the page model reads: every stage feature, the ranker and reason codes and the ranker's
# own row score included (the feature list names them). Leaving the identity and row
# score out was measured on validation splits of ml-latest-small and did not help; this is the
# one place to leave a feature out of the model while keeping it for explain output and rules.
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURE_NAMES if f not in ())
CATEGORICAL: tuple[str, ...] = ("ranker", "reason_kind", "device")
DEVICES: tuple[str, ...] = ("tv", "web", "mobile", "tablet")
VIEWPORT_COLS = 6  # columns a user sees without scrolling, for the viewport value feature

# columns written by the per-row aggregation, in the order ``aggregate_rows`` expects (NaN where the user has no personal scores)
_AGG = ("fill", "dup_share", "pers_mean", "pop_mean", "trend_mean", "fresh_mean", "pers_max", "pers_first", "value_disc", "value_viewport", "value_count", "value_share")
_AGG_COLS = np.array([COL[c] for c in _AGG], dtype=np.int64)
# columns written per view, in the order ``page_columns`` expects
_PAGE = ("stage", "genre_sim_page", "new_genres", "genre_sim_max_above", "pers_mean", "pers_rel", "value_disc", "value_rel")
_PAGE_COLS = np.array([COL[c] for c in _PAGE], dtype=np.int64)
_SAME_RANKER_ABOVE, _SAME_KIND_ABOVE = COL["same_ranker_above"], COL["same_kind_above"]


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

    def discounted_hits(self, is_target: np.ndarray, disc: np.ndarray) -> np.ndarray:
        """Per remaining row: sum of ``disc[column]`` over its effective titles that are targets.

        ``is_target`` marks the target cells of all K x L titles (``np.isin(titles, targets)``),
        computed once per candidate matrix by the caller rather than once per stage.
        """
        rem = self.remaining
        hit = self.take[rem] & is_target[rem]
        col = np.clip(self.csum[rem] - 1, 0, disc.size - 1)
        return np.where(hit, disc[col], 0.0).sum(axis=1)


class StageFeatures:
    """The page being built and the stage features of every candidate row, kept up to date.

    ``view(stage, remaining)`` gives the features of the remaining rows; ``place(row)``
    puts a row on the page. After a placement every row's effective titles and aggregates
    are re-derived in one compiled pass over the K x L cells (``stage_kernels``): a stage
    costs three kernel calls whatever the number of rows. Rows that lost no title they
    would show get the values they had. Genres are 64-bit sets: a row's genres are the OR
    of its effective titles', and the genre features are set overlaps (popcounts), so no
    (rows x titles x genres) array is ever built. Per-request constants (signals gathered
    per position) are computed once.
    """

    def __init__(
        self, cm: CandidateMatrix, stats: TitleStats, user: UserSignals, cols: int, n_rankers: int, viewport_rows: int
    ) -> None:
        K, L = cm.titles.shape
        self.cm, self.cols, self.viewport_rows = cm, cols, viewport_rows
        self.T = cm.titles
        self.head = min(cols, L)
        pers, value = user.personal, user.value
        valid = cm.valid
        # per-position signals, zero at padding
        padded = np.where(valid, cm.titles, stats.popularity.shape[0])  # padding reads the zero entry
        sig = np.zeros((5, K, L), dtype=np.float32)
        stats.padded_signals.take(padded, axis=1, out=sig[SIG_POP : SIG_FRESH + 1])
        Tc = np.maximum(cm.titles, 0)
        if pers is not None:
            np.multiply(pers.take(Tc), valid, out=sig[SIG_PERS])
        if value is not None:
            np.multiply(value.take(Tc), valid, out=sig[SIG_VALUE])
            self.value_total = sig[SIG_VALUE].sum(axis=1)
        else:
            self.value_total = np.zeros(K, dtype=np.float32)
        self.signals = sig
        disc = 1.0 / np.log2(np.arange(max(cols, 1)) + 2.0)
        self.disc_page = disc
        self.disc_viewport = np.where(np.arange(disc.size) < min(VIEWPORT_COLS, cols), disc, 0.0)
        self.head_valid = valid[:, : self.head].sum(axis=1).astype(np.float32)
        self.has_pers, self.has_value = pers is not None, value is not None
        self.bits = stats.padded_genre_bits.take(padded)

        self.shown = np.zeros(stats.popularity.shape[0], dtype=bool)
        self.avail = valid.copy()
        self.stale = True  # the effective titles must be re-derived before the next view
        self.page_bits = np.uint64(0)
        self.unseen_viewport_bits = _ALL_GENRES  # genres not yet in the viewport rows (the new_genres feature)
        self.unseen_visible_bits = _ALL_GENRES  # genres not yet among the titles the viewport shows (min_viewport_genres)
        self.above_bits = np.zeros(K, dtype=np.uint64)  # each placed row's genres, in page order
        self.n_above = 0
        self.ranker_count = np.zeros(n_rankers + 1, dtype=np.int64)
        self.row_bits = np.zeros(K, dtype=np.uint64)
        self.n_eff = np.zeros(K, dtype=np.int64)

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
    def visible_genre_count(self) -> int:
        """Distinct genres among the titles the viewport shows (see ``see_viewport``)."""
        return 64 - int(self.unseen_visible_bits).bit_count()

    def visible_bits(self, rows: np.ndarray, viewport_cols: int) -> np.ndarray:
        """The genre sets of what ``rows`` would show in the viewport: their first ``viewport_cols`` effective titles."""
        shown = self.take[rows] & (self.csum[rows] <= viewport_cols)
        return np.bitwise_or.reduce(np.where(shown, self.bits[rows], np.uint64(0)), axis=1)

    def visible_new_genres(self, remaining: np.ndarray, viewport_cols: int) -> np.ndarray:
        """Genres each remaining row would add to those the viewport shows (for ``min_viewport_genres`` only)."""
        return np.bitwise_count(self.visible_bits(remaining, viewport_cols) & self.unseen_visible_bits).astype(np.int64)

    def see_viewport(self, row: int, viewport_cols: int) -> None:
        """Count the genres ``row`` shows in the viewport; call before ``place`` for a viewport row."""
        self.unseen_visible_bits &= ~self.visible_bits(np.array([row]), viewport_cols)[0]

    def _aggregate(self) -> None:
        """Re-derive every row's effective titles and title aggregates from the titles still available.

        ``take`` and ``csum`` are new arrays each time and never written afterwards, so a
        ``StageView`` holding them stays valid after later stages.
        """
        K, L = self.avail.shape
        self.take = np.empty((K, L), dtype=bool)
        self.csum = np.empty((K, L), dtype=np.int32)
        aggregate_rows(
            self.avail, self.cols, self.head, self.signals, self.disc_page, self.disc_viewport, self.bits, self.has_pers, self.has_value,
            self.head_valid, self.value_total, self.X, self.take, self.csum, self.n_eff, self.row_bits, _AGG_COLS,
        )  # fmt: skip

    def view(self, stage: int, remaining: np.ndarray) -> StageView:
        """Features of the ``remaining`` rows at ``stage``; a view never changes after it is made."""
        if self.stale:
            self._aggregate()
            self.stale = False
        Xr = page_columns(
            self.X, remaining, stage, self.row_bits, self.page_bits, self.unseen_viewport_bits, self.above_bits[: self.n_above],
            self.has_pers, self.has_value, _PAGE_COLS,
        )  # fmt: skip
        return StageView(remaining, self.T, self.take, self.csum, self.n_eff.take(remaining), Xr)

    def place(self, row: int, stage: int) -> np.ndarray:
        """Put candidate ``row`` on the page at ``stage``; returns the catalog indices it shows."""
        titles = place_row(row, self.T, self.take, self.avail, self.shown, self.cm.ranker, self.cm.kind, self.X, _SAME_RANKER_ABOVE, _SAME_KIND_ABOVE)
        bits = self.row_bits[row]
        self.page_bits |= bits
        if stage < self.viewport_rows:
            self.unseen_viewport_bits &= ~bits
        self.above_bits[self.n_above] = bits
        self.n_above += 1
        self.ranker_count[self.cm.ranker[row]] += 1
        self.stale = True
        return titles
