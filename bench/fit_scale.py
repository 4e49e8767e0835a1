"""Time and peak memory of fitting the rankers on a big world (target: 25M events in < 5 min, < 8 GB).

Input is a dataset directory (e.g. from ``homepage generate --users 200000 --titles 20000
--events 25000000``) or, by default, a random event table generated here in seconds:
Zipf-like popularity mixed with 20 taste clusters, 70% plays with progress, 30% ratings.

    python bench/fit_scale.py                                   # 200k users x 20k titles x 25M events
    python bench/fit_scale.py --events 2500000 --users 20000    # a tenth
    python bench/fit_scale.py --dataset /tmp/world-scale        # a generated world

Prints per-step wall and CPU seconds and peak RSS. It fits the four built-in rankers by
default; ``--rankers`` takes any registered names (e.g. add ``personalized``).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.eventlog import EventLog
from rankers.base import FitInput
from rankers.registry import ranker_class

DAY = 86_400
T0 = 1_700_000_000


def peak_rss_gb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def random_world(n_users: int, n_titles: int, n_events: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(titles, users, events) with skewed popularity and taste clusters, vectorised."""
    rng = np.random.default_rng(seed)
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation", "Crime", "Family"])
    title_ids = np.arange(1, n_titles + 1, dtype=np.int64)
    g = rng.integers(0, genres.size, (n_titles, 2))
    titles = pd.DataFrame(
        {
            "title_id": title_ids,
            "name": [f"Title {i}" for i in title_ids],
            "year": rng.integers(1950, 2027, n_titles).astype(np.int32),
            "genres": [sorted({genres[a], genres[b]}) for a, b in g],
            "cast": [[f"actor{a}", f"actor{b}"] for a, b in rng.integers(0, n_titles // 3, (n_titles, 2))],
            "director": [[f"director{a}"] for a in rng.integers(0, n_titles // 5, n_titles)],
            "tags": [[f"tag{a}"] for a in rng.integers(0, 500, n_titles)],
        }
    )
    users = pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64), "region": rng.choice(["US", "EU", "LATAM", "APAC"], n_users)})
    # events per user: heavy-tailed activity
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(1, np.round(activity / activity.sum() * n_events)).astype(np.int64)
    user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)[:n_events]
    n = user.size
    cdf = np.cumsum(1.0 / np.arange(1, n_titles + 1) ** 0.9)
    rank = np.searchsorted(cdf, rng.random(n) * cdf[-1])
    clusters = np.stack([rng.permutation(n_titles) for _ in range(20)])
    cluster = (user * 7919) % 20
    own = rng.random(n) < 0.6
    title = np.where(own, clusters[cluster, rank], clusters[0, rank])
    kind = (rng.random(n) < 0.3).astype(np.int8)  # 0 play, 1 rating
    events = pd.DataFrame(
        {
            "user_id": user,
            "title_id": title_ids[title],
            "kind": kind,
            "ts": np.sort(rng.integers(T0, T0 + 365 * DAY, n)),
            "progress": np.where(kind == 0, rng.random(n).astype(np.float32), np.float32(np.nan)),
            "stars": np.where(kind == 1, rng.integers(1, 11, n) / np.float32(2), np.float32(np.nan)).astype(np.float32),
        }
    )
    return titles, users, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=None, help="a dataset directory instead of the random world")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--titles", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=25_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rankers", default="top_n,trending,continue_watching,video_to_video")
    args = ap.parse_args()

    t0, c0 = time.perf_counter(), cpu_s()

    def step(label: str, since: tuple[float, float]) -> tuple[float, float]:
        now = (time.perf_counter(), cpu_s())
        print(f"{label:<28} wall {now[0] - since[0]:7.1f} s   cpu {now[1] - since[1]:7.1f} s   peak RSS {peak_rss_gb():5.2f} GB", flush=True)
        return now

    mark = (t0, c0)
    if args.dataset is not None:
        from homepage.dataset import load_dataset

        ds = load_dataset(args.dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
        titles, users, events, variants = ds.titles, ds.users, ds.events, ds.variants
        mark = step(f"load {args.dataset.name}", mark)
    else:
        titles, users, events = random_world(args.users, args.titles, args.events, args.seed)
        variants = None
        mark = step("generate random world", mark)
    print(f"  {len(events):,} events, {len(titles):,} titles, {len(users):,} users", flush=True)
    catalog = Catalog.from_frames(titles, variants)
    log = EventLog.from_frame(events, catalog, users)
    del events
    until = log.quantile_time(0.8)
    world = log.global_state(until, 7 * DAY)
    data = FitInput(log=log, catalog=catalog, until=until, world=world)
    mark = step("catalog + event log + state", mark)
    fit_start = mark
    for name in args.rankers.split(","):
        ranker_class(name)().fit(data)
        mark = step(f"fit {name}", mark)
    total = step("all rankers", fit_start)
    print(f"total fit wall {total[0] - fit_start[0]:.1f} s (target < 300 s), peak RSS {peak_rss_gb():.2f} GB (target < 8 GB)")


if __name__ == "__main__":
    main()
