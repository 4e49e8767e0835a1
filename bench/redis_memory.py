"""Redis memory per user: publish synthetic worlds into a Redis db under a private prefix, measure, clean up.

For each world it publishes the state (as ``homepage publish`` does, without a model
bundle: the bundle is a per-version cost that grows with the catalog, not the users),
reads ``INFO memory`` before and after, and samples ``MEMORY USAGE`` per key family
(user history, user profile, world counters, ...), and times one API node's
world-state refresh (``read_global_state``: client CPU, Redis time, wall). With two or more worlds of the same
events-per-user it fits ``memory = fixed + per_user x users`` and prints the figure per
million users. Every key it wrote is deleted afterwards, pass or fail. Usage::

    python bench/generate_scale.py --users 20000 --titles 20000 --events 2530000 --out /tmp/w20k --keep
    python bench/generate_scale.py --users 50000 --titles 20000 --events 6325000 --out /tmp/w50k --keep
    python bench/redis_memory.py /tmp/w20k /tmp/w50k --url redis://127.0.0.1:6379/11 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.publish import publish_dataset
from homepage.settings import Settings
from homepage.store import RedisStore

SAMPLE = 2000  # keys sampled per family for MEMORY USAGE


def family(key: str, prefix: str) -> str:
    """The key's family: ids and versions replaced, e.g. ``v:*:{u:*}:hist``."""
    rest = key[len(prefix) + 1 :]
    rest = re.sub(r"^v:[^:]+:", "v:*:", rest)
    return re.sub(r"\{u:\d+\}", "{u:*}", rest)


def used_memory(client: object) -> int:
    return int(client.info("memory")["used_memory"])  # type: ignore[attr-defined]


def hgetall_usec(client: object) -> float:
    """Server-side microseconds spent in HGETALL so far (INFO commandstats; the server is shared, so roughly)."""
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return float(stats.get("cmdstat_hgetall", {}).get("usec", 0))


def refresh_cost(client: object, store: RedisStore, catalog: Catalog, repeats: int = 5) -> dict[str, float]:
    """What one API node's world-state refresh costs (every ``HOMEPAGE_REFRESH_SECONDS``): client CPU, Redis time, wall."""
    now = int(time.time())
    cpu, wall, server = [], [], []
    for _ in range(repeats):
        s0, c0, w0 = hgetall_usec(client), time.process_time(), time.perf_counter()
        store.read_global_state(now, catalog)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        server.append((hgetall_usec(client) - s0) / 1e6)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"refresh_client_cpu_s": med(cpu), "refresh_wall_s": med(wall), "refresh_redis_s": med(server)}


def measure(client: object, world: Path, url: str) -> dict[str, object]:
    """Publish ``world`` under a fresh prefix; memory delta and per-family sizes; delete every key written."""
    prefix = f"sizing{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, settings=Settings(redis_url=url, key_prefix=prefix))
    ds = load_dataset(world)
    n_users, n_events, n_titles = len(ds.users), len(ds.events), len(ds.titles)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    del ds
    try:
        before = used_memory(client)
        t0 = time.perf_counter()
        result = publish_dataset(store, world)
        seconds = time.perf_counter() - t0
        after = used_memory(client)
        refresh = refresh_cost(client, store, catalog)
        keys: dict[str, list[str]] = defaultdict(list)
        for k in client.scan_iter(match=f"{prefix}:*", count=5000):  # type: ignore[attr-defined]
            k = k.decode()
            keys[family(k, prefix)].append(k)
        rng = random.Random(0)
        families = {}
        for fam, ks in sorted(keys.items()):
            sample = ks if len(ks) <= SAMPLE else rng.sample(ks, SAMPLE)
            sizes = [client.memory_usage(k, samples=0) or 0 for k in sample]  # type: ignore[attr-defined]
            mean = sum(sizes) / len(sizes)
            families[fam] = {"keys": len(ks), "mean_bytes": mean, "total_bytes": mean * len(ks)}
    finally:
        ks = list(client.scan_iter(match=f"{prefix}:*", count=5000))  # type: ignore[attr-defined]
        for i in range(0, len(ks), 1000):
            client.unlink(*ks[i : i + 1000])  # type: ignore[attr-defined]
    return {
        "world": str(world),
        "users": n_users,
        "events": n_events,
        "titles": n_titles,
        "users_written": result.users_written,
        "publish_seconds": seconds,
        "used_memory_delta": after - before,
        "families": families,
        **refresh,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("worlds", type=Path, nargs="+", help="dataset directories (synthetic worlds)")
    ap.add_argument("--url", default="redis://127.0.0.1:6379/11", help="Redis db to use (keys under a private prefix, deleted after)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    client = RedisStore.from_url(args.url).client
    rows = []
    for w in args.worlds:
        r = measure(client, w, args.url)
        rows.append(r)
        print(
            f"{w}: {r['users']} users, {r['events']} events, {r['titles']} titles -> used_memory +{r['used_memory_delta'] / 2**20:.1f} MiB "
            f"({r['used_memory_delta'] / r['users']:.0f} B/user), publish {r['publish_seconds']:.1f} s ({r['users'] / r['publish_seconds']:.0f} users/s)",
            flush=True,
        )
        print(
            f"    world-state refresh of one node: client CPU {r['refresh_client_cpu_s'] * 1000:.0f} ms, "
            f"Redis HGETALL {r['refresh_redis_s'] * 1000:.0f} ms, wall {r['refresh_wall_s'] * 1000:.0f} ms (medians of 5)"
        )
        for fam, f in r["families"].items():  # type: ignore[union-attr]
            print(f"    {fam:32s} {f['keys']:9d} keys  mean {f['mean_bytes']:9.1f} B  total {f['total_bytes'] / 2**20:8.1f} MiB")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per_user = (b["used_memory_delta"] - a["used_memory_delta"]) / (b["users"] - a["users"])
        fixed = a["used_memory_delta"] - per_user * a["users"]
        ev_per_user = b["events"] / b["users"]
        print(
            f"fit: {per_user:.0f} B per user ({ev_per_user:.0f} events/user) + {fixed / 2**20:.1f} MiB fixed "
            f"-> {per_user * 1e6 / 2**30:.2f} GiB per million users per published version"
        )
        rows.append({"fit": {"bytes_per_user": per_user, "fixed_bytes": fixed, "events_per_user": ev_per_user}})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
