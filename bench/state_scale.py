"""State as of t at scale: event-log build time, every user's state at one t, the global state.

    python bench/state_scale.py --dataset /tmp/world-scale   # e.g. from bench/generate_scale.py --keep
    python bench/state_scale.py --users 20000 --titles 5000  # generates a world under /tmp first

Prints wall times (median of repeats where cheap), peak RSS and the dataset's size on
disk, with a baseline measured in the same run: a bare numpy sort of the event times.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.eventlog import EventLog


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--titles", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = args.dataset
    if path is None:
        from fixtures.world import WorldParams, generate_world, write_world

        path = Path(f"/tmp/state-scale-{args.users}x{args.titles}")
        if not (path / "manifest.json").exists():
            write_world(generate_world(WorldParams(n_users=args.users, n_titles=args.titles, seed=args.seed)), path)

    t0 = time.perf_counter()
    ds = load_dataset(path, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    t_load = time.perf_counter() - t0
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    t0 = time.perf_counter()
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    t_build = time.perf_counter() - t0
    t = log.quantile_time(0.8)

    base = []
    ts = ds.events["ts"].to_numpy()
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        np.sort(ts, kind="stable")
        base.append(time.perf_counter() - t0)

    users_times, world_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        states = log.user_states(log.user_ids, t)
        users_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        log.global_state(t)
        world_times.append(time.perf_counter() - t0)
    visible = sum(len(s) for s in states)
    base_s = statistics.median(base)
    print(f"dataset           {path}  ({size_mb(path):.1f} MB on disk)")
    print(f"events            {len(ds.events):,}   users {log.user_ids.size:,}   titles {len(catalog):,}")
    print(f"load parquet      {t_load:8.2f} s")
    print(f"build event log   {t_build:8.2f} s   ({t_build / base_s:.1f}x a bare sort of the times, {base_s:.2f} s)")
    print(f"all users' state  {statistics.median(users_times):8.2f} s   (median of {args.repeats}; {visible:,} events visible at t)")
    print(f"global state      {statistics.median(world_times):8.3f} s")
    print(f"peak RSS          {peak_rss_mb():8.0f} MB")


if __name__ == "__main__":
    main()
