"""``bench/deployment_memory.py`` runs on a tiny world against real Redis and a real worker, prints its figures and cleans up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_fixtures import test_redis_url

from fixtures.world import WorldParams, generate_world, write_world

ROOT = Path(__file__).resolve().parents[1]


def free_port_in(lo: int = 21000, hi: int = 22000) -> int:
    """A free loopback port in [lo, hi) (the range this project's servers may take on shared machines)."""
    for port in range(lo, hi):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {lo}..{hi - 1}")


def test_it_measures_a_tiny_deployment_and_leaves_nothing(tmp_path: Path, url_client: Any) -> None:
    world = tmp_path / "world"
    write_world(generate_world(WorldParams(n_users=60, n_titles=50, seed=4)), world)
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bench" / "deployment_memory.py"), str(world), "--url", test_redis_url(),
           "--port", str(free_port_in()), "--pages", "1050", "--events", "1050", "--cap", "1000", "--json", str(out)]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert "served stream: " in res.stdout and "worker RSS: " in res.stdout
    # the caps applied: both streams were filled past 1,000 and trimmed back near it
    assert 1000 <= r["served_entries"] < 1050 and 1000 <= r["events_entries_bare"] < 1200
    assert r["events_bytes_per_entry_slot"] > r["events_bytes_per_entry_bare"] > 0  # a credited play carries its slot
    assert r["page_keys"] == 60 and r["hist_keys"] == 60 and r["seq_keys"] == r["applied_fields"] > 0
    assert r["idempotency_keys"] == 2100 and r["idempotency_bytes"] > 100  # a UUID key and the event's digest
    assert r["bundle_in_redis"] >= r["bundle_files"] > 0 and r["unpacked_bytes"] > 0
    assert r["rss_second_version_mb"] > 50
    # used_memory deltas on the shared server count what other clients wrote or deleted meanwhile (the other test
    # process's teardowns: -2.8 MB seen under a 3 MB churn): measured, of any sign
    assert isinstance(r["version_used_memory"], int) and isinstance(r["second_version_used_memory"], int)
    # every key it wrote is gone (its own prefix: another test run may share this database)
    assert r["prefix"].startswith("depmem") and not list(url_client.scan_iter(match=f"{r['prefix']}:*", count=1000))
