"""Serving benchmark: throughput and p50/p99 latency of the API on loopback, against a floor from the same run.

For 1 and 2 uvicorn workers it measures, with a closed-loop load generator (client
processes x keep-alive threads):

- ``floor``: ``GET /bench/floor/{u}``, a precomputed page of the same size read straight
  from Redis by the same app (one GET, no page building): the ceiling of the stack;
- ``homepage miss``: ``GET /homepage/{u}`` with cache reads off (the server still does the
  pipelined read, builds, caches and logs the page);
- ``homepage miss @50%``: the same at half the measured maximum, open loop, for p99;
- ``homepage hit``: ``GET /homepage/{u}`` with the page cache warm, against ``floor (hit
  server)``: the floor measured again on the same server process just before (the hit run
  needs a server with cache reads on; a floor from another process, minutes apart, made the
  ratio swing 62-89% between runs);
- ``events``: ``POST /events`` in batches of 100.

Each line also gives the server's CPU time per request (all its processes, from /proc):
on a shared machine throughput measures the neighbours too, CPU per request does not.

Targets on 2 cores: miss >= 25% of floor throughput, hit >= 75%, p99 <= 25 ms at half
load, events >= 5,000/s. Usage::

    python bench/serve.py [--models BUNDLE] [--seconds 5] [--workers 1 2] [--json OUT]
    python bench/serve.py --soak 600 [--soak-workers 1] [--window 30] [--no-table] [--json OUT]
        # then 10 min of cache misses at 70% of the measured maximum: p50/p99, errors and
        # each worker's RSS per window, p99 per minute, and the RSS growth first -> last minute

``--json`` writes ``{"machine": ..., "table": [...], "soak": {...} | null}``.
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
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "fixtures" / "world-small"
API_KEY = "bench-" + uuid.uuid4().hex
N_USERS = 2000
HIT_USERS = 200  # the hit run requests these users only, each warmed (cached) first


# ------------------------------------------------------------------ load generation (client processes)
def _worker(port: int, kind: str, seconds: float, threads: int, rate: float | None, seed: int) -> list[float]:
    """One client process: ``threads`` keep-alive connections; closed loop, or open loop at ``rate`` req/s."""
    lat: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        rng = np.random.default_rng(seed * 1000 + t)
        mine: list[float] = []
        interval = threads / rate if rate else 0.0
        next_at = time.monotonic() + rng.uniform(0, interval) if rate else 0.0
        n = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            if rate:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
            u = int(rng.integers(1, (HIT_USERS if kind == "hit" else N_USERS) + 1))
            n += 1
            if kind == "events":
                body = json.dumps(
                    {"events": [{"user_id": int(rng.integers(1, N_USERS + 1)), "title_id": int(rng.integers(1, 1000)), "kind": "impression", "ts": 1_790_000_000 + n} for _ in range(100)]}
                )
                t0 = time.perf_counter()
                conn.request("POST", "/events", body, {"Content-Type": "application/json", "X-API-Key": API_KEY})
            else:
                path = f"/bench/floor/{u}" if kind == "floor" else f"/homepage/{u}"
                t0 = time.perf_counter()
                conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - t0
            if r.status >= 500 or (kind == "events" and r.status != 202) or (kind != "events" and r.status != 200):
                dt = -dt  # an error: counted apart
            mine.append(dt)
        conn.close()
        with lock:
            lat.extend(mine)

    ths = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return lat


def server_pids(pid: int) -> list[int]:
    """The server process and its children (uvicorn workers)."""
    try:
        return [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in server_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def load(
    port: int, kind: str, seconds: float, procs: int, threads: int, rate: float | None = None, server: int | None = None
) -> dict[str, float]:
    cpu0 = cpu_seconds(server) if server else 0.0
    with ProcessPoolExecutor(procs) as ex:
        futs = [ex.submit(_worker, port, kind, seconds, threads, rate / procs if rate else None, i) for i in range(procs)]
        lat = np.array([x for f in futs for x in f.result()])
    cpu = cpu_seconds(server) - cpu0 if server else float("nan")
    ok = lat[lat > 0]
    per = 100 if kind == "events" else 1
    return {
        "requests_per_s": ok.size / seconds,
        "items_per_s": ok.size * per / seconds,
        "p50_ms": float(np.percentile(ok, 50) * 1000) if ok.size else float("nan"),
        "p99_ms": float(np.percentile(ok, 99) * 1000) if ok.size else float("nan"),
        "errors": int((lat < 0).sum()),
        "n": int(ok.size),
        "server_cpu_ms_per_request": cpu * 1000 / ok.size if ok.size else float("nan"),
    }


# ------------------------------------------------------------------ server
def start_server(workers: int, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "homepage.cli.serve", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {log}")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"server not ready in 120 s: see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, help="model bundle to serve (default: train one on world-small with a small page model)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=4, help="keep-alive connections per client process")
    ap.add_argument("--deadline-ms", type=float, default=1000.0, help="server deadline (high: measure building, not falling back)")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--soak", type=float, default=0.0, help="then soak this many seconds at 70%% of max miss throughput")
    ap.add_argument("--soak-workers", type=int, default=1)
    ap.add_argument("--window", type=float, default=30.0, help="soak reporting window, seconds")
    ap.add_argument("--no-table", action="store_true", help="skip the table (with --soak: the soak only)")
    args = ap.parse_args()

    from homepage.embedded_redis import EmbeddedRedis
    from homepage.publish import publish_dataset
    from homepage.settings import Settings
    from homepage.store import connect

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    models = args.models
    if models is None:
        from homepage.bundle import train_bundle
        from homepage.config import PageConfig, PipelineConfig
        from homepage.dataset import load_dataset

        print("training a bundle on world-small (small page model) ...", flush=True)
        cfg = PipelineConfig(page=PageConfig(max_requests=300, num_rounds=50))
        models = train_bundle(load_dataset(WORLD), work / "models", cfg).path
    emb = EmbeddedRedis(work / "redis")
    emb.start()
    settings = Settings(redis_url=None, key_prefix="bench", embedded_dir=work / "redis")
    store = connect(settings)
    publish_dataset(store, WORLD, models=models)
    env = {
        **os.environ,
        "HOMEPAGE_EMBEDDED_DIR": str(work / "redis"),
        "HOMEPAGE_KEY_PREFIX": "bench",
        "HOMEPAGE_API_KEY": API_KEY,
        "HOMEPAGE_MODELS_DIR": str(work / "unpacked"),
        "HOMEPAGE_BENCH_ENDPOINTS": "1",
        "HOMEPAGE_DEADLINE_MS": str(args.deadline_ms),
        "HOMEPAGE_PAGE_CACHE_SECONDS": "600",
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.pop("REDIS_URL", None)
    rows: list[dict[str, object]] = []
    soaked: dict[str, object] | None = None
    machine = {"cpus": os.cpu_count(), "load_average_before": list(os.getloadavg())}
    try:
        for workers in [] if args.no_table else args.workers:
            rows += table(workers, env, work, store, args)
        if args.soak:
            soaked = soak(env, work, args)
    finally:
        store.close()
        emb.stop()
        shutil.rmtree(work, ignore_errors=True)
    machine["load_average_after"] = list(os.getloadavg())
    print(f"load average before {machine['load_average_before']}, after {machine['load_average_after']} ({machine['cpus']} cpus)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "table": rows, "soak": soaked}, indent=2))


def table(workers: int, env: dict[str, str], work: Path, store: object, args: argparse.Namespace) -> list[dict[str, object]]:
    """The benchmark table's lines for one worker count."""
    port = free_port()
    # forced misses: the server ignores what the cache read returns
    proc = start_server(workers, port, {**env, "HOMEPAGE_PAGE_CACHE_READS": "0"}, work / "api.log")
    try:
        page = _get(port, "/homepage/1")
        store.put_floor_page(page)  # type: ignore[attr-defined]  # a real page of the same size
        load(port, "floor", 1.0, args.procs, args.threads)  # warm up
        load(port, "miss", 1.0, args.procs, args.threads)
        floor = load(port, "floor", args.seconds, args.procs, args.threads, server=proc.pid)
        miss = load(port, "miss", args.seconds, args.procs, args.threads, server=proc.pid)
        half = load(port, "miss", args.seconds, args.procs, args.threads, rate=miss["requests_per_s"] / 2, server=proc.pid)
    finally:
        stop_server(proc)
    proc = start_server(workers, port, env, work / "api.log")
    try:
        for u in range(1, HIT_USERS + 1):  # warm: every user of the hit run has a cached page
            _get(port, f"/homepage/{u}")
        load(port, "hit", 1.0, args.procs, args.threads)
        # the hit ratio against a floor measured on this same server process, just before
        floor_hit = load(port, "floor", args.seconds, args.procs, args.threads, server=proc.pid)
        hit = load(port, "hit", args.seconds, args.procs, args.threads, server=proc.pid)
        events = load(port, "events", args.seconds, args.procs, args.threads, server=proc.pid)
    finally:
        stop_server(proc)
    rows: list[dict[str, object]] = []
    lines = (("floor", floor), ("homepage miss", miss), ("homepage miss @50%", half), ("floor (hit server)", floor_hit), ("homepage hit", hit), ("events (x100)", events))
    for name, r in lines:
        base = floor_hit if name in ("homepage hit", "floor (hit server)") else floor
        ratio = r["requests_per_s"] / base["requests_per_s"] if name.startswith(("homepage", "floor")) else float("nan")
        rows.append({"workers": workers, "endpoint": name, **r, "vs_floor": ratio})
        print(
            f"workers={workers}  {name:20s} {r['requests_per_s']:8.1f} req/s  {r['items_per_s']:9.1f} items/s  "
            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}  vs floor {ratio:5.1%}  "
            f"server CPU {r['server_cpu_ms_per_request']:6.2f} ms/req",
            flush=True,
        )
    return rows


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_rss(pid: int) -> dict[str, float]:
    """RSS per server process: the uvicorn workers (or the one process serving with 1 worker)."""
    pids = server_pids(pid)
    workers = [p for p in pids[1:] if b"spawn_main" in _cmdline(p)] or [pid]
    return {str(p): round(rss_mb(p), 1) for p in workers}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def soak(env: dict[str, str], work: Path, args: argparse.Namespace) -> dict[str, object]:
    """Cache-miss load at 70% of the measured maximum for ``args.soak`` seconds: p99 and each worker's RSS per window."""
    port = free_port()
    proc = start_server(args.soak_workers, port, {**env, "HOMEPAGE_PAGE_CACHE_READS": "0"}, work / "api.log")
    windows: list[dict[str, object]] = []
    try:
        load(port, "miss", 2.0, args.procs, args.threads)
        peak = load(port, "miss", args.seconds, args.procs, args.threads, server=proc.pid)["requests_per_s"]
        rate = 0.7 * peak
        print(f"soak: {args.soak_workers} worker(s), max {peak:.1f} req/s, soaking at {rate:.1f} req/s for {args.soak:.0f} s", flush=True)
        t0 = time.monotonic()
        t_end = t0 + args.soak
        i = 0
        while time.monotonic() < t_end - 0.5:
            start = time.monotonic() - t0
            r = load(port, "miss", min(args.window, max(1.0, t_end - time.monotonic())), args.procs, args.threads, rate=rate, server=proc.pid)
            mem = worker_rss(proc.pid)
            windows.append({"window": i, "t_start_s": round(start, 1), **r, "worker_rss_mb": mem, "load_average_1m": os.getloadavg()[0]})
            print(
                f"window {i:3d}  t={start:5.0f}s  {r['requests_per_s']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"errors {r['errors']}  worker RSS {', '.join(f'{v:.1f}' for v in mem.values())} MB  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            i += 1
    finally:
        stop_server(proc)
    return {"workers": args.soak_workers, "max_requests_per_s": peak, "rate": rate, "seconds": args.soak, "windows": windows, **soak_summary(windows)}


def soak_summary(windows: list[dict[str, object]]) -> dict[str, object]:
    """p99 per minute (worst window of the minute, weighted median not needed: windows are equal) and RSS first -> last minute."""
    minutes: dict[int, list[dict[str, object]]] = {}
    for w in windows:
        minutes.setdefault(int(float(w["t_start_s"]) // 60), []).append(w)  # type: ignore[arg-type]
    per_minute = []
    for m, ws in sorted(minutes.items()):
        rss = [sum(w["worker_rss_mb"].values()) for w in ws]  # type: ignore[union-attr]
        per_minute.append({
            "minute": m,
            "requests_per_s": float(np.mean([w["requests_per_s"] for w in ws])),
            "p99_ms_max": float(max(w["p99_ms"] for w in ws)),  # type: ignore[type-var]
            "p50_ms": float(np.median([w["p50_ms"] for w in ws])),
            "worker_rss_mb": rss[-1],
            "errors": int(sum(w["errors"] for w in ws)),  # type: ignore[misc]
        })
    for pm in per_minute:
        print(f"minute {pm['minute']:2d}  {pm['requests_per_s']:7.1f} req/s  p50 {pm['p50_ms']:6.2f} ms  p99 (worst window) {pm['p99_ms_max']:7.2f} ms  "
              f"worker RSS {pm['worker_rss_mb']:.1f} MB  errors {pm['errors']}")
    out: dict[str, object] = {"per_minute": per_minute}
    if per_minute:
        first, last = per_minute[0]["worker_rss_mb"], per_minute[-1]["worker_rss_mb"]
        out["rss_first_minute_mb"], out["rss_last_minute_mb"] = first, last
        out["rss_growth_mb"] = round(float(last) - float(first), 1)  # type: ignore[arg-type]
        print(f"worker RSS {first:.1f} -> {last:.1f} MB over the soak; total errors {sum(pm['errors'] for pm in per_minute)}")
    return out


def _get(port: int, path: str) -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
    return body


if __name__ == "__main__":
    main()
