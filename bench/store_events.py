"""``append_events`` latency and client CPU, against a floor of the same writes without the protocol.

Publishes the committed small world under a fresh prefix at ``--url`` (a server, or a cluster
with ``redis+cluster://host:port,...``), then appends batches of plays with idempotency keys
over random users. The floor, measured in the same run, sends each batch's history APPENDs,
stream XADDs and counter HINCRBYs as one plain pipeline (no idempotency, no atomicity).
Prints medians and the ratio; no assertions.

    python bench/store_events.py --url redis://127.0.0.1:6379/9 [--batch 100] [--batches 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

import numpy as np

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.domain import Event
from homepage.eventlog import EventLog
from homepage.store import RedisStore

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="redis://... or redis+cluster://host:port,...")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batches", type=int, default=60)
    a = ap.parse_args()
    ds = load_dataset(WORLD)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    t = int(ds.events["ts"].max())
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(a.url, prefix)
    try:
        store.publish("v1", log, catalog, ds.users, log.global_state(t, 7 * 86_400.0))
        rng = np.random.default_rng(0)
        users, titles = log.user_ids, catalog.title_ids
        walls: dict[str, list[float]] = {"append_events": [], "floor": []}
        cpus: dict[str, list[float]] = {"append_events": [], "floor": []}
        for r in range(a.batches):
            events = [
                Event(user_id=int(u), title_id=int(ti), kind="play", ts=t + r, progress=0.5)
                for u, ti in zip(rng.choice(users, a.batch), rng.choice(titles, a.batch))
            ]
            keys = [uuid.uuid4().hex for _ in events]
            for name in ("append_events", "floor"):
                w0, c0 = time.perf_counter(), time.process_time()
                if name == "append_events":
                    store.append_events(events, catalog, keys)
                else:
                    pipe = store.client.pipeline(transaction=False)
                    for e in events:
                        pipe.append(f"{prefix}:floor:{{u:{e.user_id}}}", b"x" * 29)
                        pipe.xadd(f"{prefix}:floor:events", {"e": e.model_dump_json()})
                        pipe.hincrby(f"{prefix}:floor:counts", str(e.title_id), 1)
                    pipe.execute()
                walls[name].append(time.perf_counter() - w0)
                cpus[name].append(time.process_time() - c0)
        w = {k: statistics.median(v) * 1e3 for k, v in walls.items()}
        c = {k: statistics.median(v) * 1e3 for k, v in cpus.items()}
        print(f"{a.url}: batches of {a.batch} events, median of {a.batches}")
        for k in walls:
            print(f"  {k:14s} wall p50 {w[k]:7.2f} ms   client CPU p50 {c[k]:6.2f} ms")
        print(f"  ratio append_events / floor: wall {w['append_events'] / w['floor']:.2f}x, CPU {c['append_events'] / c['floor']:.2f}x")
    finally:
        keys = list(store.client.scan_iter(match=f"{prefix}:*", count=1000))
        for k in keys:
            store.client.unlink(k)
        store.close()


if __name__ == "__main__":
    main()
