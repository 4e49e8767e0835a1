"""Publish time, Redis memory and ``read_user_state`` latency on ml-latest-small.

Builds a dataset from ../shared/data/movielens-latest-small (ratings.csv + movies.csv)
in a temporary dir, publishes it to a fresh embedded Redis (or ``--url``), and times
``read_user_state`` against a bare GET of a key holding the same bytes (the baseline,
measured in the same run). Prints medians; no assertions.

    python bench/store_publish_read.py [--url redis://127.0.0.1:6379/9] [--reads 3000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.dataset import load_dataset, write_dataset
from homepage.embedded_redis import EmbeddedRedis
from homepage.eventlog import EventLog
from homepage.settings import Settings
from homepage.store import RedisStore
from shared_data import shared_dataset



def build_mlsmall(out: Path) -> Path:
    """ml-latest-small as a dataset: every rating is a rating event."""
    ml = shared_dataset("movielens-latest-small", script="bench/store_publish_read.py")
    r = pd.read_csv(ml / "ratings.csv")
    m = pd.read_csv(ml / "movies.csv")
    events = pd.DataFrame(
        {"user_id": r.userId, "title_id": r.movieId, "kind": np.int8(1), "ts": r.timestamp, "stars": r.rating}
    )
    titles = pd.DataFrame(
        {
            "title_id": m.movieId,
            "name": m.title,
            "genres": [[] if g == "(no genres listed)" else g.split("|") for g in m.genres],
        }
    )
    users = pd.DataFrame({"user_id": np.unique(r.userId), "region": None, "created": 0})
    write_dataset(out, source="movielens-latest-small", events=events, titles=titles, users=users)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e6, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None, help="Redis URL; default: a fresh embedded Redis")
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3, help="publishes to time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpb") as tmp:
        ds_path = build_mlsmall(Path(tmp) / "mlsmall")
        emb = None
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        if args.url:
            store = RedisStore.from_url(args.url, prefix, settings=Settings(redis_url=args.url, key_prefix=prefix))
        else:
            emb = EmbeddedRedis(Path(tmp) / "redis")
            store = RedisStore.from_socket(emb.start(), prefix, settings=Settings(key_prefix=prefix))
        try:
            ds = load_dataset(ds_path)
            catalog = Catalog.from_frames(ds.titles, ds.variants)
            log = EventLog.from_frame(ds.events, catalog, ds.users)
            t = int(ds.events.ts.max())
            world = log.global_state(t, 7 * 86_400.0)
            mem0 = int(store.client.info("memory")["used_memory"])
            secs = []
            for i in range(args.repeats):
                t0 = time.perf_counter()
                store.publish(f"v{i}", log, catalog, ds.users, world)
                secs.append(time.perf_counter() - t0)
                if i == 0:
                    mem1 = int(store.client.info("memory")["used_memory"])
                    version_bytes = store.memory_bytes("v0")
            print(f"dataset: {len(ds.events)} events, {len(log.user_ids)} users, {len(catalog)} titles")
            print(f"publish (store.publish, state already built): median {statistics.median(secs):.2f}s of {secs}")
            print(f"redis used_memory delta for one version: {(mem1 - mem0) / 2**20:.1f} MiB;"
                  f" MEMORY USAGE sum over its keys: {version_bytes / 2**20:.1f} MiB")

            rng = np.random.default_rng(0)
            users = rng.choice(log.user_ids, size=args.reads)
            raw = {int(u): store.client.get(store.keys.hist("v0", int(u))) for u in np.unique(users)}
            for u, b in raw.items():
                store.client.set(f"{prefix}:baseline:{u}", b)
            sizes = [len(raw[int(u)]) for u in users]
            for u in users[:200]:  # warm up both paths
                store.read_user_state(int(u), t, catalog, version="v0")
                store.client.get(f"{prefix}:baseline:{int(u)}")
            lat_state, lat_get = [], []
            for u in users:  # interleaved, so both see the same machine load
                u = int(u)
                t0 = time.perf_counter()
                store.read_user_state(u, t, catalog, version="v0")
                t1 = time.perf_counter()
                store.client.get(f"{prefix}:baseline:{u}")
                t2 = time.perf_counter()
                lat_state.append(t1 - t0)
                lat_get.append(t2 - t1)
            print(f"history size per read: median {int(np.median(sizes))} B, max {max(sizes)} B")
            print(f"read_user_state: p50 {pct(lat_state, 50):.0f} us, p99 {pct(lat_state, 99):.0f} us")
            print(f"bare GET (same bytes): p50 {pct(lat_get, 50):.0f} us, p99 {pct(lat_get, 99):.0f} us")
            print(f"ratio read_user_state / GET: p50 {pct(lat_state, 50) / pct(lat_get, 50):.2f}x,"
                  f" p99 {pct(lat_state, 99) / pct(lat_get, 99):.2f}x")
        finally:
            keys = list(store.client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                store.client.unlink(*keys[i : i + 500])
            store.client.close()
            if emb is not None:
                emb.stop()


if __name__ == "__main__":
    main()
