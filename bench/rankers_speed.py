"""Request-time cost of the rankers: p50/p99 of ``rows()`` on ml-latest-small, and the
personalised fold-in plus scoring on a synthetic 60k-title catalog, against a bare
``np.argpartition`` over 60k scores measured in the same run.

    OPENBLAS_NUM_THREADS=1 python bench/rankers_speed.py [--dataset DIR] [--users 200]

Without ``--dataset`` it ingests ../shared/data/movielens-latest-small into a temp dir.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from homepage.catalog import Catalog  # noqa: E402
from homepage.config import PipelineConfig  # noqa: E402
from homepage.domain import RequestContext  # noqa: E402
from homepage.eventlog import EventLog  # noqa: E402
from homepage.state import UserState, frozen  # noqa: E402
from rankers.base import FitInput, RankRequest  # noqa: E402
from rankers.personalized import PersonalizedRanker  # noqa: E402
from rankers.registry import RankerNotFound, build_rankers  # noqa: E402
from shared_data import shared_dataset  # noqa: E402


def timed(fn: Callable[[], object], n: int) -> np.ndarray:
    """Milliseconds of ``n`` calls, after 20 warm-up calls."""
    for _ in range(min(20, n)):
        fn()
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t) * 1e3
    return out


def pct(ms: np.ndarray) -> str:
    return f"p50 {np.median(ms):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms"


def movielens_rankers(dataset: Path | None, ml_small: Path | None, n_users: int, seed: int) -> None:
    """p50/p99 of rows() per configured ranker for random users with history, ml-latest-small at the 0.8 split."""
    from homepage.dataset import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        if dataset is None:
            from homepage.ingest import ingest_movielens

            dataset = Path(tmp) / "mlsmall"
            assert ml_small is not None
            ingest_movielens(ml_small, dataset)
        ds = load_dataset(dataset)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    until = log.quantile_time(PipelineConfig().split_quantile)
    world = log.global_state(until)
    rng = np.random.default_rng(seed)
    users = [log.user_state(int(u), until) for u in rng.choice(log.user_ids, n_users)]
    reqs = [RankRequest(u, world, catalog, RequestContext(user_id=u.user_id, now=until)) for u in users]
    print(f"ml-latest-small: {len(catalog)} titles, {len(reqs)} random users ({sum(u.is_cold for u in users)} cold)")
    for spec in PipelineConfig().rankers:
        try:
            ranker = build_rankers([spec])[0]
        except RankerNotFound as e:
            print(f"  {spec.name:<18} skipped: {e}")
            continue
        ranker.fit(FitInput(log=log, catalog=catalog, until=until, world=world))
        it = iter(reqs * 10_000)
        ms = timed(lambda: ranker.rows(next(it)), 5 * len(reqs))
        print(f"  {spec.name:<18} rows(): {pct(ms)}")


def synthetic_personalized(n_titles: int, factors: int, neighbours: int, modelled: int, history: int, seed: int) -> None:
    """Fold-in + scoring and rows() of PersonalizedRanker on random 60k-title arrays vs a bare argpartition."""
    rng = np.random.default_rng(seed)
    r = PersonalizedRanker({"factors": factors, "neighbours": neighbours})
    src = np.sort(rng.choice(n_titles, modelled, replace=False))
    counts = np.zeros(n_titles, np.int64)
    counts[src] = neighbours
    indptr = np.concatenate(([0], np.cumsum(counts)))
    r.restore(
        {
            "item_factors": (rng.standard_normal((n_titles, factors)) * 0.1).astype(np.float32),
            "prior": rng.random(n_titles).astype(np.float32),
            "item_indptr": indptr,
            "item_indices": np.sort(rng.integers(0, n_titles, (modelled, neighbours)), axis=1).ravel().astype(np.int32),
            "item_data": rng.random(modelled * neighbours).astype(np.float32) * 0.05,
        }
    )
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary"]
    titles = pd.DataFrame(
        {
            "title_id": np.arange(n_titles),
            "name": [""] * n_titles,
            "year": 2000,
            "genres": [[genres[i % 8], genres[(i * 7 + 3) % 8]] for i in range(n_titles)],
        }
    )
    catalog = Catalog.from_frames(titles)

    def user(i: int) -> UserState:
        idx = np.concatenate([rng.choice(src, history // 2), rng.integers(0, n_titles, history - history // 2)])
        z = np.zeros(history, np.int64)
        return UserState(
            i, 1, None, frozen(idx.astype(np.int64)), frozen(idx.astype(np.int64)), frozen(np.arange(history, dtype=np.int64)),
            frozen(z.astype(np.int8)), frozen(np.full(history, np.nan, np.float32)), frozen(np.ones(history, np.float32)),
        )

    users = [user(i) for i in range(200)]
    world = None
    reqs = [RankRequest(u, world, catalog, RequestContext(user_id=u.user_id, now=2)) for u in users]  # type: ignore[arg-type]
    scores = rng.random(n_titles).astype(np.float32)
    n = 2000
    base = timed(lambda: np.argpartition(-scores, 50)[:50], n)
    it1, it2, it3 = iter(users * 100), iter(users * 100), iter(reqs * 100)
    fold = timed(lambda: r.user_vector(next(it1)), n)
    score = timed(lambda: r.score_titles(next(it2)), n)
    rows = timed(lambda: r.rows(next(it3)), n)
    b = np.median(base)
    print(
        f"synthetic {n_titles} titles, {factors} factors, {modelled} modelled titles x {neighbours} neighbours, "
        f"{history}-title histories:"
    )
    print(f"  baseline argpartition top-50 of {n_titles}: {pct(base)}")
    print(f"  fold-in only (user_vector):       {pct(fold)}  ratio {np.median(fold) / b:.1f}x")
    print(f"  fold-in + scoring (score_titles): {pct(score)}  ratio {np.median(score) / b:.1f}x")
    print(f"  rows() (top picks + 4 genre rows): {pct(rows)}  ratio {np.median(rows) / b:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--factors", type=int, default=PersonalizedRanker.Config().factors)
    ap.add_argument("--skip-movielens", action="store_true")
    args = ap.parse_args()
    ml_small = None
    if not args.skip_movielens and args.dataset is None:  # checked before the synthetic half's seconds
        why = "--dataset DIR takes an ingested dataset, --skip-movielens measures the synthetic catalog alone"
        ml_small = shared_dataset("movielens-latest-small", script="bench/rankers_speed.py", without=why)
    synthetic_personalized(60_000, args.factors, neighbours=200, modelled=6000, history=50, seed=0)
    if not args.skip_movielens:
        movielens_rankers(args.dataset, ml_small, args.users, seed=0)


if __name__ == "__main__":
    main()
