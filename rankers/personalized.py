"""Personalised rows: "Top picks for you", "More picks for you" and "<Genre> for you" from a blend of three scores.

score(user, title) = w_item * item-model score (an EASE item-item model, pruned to
``neighbours`` weights per title only when the item model would exceed ``item_model_budget``
weights in total, applied to the user's history, recency-weighted when ``history_half_life`` is set) + w_mf * implicit-ALS score (the user vector folded in from
the same history) + w_pop * a recency-weighted popularity prior; each part is scaled to a
maximum of 1 first. Nothing about a user is stored: both user-side parts are computed from
``RankRequest.user`` at request time, so one new play changes the page without retraining.
Default hyperparameters were chosen on validation splits inside the training period of
ml-latest-small (``homepage.evaluation.tuning.search_personalized``), never on the test period:
with lambda 1000 the defaults (weight_mf 0.15, weight_pop 2.0) are second of 25 blends on
validation NDCG@20 (0.2218 vs the best 0.2226), inside one standard error of the best. A recency
decay of the history (half-life 25 interactions) raised validation NDCG@20 on ml-latest-small
from 0.223 to 0.250 and from 0.194 to 0.208 at two training cut-offs (2016-03, 2013-08), and
test NDCG@20 from 0.230 to 0.234; but the replayed pages did not gain (stage-wise ndcg_2d
0.182 vs 0.184, single-list 0.191 vs 0.188) and on the synthetic world it cost 0.006 NDCG@20
and 0.01 ndcg_2d, so it stays off by default (``history_half_life``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from homepage.catalog import Catalog
from homepage.domain import CandidateRow, RowReason
from homepage.state import UserState
from rankers.base import FitInput, Ranker, RankerConfig, RankRequest, StateNeed, safe_id
from rankers.factorization import (
    FoldIn,
    dense_scores,
    fit_als,
    fit_ease,
    interaction_matrix,
    prune_rows,
    sparse_scores,
)
from rankers.similarity import mean_of, top_k

DENSE_ITEM_MODEL_BYTES = 16 << 20  # a dense copy of the item model up to 2,048 titles
DENSE_MIN_FILL = 0.1

PLURALS = {
    "Comedy": "Comedies",
    "Drama": "Dramas",
    "Thriller": "Thrillers",
    "Documentary": "Documentaries",
    "Western": "Westerns",
    "Musical": "Musicals",
    "Mystery": "Mysteries",
    "Romance": "Romances",
    "Animation": "Animated films",
    "Children": "Family films",
    "Film-Noir": "Film noir",
    "IMAX": "IMAX films",
}


def genre_row_title(genre: str) -> str:
    """ "Comedies for you", "Horror films for you"."""
    return f"{PLURALS.get(genre, genre + ' films')} for you"


def popular_genre_row_title(genre: str) -> str:
    """ "Popular comedies", "Popular horror films": a genre row not chosen from anything the user did or said."""
    plural = PLURALS.get(genre, genre + " films")
    return f"Popular {plural if genre.isupper() else plural.lower()}"


class PersonalizedConfig(RankerConfig):
    """Hyperparameters of the blend; defaults tuned on a validation split of ml-latest-small's training period."""

    max_rows: int = Field(default=5, ge=0, le=100, description="top picks, then the more_picks rows, then genre rows, up to this many in all")
    more_picks: int = Field(
        default=0, ge=0, le=20, description="extra rows continuing top picks (within max_rows, before the genre rows)"
    )
    exclude_seen: bool = Field(default=True, description="leave out titles the user already played or rated")
    factors: int = Field(default=32, ge=2, le=512)
    als_regularization: float = Field(default=1.0, ge=0.0)
    als_alpha: float = Field(default=2.0, gt=0.0)
    als_iterations: int = Field(default=15, ge=1, le=200)
    fit_threads: int = Field(default=2, ge=1, le=64, description="ALS threads at fit; the factors do not depend on it")
    ease_lambda: float = Field(default=1000.0, gt=0.0)
    ease_min_count: int = Field(default=2, ge=1, description="titles with fewer training users get no item model")
    ease_max_items: int = Field(default=6000, ge=1, le=30_000, description="most popular titles in the item model")
    neighbours: int = Field(default=200, ge=1, le=5000, description="item-model weights kept per title (at least)")
    item_model_budget: int = Field(
        default=1_000_000, ge=0, le=100_000_000,
        description="item-model weights kept in total: a small item model keeps up to budget/items per title, not pruned to neighbours",
    )
    keep_negative: bool = Field(default=True, description="keep negative item-model weights (by magnitude)")
    history_half_life: float = Field(default=0.0, ge=0.0, description="interactions (the most recent weighs 1); 0 = no recency decay")
    max_history: int = Field(default=500, ge=1, le=100_000, description="most recent distinct titles used")
    weight_item: float = Field(default=1.0, ge=0.0)
    weight_mf: float = Field(default=0.15, ge=0.0)
    weight_pop: float = Field(default=2.0, ge=0.0)
    popularity_half_life_days: float = Field(default=180.0, gt=0.0)
    genre_pool: int = Field(default=1000, ge=10, description="top titles filtered into genre rows")
    min_genre_titles: int = Field(default=10, ge=1, description="shortest genre row worth proposing")
    genre_min_stars: float = Field(
        default=0.0, ge=0.0,
        description="a title the user last rated below this adds nothing to their genre rows' genres (0, the default: every title counts; 3 cost ndcg_2d on ml-latest-small, see the README)",
    )
    favourite_genres: bool = Field(
        default=True,
        description="rows of the genres a user stated (profile) where their history gives none: every row of a user without history, the spare genre rows of one with little",
    )
    popular_genres: bool = Field(
        default=True,
        description="a user without history who stated no favourite genres gets rows of the most popular genres (popular titles in each)",
    )
    popular_beside_stated: bool = Field(
        default=True,
        description=(
            "a user without history who stated favourite genres also gets the popular-genre rows of other genres, after theirs,"
            " and the page builder scores their titles by the stated genres (stated_genre_scores)"
        ),
    )
    seed: int = 0


class PersonalizedRanker(Ranker):
    """Implicit MF with request-time fold-in, blended with a pruned item model and a popularity prior."""

    name = "personalized"
    Config = PersonalizedConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.PROFILE})
    artifact_version = 1
    # bundles from before each feature serve as measured
    old_artifact_config: ClassVar[dict[str, Any]] = {
        "favourite_genres": False, "popular_genres": False, "genre_min_stars": 0.0, "popular_beside_stated": False,
    }
    config: PersonalizedConfig

    # ------------------------------------------------------------------ fit
    def fit(self, data: FitInput) -> Self:
        """Fit ALS and the item model on interactions with ts <= until; the popularity prior as of until."""
        super().fit(data)
        c = self.config
        user_pos, title_idx, ts, _ = data.log.interactions(data.until)
        n_titles = len(data.catalog)
        # one row per user with a play by until: users who come later must not change the fit (ALS's random start)
        _, user_row = np.unique(user_pos, return_inverse=True)
        x = interaction_matrix(user_row, title_idx, int(user_row.max(initial=-1)) + 1, n_titles)
        self.item_factors_ = fit_als(
            x, factors=c.factors, regularization=c.als_regularization, alpha=c.als_alpha,
            iterations=c.als_iterations, seed=c.seed, threads=c.fit_threads,
        )
        items, b = fit_ease(x, c.ease_lambda, min_count=c.ease_min_count, max_items=c.ease_max_items)
        self.item_model_ = prune_rows(b, items, n_titles, self.kept_per_title(items.size), keep_negative=c.keep_negative)
        # a user counts once per title, at their earliest event of it (as the world counters): one account's flood is one viewer
        first = data.log.firsts(data.until)
        age_days = (int(data.until) - ts[first]).astype(np.float64) / 86_400.0
        pop = np.log1p(np.bincount(title_idx[first], weights=np.exp2(-age_days / c.popularity_half_life_days), minlength=n_titles))
        self.prior_ = (pop / max(pop.max(initial=0.0), 1e-12)).astype(np.float32)
        self.genre_stars_ = data.stars_on_scale(c.genre_min_stars)
        self._reset_caches()
        return self

    def _reset_caches(self) -> None:
        self._fold = None
        self._prior_top: tuple[tuple[int, int], np.ndarray, list[int]] | None = None  # new users' pool and genres
        self._memo: tuple[UserState, np.ndarray] | None = None
        if hasattr(self, "_dense"):
            del self._dense

    def kept_per_title(self, n_items: int) -> int:
        """Item-model weights kept per title: ``neighbours``, or more while the total stays in budget.

        Pruning exists for scale (artifact size, request time on 60k catalogs); on a small item
        model (1,000 titles) it would throw away most of EASE's weights for no saving.
        """
        c = self.config
        return max(c.neighbours, c.item_model_budget // max(n_items, 1))

    @property
    def n_titles(self) -> int:
        return int(self.prior_.shape[0])

    @property
    def fold_(self) -> FoldIn:
        if getattr(self, "_fold", None) is None:
            self._fold = FoldIn.of(self.item_factors_, self.config.als_regularization, self.config.als_alpha)
        return self._fold

    # ------------------------------------------------------------------ scoring
    def history(self, user: UserState) -> tuple[np.ndarray, np.ndarray]:
        """(distinct title indices, recency weights in (0, 1]) of the user's most recent titles."""
        known = user.known_titles  # most recent first
        known = known[known < self.n_titles][: self.config.max_history]
        hl = self.config.history_half_life
        w = np.ones(known.size) if hl <= 0 else np.exp2(-np.arange(known.size) / hl)
        return known, w

    def user_vector(self, user: UserState) -> np.ndarray:
        """The user's ALS vector folded in from their current history: (factors,) float32."""
        items, w = self.history(user)
        return self.fold_.user_vector(items, w)

    def score_titles(self, user: UserState) -> np.ndarray:
        """One blended score per catalog title index (float32, a fresh array), nothing excluded.

        A request asks twice for the same user (the page builder's user signals, then
        ``rows``): the last user's scores are kept and copied, not recomputed. The user
        state is immutable, so the same object means the same scores.
        """
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] is user:
            return memo[1].copy()
        s = self._score_titles(user)
        self._memo = (user, s)  # one tuple assignment: safe with concurrent requests
        return s.copy()

    def stated_genre_scores(self, user: UserState, catalog: Catalog) -> np.ndarray | None:
        """A user without history, scored by what they said: the popularity prior, plus the item model's top weight for titles of a stated genre.

        The page builder's personal features of such a user were missing, so its model could not
        tell their stated-genre rows from the popular-genre rows beside them, and put the popular
        ones first (``bench/favourite_genres.py --switch popular_beside_stated``). None when the
        switch is off or no stated genre is in the catalog.
        """
        c = self.config
        stated = favourite_genre_indices(catalog, user.favourite_genres) if c.favourite_genres and c.popular_beside_stated else []
        if not stated:
            return None
        s = np.multiply(self.prior_, np.float32(c.weight_pop))
        n = min(s.size, len(catalog))
        s[:n] += np.float32(c.weight_item) * catalog.genre_matrix[:n][:, stated].any(axis=1)
        return s

    def _score_titles(self, user: UserState) -> np.ndarray:
        c = self.config
        items, w = self.history(user)
        s = np.multiply(self.prior_, np.float32(c.weight_pop))
        if items.size == 0:
            return s
        if c.weight_item > 0:
            dense = self._dense_item_model()
            si = sparse_scores(self.item_model_, items, w, self.n_titles) if dense is None else dense_scores(dense, items, w)
            nz = np.flatnonzero(si)  # the item model touches few titles: add only those
            top = float(si.max(initial=0.0)) if nz.size else 0.0
            if top > 0:
                s[nz] += (si[nz] * (c.weight_item / top)).astype(np.float32)
        if c.weight_mf > 0:
            sm = self.item_factors_ @ self.fold_.user_vector(items, w)
            top = max(float(sm.max(initial=0.0)), -float(sm.min(initial=0.0)))
            if top > 0:
                sm *= np.float32(c.weight_mf / top)
                s += sm
        return s

    def _dense_item_model(self) -> np.ndarray | None:
        """The item model as a dense array when it is small and mostly full (a 1,000-title world keeps all of EASE).

        Summing whole rows then costs a fifth of the sparse gather, with the same additions
        in the same order (bitwise-identical scores).
        """
        if not hasattr(self, "_dense"):
            m = self.item_model_
            n = m.shape[0]
            small = n * n * 4 <= DENSE_ITEM_MODEL_BYTES and m.nnz >= DENSE_MIN_FILL * n * n
            self._dense = np.ascontiguousarray(m.toarray(), dtype=np.float32) if small and n else None
        return self._dense

    # ------------------------------------------------------------------ rows
    def rows(self, request: RankRequest) -> list[CandidateRow]:
        """Top picks, then the user's top genres filtered from the same scores (then stated favourites).

        A user without history gets rows of popular titles in their stated favourite genres,
        or else in the most popular genres (``_new_user_rows``).
        """
        c = self.config
        user = request.user
        items, w = self.history(user)
        if c.max_rows == 0:
            return []
        if items.size == 0:
            return self._new_user_rows(request)
        scores = self.score_titles(user)
        n = min(self.n_titles, len(request.catalog))
        scores = scores[:n]
        if c.exclude_seen:  # every title the user met, not only the max_history most recent that score
            seen = user.known_titles
            scores[seen[seen < n]] = -np.inf
        pool = _top(scores, min(max(c.genre_pool, c.row_length), n))
        out = [self._row(request.catalog, "top_picks", "Top picks for you", pool[: c.row_length], scores, RowReason(kind="top_picks"))]
        # "More picks" j is the list from its top to row_length past the j rows of this page's width
        # above it: wherever the page places it, removing what is already shown leaves the best titles
        # of the list not shown yet (fixed slices of ranks would show ranks 21-30 above 11-20)
        cols = max(int(request.context.cols), 1)
        for j in range(1, min(c.more_picks, c.max_rows - 1) + 1):
            more = pool[: j * cols + c.row_length]
            if more.size > j * cols:
                out.append(self._row(request.catalog, f"more_picks:{j}", "More picks for you", more, scores, RowReason(kind="top_picks")))
        liked = w * ~np.isin(items, self.rated_down(user)) if self.genre_stars_ > 0 else w  # rated low: none of its genres "for you"
        history = self._top_genres(request.catalog, items[items < n], liked[items < n], c.max_rows - len(out))
        # the genre the user leans to most is theirs even when niche (five documentaries rated 5: nine
        # documentaries among ml-latest-small's 1,000 best for them, so no row): filled from the whole catalog,
        # as a stated genre is; a weaker genre too rare in the pool still leaves its slot to the next
        out += self._genre_rows(request.catalog, pool, scores, history[:1], c.max_rows - len(out), beyond_pool=True)
        out += self._genre_rows(request.catalog, pool, scores, history[1:], c.max_rows - len(out))
        if c.favourite_genres:  # slots the history leaves free go to the genres the user said they like
            made = {row.reason.genre for row in out}  # a history genre too short for a row still counts as stated
            stated = [g for g in favourite_genre_indices(request.catalog, user.favourite_genres) if request.catalog.genres[g] not in made]
            out += self._genre_rows(request.catalog, pool, scores, stated, c.max_rows - len(out), beyond_pool=True)
        return out

    def rated_down(self, user: UserState) -> np.ndarray:
        """Catalog indices the user last rated below ``genre_min_stars`` (on the data's scale; none when it is 0)."""
        idx, stars = user.latest_stars
        return idx[stars < self.genre_stars_]

    def _new_user_rows(self, request: RankRequest) -> list[CandidateRow]:
        """For a user without history: per stated favourite genre, then per popular genre, its most popular titles.

        Without the popular genres a first page held only the top-N and trending rows (two to
        four where ten were asked for, one on MovieLens), fewer than the fallback page served
        during an outage; and until ``popular_beside_stated`` so did the page of a user who
        stated one genre (three rows).
        """
        c, catalog = self.config, request.catalog
        n = min(self.n_titles, len(catalog))
        k = min(max(c.genre_pool, c.row_length), n)
        if self._prior_top is None or self._prior_top[0] != (n, k):  # the same for every such user
            pool = _top(self.prior_[:n], k)
            self._prior_top = ((n, k), pool, self._popular_genres(catalog, pool))
        _, pool, popular = self._prior_top
        stated = favourite_genre_indices(catalog, request.user.favourite_genres) if c.favourite_genres else []
        out = self._genre_rows(catalog, pool, self.prior_[:n], stated, c.max_rows, beyond_pool=True)
        if stated and not c.popular_beside_stated:
            return out
        if c.popular_genres:
            rest = [g for g in popular if g not in stated]
            out += self._genre_rows(catalog, pool, self.prior_[:n], rest, c.max_rows - len(out), title=popular_genre_row_title)
        return out

    def _popular_genres(self, catalog: Catalog, pool: np.ndarray) -> list[int]:
        """Genre indices by the popularity prior summed over ``pool``'s titles, most popular first."""
        if catalog.genre_matrix.shape[1] == 0 or pool.size == 0:
            return []
        mass = self.prior_[pool].astype(np.float64) @ catalog.genre_matrix[pool]
        order = np.lexsort((np.arange(mass.size), -mass))
        return [int(g) for g in order if mass[g] > 0]

    def _genre_rows(
        self, catalog: Catalog, pool: np.ndarray, scores: np.ndarray, genres: list[int], limit: int,
        title: Callable[[str], str] = genre_row_title, beyond_pool: bool = False,
    ) -> list[CandidateRow]:
        """Up to ``limit`` "<Genre> for you" rows: ``pool`` (best first) filtered by each genre in turn, long enough ones only.

        ``beyond_pool`` (genres the user stated, and the one their history leans to most): a genre
        the pool holds too few titles of is filled from the whole catalog by the same scores, so a
        stated favourite of a niche genre (Film-Noir: 7 of ml-latest-small's 1,000 most popular
        titles) still gets its row.
        """
        c = self.config
        out: list[CandidateRow] = []
        if limit <= 0 or not genres:
            return out
        in_genres = catalog.genre_matrix[pool][:, genres].T  # one gather for all rows
        shortest = min(c.min_genre_titles, c.row_length)
        for j, g in enumerate(genres):
            in_genre = pool[in_genres[j]][: c.row_length]
            if in_genre.size < shortest and beyond_pool:
                in_genre = _top(np.where(catalog.genre_matrix[: scores.size, g], scores, -np.inf), c.row_length)
            if in_genre.size >= shortest:
                genre = catalog.genres[g]
                out.append(self._row(catalog, f"genre:{safe_id(genre)}", title(genre), in_genre, scores, RowReason(kind="genre", genre=genre)))
                if len(out) == limit:
                    break
        return out

    def _row(
        self, catalog: Catalog, key: str, title: str, idx: np.ndarray, scores: np.ndarray, reason: RowReason
    ) -> CandidateRow:
        s = scores[idx]
        return CandidateRow(
            row_id=f"{self.name}:{key}",
            ranker=self.name,
            display_title=title,
            title_ids=catalog.title_ids[idx].astype(np.int64),
            scores=s.astype(np.float32),
            reason=reason,
            row_score=mean_of(s[:10]) if s.size else 0.0,
        )

    @staticmethod
    def _top_genres(catalog: Catalog, items: np.ndarray, w: np.ndarray, k: int) -> list[int]:
        """Genre indices the user's recency-weighted history leans to most, strongest first."""
        if k <= 0 or catalog.genre_matrix.shape[1] == 0 or items.size == 0:
            return []
        aff = w @ catalog.genre_matrix[items]
        order = np.lexsort((np.arange(aff.size), -aff))
        return [int(g) for g in order[:k] if aff[g] > 0]

    # ------------------------------------------------------------------ artifact
    def arrays(self) -> dict[str, np.ndarray]:
        m = self.item_model_
        return {
            "item_factors": self.item_factors_,
            "prior": self.prior_,
            "item_indptr": m.indptr.astype(np.int64),
            "item_indices": m.indices.astype(np.int32),
            "item_data": m.data.astype(np.float32),
            "genre_stars": np.array([self.genre_stars_], np.float64),
        }

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], np.float32)
        self.prior_ = np.asarray(arrays["prior"], np.float32)
        self.genre_stars_ = float(arrays["genre_stars"][0]) if "genre_stars" in arrays else self.config.genre_min_stars
        n = self.prior_.shape[0]
        self.item_model_ = sp.csr_matrix(
            (arrays["item_data"], arrays["item_indices"], arrays["item_indptr"]), shape=(n, n)
        )
        self._reset_caches()


def favourite_genre_indices(catalog: Catalog, favourites: tuple[str, ...]) -> list[int]:
    """The catalog's genre indices of a user's stated favourites, in the user's order (unknown ones skipped)."""
    if not favourites:
        return []
    index = catalog.genre_index
    return list(dict.fromkeys(index[g] for g in favourites if g in index))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first; ties broken by index, at the cut too (``top_k``)."""
    return top_k(scores, k)[0]
