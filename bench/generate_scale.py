"""Time the synthetic world generator at scale: wall time, peak memory, events/s, size on disk.

Default is the full target (200k users x 20k titles x 25M events). Output goes under /tmp.

    python bench/generate_scale.py                       # full scale
    python bench/generate_scale.py --users 20000 --titles 5000 --events 2500000
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

from fixtures.world import WorldParams, generate_world, write_world


def _peak_rss_mb() -> float:
    """Peak resident set size of this process plus waited-for children, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def _cpu_s() -> float:
    """User + system CPU seconds of this process (the machine may be shared: wall time is not all ours)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--titles", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=25_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/world-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the dataset after measuring")
    args = ap.parse_args()
    params = WorldParams(n_users=args.users, n_titles=args.titles, n_events=args.events, seed=args.seed)

    step = max(1, args.users // 10)
    marks = iter(range(step, args.users + step, step))
    next_mark = [next(marks)]

    def progress(done: int, total: int) -> None:
        if done >= next_mark[0]:
            print(f"  {done}/{total} users after {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        while done >= next_mark[0]:
            next_mark[0] = next(marks, total + 1)

    t0 = time.perf_counter()
    world = generate_world(params, progress=progress)
    t1 = time.perf_counter()
    manifest = write_world(world, args.out)
    t2 = time.perf_counter()
    n_events = manifest.counts["events"]
    print(f"world      {args.users} users x {args.titles} titles, target {args.events} events, seed {args.seed}")
    print(f"events     {n_events}  kinds {manifest.kind_counts}  variants {manifest.counts['variants']}")
    print(f"generate   {t1 - t0:8.1f} s")
    print(f"write      {t2 - t1:8.1f} s")
    print(f"total      {t2 - t0:8.1f} s   ({n_events / (t2 - t0):,.0f} events/s end to end)")
    print(f"cpu        {_cpu_s():8.1f} s   (user + system of this process)")
    print(f"peak RSS   {_peak_rss_mb():8.0f} MB (self + children)")
    print(f"on disk    {_size_mb(args.out):8.1f} MB  ({args.out})")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
