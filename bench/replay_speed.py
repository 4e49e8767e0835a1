"""Replay throughput: pages built and scored per second, with 1 and 2 worker processes.

    homepage ingest movielens ../shared/data/movielens-latest-small --out /tmp/mls
    homepage train /tmp/mls --out /tmp/mls-models
    python bench/replay_speed.py /tmp/mls /tmp/mls-models

The baseline, measured in the same run, is rebuilding each request's user and world state
without building any page: the floor every replay pays. Figures: pages per second (all
four policies), median milliseconds per page, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from homepage.bundle import load_bundle  # noqa: E402
from homepage.dataset import load_dataset  # noqa: E402
from homepage.eventlog import EventLog  # noqa: E402
from homepage.page import PageModels  # noqa: E402
from homepage.replay.protocol import ReplayProtocol, sample_requests  # noqa: E402
from homepage.replay.run import CheckpointedWorlds, replay  # noqa: E402

POLICIES = ["stage-wise", "row-ranking", "template", "single-list"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("models", type=Path)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    bundle = load_bundle(args.models)
    models = PageModels.from_bundle(bundle)
    ds = load_dataset(args.dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    proto = ReplayProtocol(split_time=bundle.until, max_requests=args.requests, requests_per_user=5)
    req = sample_requests(log, proto)
    policies = [p for p in POLICIES if p != "stage-wise" or models.page_model is not None]
    pages = len(req) * len(policies)

    base = []
    for _ in range(args.repeats):
        worlds = CheckpointedWorlds(log, bundle.config.half_life_seconds, proto.world_granularity)
        t0 = time.perf_counter()
        for u, t in zip(req.user_ids.tolist(), req.times.tolist()):
            log.user_state(u, t)
            worlds.at(t)
        base.append(time.perf_counter() - t0)
    base_s = statistics.median(base)
    print(f"{len(req)} requests x {len(policies)} policies = {pages} pages; load average {os.getloadavg()[0]:.1f}")
    print(f"baseline (state only): {len(req) / base_s:8.0f} requests/s")
    for workers in (1, 2):
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            replay(log, models, policies, req, proto, bundle.config.half_life_seconds, bundle.until, workers=workers)
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        print(
            f"workers={workers}: {pages / wall:7.1f} pages/s   {1000 * wall / pages * workers:6.2f} ms/page/core   "
            f"{wall / base_s:6.1f}x the state-only baseline"
        )


if __name__ == "__main__":
    main()
