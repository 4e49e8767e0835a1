"""The temporal ranker-evaluation protocol: our rankers and peer baselines on one train/test split.

Train on events with ts <= T. Test users have at least one event before and one after T;
their positives are the distinct titles they interacted with after T that they had not
seen by T. Every method gets the same train matrix and excludes the user's seen titles.
Hyperparameters of peers (EASE's lambda) are tuned on validation splits inside the
training period (train <= T_q, positives in (T_q, T], T_q the q-quantile of training
event times for q in 0.8 and 0.9), never on the test period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from homepage.catalog import Catalog
from homepage.domain import RequestContext
from homepage.errors import HomepageError
from homepage.evaluation.peers import EASE, Peer, default_peers
from homepage.evaluation.ranker_metrics import summarise
from homepage.eventlog import DAY, EventLog
from rankers.base import FitInput, Ranker, RankRequest, row_problem
from rankers.factorization import interaction_matrix

logger = logging.getLogger(__name__)

K_MAX = 50
KS = (10, 20, 50)
EASE_LAMBDAS = (50.0, 200.0, 500.0, 1000.0)
VALIDATION_QS = (0.8, 0.9)  # validation splits at these quantiles of training time
Progress = Callable[[str], None]
DEFAULT_HALF_LIFE = 7 * DAY  # seconds: the pipeline config's default trending half-life


@dataclass(frozen=True, eq=False)
class Split:
    """A train matrix over every user of the log, and the test users with their positives."""

    until: int
    train: sp.csr_matrix  # (n_users, n_titles) binary, events with ts <= until
    users: np.ndarray  # row numbers (user positions in the log) of test users
    positives: list[np.ndarray]  # title indices per test user
    popularity: np.ndarray  # training interactions per title

    @property
    def seen(self) -> sp.csr_matrix:
        return self.train[self.users]


def temporal_split(log: EventLog, until: int, *, end: int | None = None, min_stars: float | None = None) -> Split:
    """The split at ``until``; positives are taken from events in (until, end] (end = the log's end)."""
    user_pos, title_idx, ts, stars = log.interactions(end)
    n_users, n_titles = int(log.user_ids.size), log.n_titles
    tr = ts <= until
    train = interaction_matrix(user_pos[tr], title_idx[tr], n_users, n_titles)
    te = ~tr
    if min_stars is not None:
        te &= np.isnan(stars) | (stars >= min_stars)  # plays have no stars and always count
    test = interaction_matrix(user_pos[te], title_idx[te], n_users, n_titles)
    test = test - test.multiply(train)  # drop titles seen by ``until``
    test.eliminate_zeros()
    has_train = np.diff(train.indptr) > 0
    has_test = np.diff(test.indptr) > 0
    users = np.flatnonzero(has_train & has_test)
    positives = [test.indices[test.indptr[u] : test.indptr[u + 1]].astype(np.int64) for u in users]
    popularity = np.bincount(title_idx[tr], minlength=n_titles).astype(np.float64)
    return Split(int(until), train, users, positives, popularity)


def validation_time(log: EventLog, until: int, q: float = 0.9) -> int:
    """The q-quantile of training event times: the validation split inside the training period."""
    n = int(np.searchsorted(log.t_ts, until, side="right"))
    return int(np.quantile(log.t_ts[:n], q, method="lower"))


def peer_metrics(peer: Peer, split: Split) -> dict[str, float]:
    """Fit ``peer`` on the split's train matrix and score its top-50 lists."""
    peer.fit(split.train)
    ranked = peer.recommend(split.users, split.seen, K_MAX)
    return summarise(ranked, split.positives, split.popularity, KS)


class RankerFailed(Exception):
    """A ranker raised, or returned rows that break the contract, during evaluation."""


def ranked_lists(ranker: Ranker, log: EventLog, catalog: Catalog, split: Split, half_life: float = DEFAULT_HALF_LIFE) -> np.ndarray:
    """Each test user's rows merged into one list (row order, then position; no repeats, no seen titles).

    ``half_life`` (seconds) decays the world's trending counters, as the pipeline config's does in train and replay.
    """
    world = log.global_state(split.until, half_life)
    out = np.full((split.users.size, K_MAX), -1, np.int64)
    for i, u in enumerate(split.users):
        uid = int(log.user_ids[u])
        user = log.user_state(uid, split.until)
        req = RankRequest(user, world, catalog, RequestContext(user_id=uid, now=split.until))
        try:
            rows = ranker.rows(req)
        except Exception as e:  # a plug-in can fail in any way: say where, keep the other results
            raise RankerFailed(f"rows() raised {type(e).__name__}: {e} (user {uid})") from e
        if not isinstance(rows, (list, tuple)):  # the page builder skips such a ranker: so does its score
            raise RankerFailed(f"rows() returned a {type(rows).__name__}, not a list of CandidateRow (user {uid})")
        if not rows:
            continue
        for r in rows:
            problem = row_problem(r)
            if problem is not None:
                raise RankerFailed(f"rows() broke the row contract for user {uid}: {problem}")
        idx = catalog.index_of(np.concatenate([r.title_ids for r in rows], dtype=np.int64))  # uint64 ids too (as the page builder)
        _, first = np.unique(idx, return_index=True)
        idx = idx[np.sort(first)]
        seen = split.train.indices[split.train.indptr[u] : split.train.indptr[u + 1]]
        idx = idx[(idx >= 0) & ~np.isin(idx, seen)][:K_MAX]
        out[i, : idx.size] = idx
    return out


def ranker_metrics(ranker: Ranker, log: EventLog, catalog: Catalog, split: Split, half_life: float = DEFAULT_HALF_LIFE) -> dict[str, float]:
    """Fit ``ranker`` on events up to the split time and score its merged lists; ``RankerFailed`` if it raises."""
    try:
        ranker.fit(FitInput(log=log, catalog=catalog, until=split.until, world=log.global_state(split.until, half_life)))
    except Exception as e:
        raise RankerFailed(f"fit() raised {type(e).__name__}: {e}") from e
    return summarise(ranked_lists(ranker, log, catalog, split, half_life), split.positives, split.popularity, KS)


def tune_ease(
    log: EventLog, until: int, lambdas: Sequence[float] = EASE_LAMBDAS, qs: Sequence[float] = VALIDATION_QS
) -> tuple[float, dict[str, float]]:
    """EASE's lambda with the best user-weighted validation NDCG@20 over the splits at ``qs``.

    Returns (lambda, mean NDCG@20 by lambda). A single lambda is returned without fitting.
    """
    if len(lambdas) == 1:
        return float(lambdas[0]), {}
    sums = {str(lam): 0.0 for lam in lambdas}
    users = 0
    for q in qs:
        val = temporal_split(log, validation_time(log, until, q), end=until)
        users += int(val.users.size)
        for lam in lambdas:
            sums[str(lam)] += peer_metrics(EASE(lam=lam), val)["ndcg@20"] * val.users.size
    scores = {k: v / max(users, 1) for k, v in sums.items()}
    best = max(lambdas, key=lambda lam: (scores[str(lam)], -lam))
    return float(best), scores


def run_protocol(
    log: EventLog,
    catalog: Catalog,
    until: int,
    rankers: Sequence[tuple[str, Ranker | str]],
    *,
    peers: Sequence[Peer] | None = None,
    ease_lambdas: Sequence[float] = EASE_LAMBDAS,
    min_stars: float | None = None,
    tune_personalized: bool = False,
    half_life: float = DEFAULT_HALF_LIFE,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole comparison as the JSON-ready dict ``{"protocol", "rankers", "peers"}``.

    ``rankers`` pairs a name with an unfitted ranker, or with a string saying why it was skipped.
    A ranker that raises or breaks the row contract gets ``{"failed": why}``; the others still run.
    With ``tune_personalized`` the personalised ranker's blend weights (and EASE lambda, the
    one chosen for the EASE peer) are searched on the same validation splits first.
    """
    step = progress or (lambda _msg: None)
    split = temporal_split(log, until, min_stars=min_stars)
    if split.users.size == 0:
        stars = f"--min-stars {min_stars}: " if min_stars is not None else ""
        raise HomepageError(f"{stars}no user with history before {until} has a play or a rating{' of that many stars' if stars else ''} after it")
    tuning: dict[str, Any] = {}
    if peers is None:
        step("tuning EASE on the validation split")
        lam, by_lam = tune_ease(log, until, ease_lambdas)
        tuning["ease_lambda"] = {"chosen": lam, "validation_ndcg@20": by_lam, "validation_quantiles": list(VALIDATION_QS)}
        peers = default_peers(ease_lambda=lam)
    out_peers: dict[str, dict[str, float]] = {}
    for peer in peers:
        step(f"peer {peer.name}")
        out_peers[peer.name] = peer_metrics(peer, split) | {"params": peer.params()}  # type: ignore[operator]
    if tune_personalized:
        rankers = [(n, _tuned(r, log, catalog, until, tuning, step, half_life)) for n, r in rankers]
    out_rankers: dict[str, Any] = {}
    for name, ranker in rankers:
        if isinstance(ranker, str):
            out_rankers[name] = {"skipped": ranker}
            continue
        step(f"ranker {name}")
        try:
            out_rankers[name] = ranker_metrics(ranker, log, catalog, split, half_life)
        except RankerFailed as e:
            logger.error("ranker %s failed: %s", name, e, exc_info=e.__cause__)  # the plug-in's traceback, if it raised
            out_rankers[name] = {"failed": str(e)}
    protocol = {
        "split_time": int(until),
        "validation_times": [validation_time(log, until, q) for q in VALIDATION_QS],
        "train_interactions": int(split.train.nnz),
        "test_users": int(split.users.size),
        "positives": int(sum(p.size for p in split.positives)),
        "n_titles": int(catalog.title_ids.size),
        "ks": list(KS),
        "min_stars": min_stars,
        "positives_rule": "distinct titles interacted with after T, not seen by T",
        "exclude_seen": True,
        "tuning": tuning,
    }
    return {"protocol": protocol, "rankers": out_rankers, "peers": out_peers}


PERSONALIZED_SCORE_GRID = {"weight_pop": (0.0, 0.1, 0.3, 1.0, 2.0), "weight_mf": (0.0, 0.05, 0.15, 0.3, 0.5)}


def _tuned(
    ranker: Ranker | str, log: EventLog, catalog: Catalog, until: int, tuning: dict[str, Any], step: Progress, half_life: float
) -> Ranker | str:
    """The personalised ranker with its best validation settings; any other ranker unchanged."""
    from homepage.evaluation.tuning import search_personalized, simplest_within_one_se
    from rankers.personalized import PersonalizedRanker

    if not isinstance(ranker, PersonalizedRanker):
        return ranker
    lam = tuning.get("ease_lambda", {}).get("chosen", ranker.config.ease_lambda)
    base = ranker.config.model_dump()
    found = search_personalized(
        log, catalog, until, {"ease_lambda": [lam]}, PERSONALIZED_SCORE_GRID, base=base, progress=step, half_life=half_life
    )
    chosen = simplest_within_one_se(found)
    tuning["personalized"] = {
        "chosen": chosen.params,
        "rule": "simplest blend within one standard error of the best validation NDCG@20",
        "validation_ndcg@20": chosen.mean_ndcg,
        "validation_recall@20": chosen.mean_recall,
        "best": {"params": found[0].params, "validation_ndcg@20": found[0].mean_ndcg},
    }
    return PersonalizedRanker(ranker.config.model_copy(update=chosen.params))
