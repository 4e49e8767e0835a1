"""Stage features: every remaining candidate row described given the rows already placed.

The same function feeds training (labels from the replay machinery) and inference, so
the model is always scored on exactly the features it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(eq=False)
class PageSoFar:
    """What the rows already placed cover: the state the stage features are conditioned on."""

    n_titles: int
    n_genres: int
    n_rankers: int
    n_kinds: int
    shown: np.ndarray = field(init=False)
    page_genre: np.ndarray = field(init=False)
    placed_profiles: list[np.ndarray] = field(default_factory=list)
    ranker_count: np.ndarray = field(init=False)
    kind_count: np.ndarray = field(init=False)
    viewport_genres: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.shown = np.zeros(self.n_titles, dtype=bool)
        self.page_genre = np.zeros(self.n_genres, dtype=np.float32)
        self.ranker_count = np.zeros(self.n_rankers + 1, dtype=np.int64)
        self.kind_count = np.zeros(self.n_kinds + 1, dtype=np.int64)
        self.viewport_genres = np.zeros(self.n_genres, dtype=bool)

    def place(self, ranker: int, kind: int, titles: np.ndarray, profile: np.ndarray, genres: np.ndarray, in_viewport: bool) -> None:
        self.shown[titles] = True
        self.page_genre += profile
        self.placed_profiles.append(profile)
        self.ranker_count[ranker] += 1
        self.kind_count[kind] += 1
        if in_viewport:
            self.viewport_genres |= genres


@dataclass(frozen=True, eq=False)
class StageView:
    """One stage: the remaining rows' effective titles and their feature matrix."""

    remaining: np.ndarray  # (k,) row indices into the candidate matrix
    effective: np.ndarray  # (k, C) catalog indices after removing shown titles, -1 pad
    n_effective: np.ndarray  # (k,)
    profiles: np.ndarray  # (k, n_genres) mean genre vector of the effective titles
    X: np.ndarray  # (k, len(FEATURE_NAMES)) float32


def stage_view(
    cm: CandidateMatrix,
    remaining: np.ndarray,
    page: PageSoFar,
    stats: TitleStats,
    user: UserSignals,
    stage: int,
    cols: int,
) -> StageView:
    """Features of the ``remaining`` rows at ``stage``, given ``page``."""
    T = cm.titles[remaining]
    V = cm.valid[remaining]
    k = T.shape[0]
    Tc = np.maximum(T, 0)
    avail = V & ~page.shown[Tc]
    take = avail & (np.cumsum(avail, axis=1) <= cols)
    n_eff = take.sum(axis=1)
    # effective titles in original order: stable sort puts taken positions first
    order = np.argsort(~take, axis=1, kind="stable")[:, :cols]
    eff = np.take_along_axis(np.where(take, T, -1), order, axis=1)
    if eff.shape[1] < cols:
        eff = np.pad(eff, ((0, 0), (0, cols - eff.shape[1])), constant_values=-1)
    emask = eff >= 0
    effc = np.maximum(eff, 0)
    denom = np.maximum(n_eff, 1).astype(np.float32)

    head = min(cols, T.shape[1])
    orig = V[:, :head]
    dup_share = (page.shown[Tc[:, :head]] & orig).sum(axis=1) / np.maximum(orig.sum(axis=1), 1)

    X = np.empty((k, len(FEATURE_NAMES)), dtype=np.float32)
    X[:, COL["ranker"]] = cm.ranker[remaining]
    X[:, COL["reason_kind"]] = cm.kind[remaining]
    X[:, COL["row_score"]] = cm.row_score[remaining]
    X[:, COL["row_len"]] = cm.length[remaining]
    X[:, COL["fill"]] = n_eff / cols
    X[:, COL["dup_share"]] = dup_share
    if user.personal is not None:
        P = np.where(emask, user.personal[effc], 0.0)
        pmean = P.sum(axis=1) / denom
        X[:, COL["pers_mean"]] = np.where(n_eff > 0, pmean, np.nan)
        X[:, COL["pers_max"]] = np.where(n_eff > 0, np.where(emask, P, -np.inf).max(axis=1), np.nan)
        X[:, COL["pers_first"]] = np.where(n_eff > 0, P[:, 0], np.nan)
        X[:, COL["pers_rel"]] = X[:, COL["pers_mean"]] - (np.nanmax(X[:, COL["pers_mean"]]) if np.any(n_eff > 0) else 0.0)
    else:
        X[:, COL["pers_mean"] : COL["pers_rel"] + 1] = np.nan
    if user.value is not None:
        val = np.where(emask, user.value[effc], 0.0)
        disc = 1.0 / np.log2(np.arange(cols) + 2.0)
        X[:, COL["value_disc"]] = val @ disc
        X[:, COL["value_viewport"]] = val[:, :VIEWPORT_COLS] @ disc[:VIEWPORT_COLS]
        X[:, COL["value_count"]] = (val > 0).sum(axis=1)
    else:
        X[:, COL["value_disc"] : COL["value_count"] + 1] = np.nan
    X[:, COL["pop_mean"]] = np.where(emask, stats.popularity[effc], 0.0).sum(axis=1) / denom
    X[:, COL["trend_mean"]] = np.where(emask, stats.trend[effc], 0.0).sum(axis=1) / denom
    X[:, COL["fresh_mean"]] = np.where(emask, stats.freshness[effc], 0.0).sum(axis=1) / denom

    G = stats.genre_unit[effc] * emask[:, :, None]  # (k, C, n_genres)
    prof = G.sum(axis=1) / denom[:, None]
    pn = np.linalg.norm(prof, axis=1)
    pnorm = np.divide(prof, pn[:, None], out=np.zeros_like(prof), where=pn[:, None] > 0)
    gpage = np.linalg.norm(page.page_genre)
    X[:, COL["genre_sim_page"]] = pnorm @ (page.page_genre / gpage) if gpage > 0 else 0.0
    if page.placed_profiles:
        above = np.stack(page.placed_profiles)
        an = np.linalg.norm(above, axis=1, keepdims=True)
        above = np.divide(above, an, out=np.zeros_like(above), where=an > 0)
        X[:, COL["genre_sim_max_above"]] = (pnorm @ above.T).max(axis=1)
    else:
        X[:, COL["genre_sim_max_above"]] = 0.0
    X[:, COL["new_genres"]] = ((prof > 0) & ~page.viewport_genres).sum(axis=1)
    X[:, COL["same_ranker_above"]] = page.ranker_count[cm.ranker[remaining]]
    X[:, COL["same_kind_above"]] = page.kind_count[cm.kind[remaining]]
    X[:, COL["stage"]] = stage
    X[:, COL["hist_len_log"]] = np.log1p(user.history_len)
    X[:, COL["days_since_last"]] = user.days_since_last
    X[:, COL["device"]] = user.device if user.device >= 0 else np.nan
    X[:, COL["hour"]] = user.hour if user.hour >= 0 else np.nan
    return StageView(remaining, eff, n_eff, prof, X)
