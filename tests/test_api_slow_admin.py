"""Slow admin work (``DELETE /users``, ``POST /admin/reload``) never takes the threads page reads need (real uvicorn, real Redis).

An erasure reads both streams through (seconds at their caps) and a reload loads a bundle; on the
page pool, a batch of them at once (a GDPR job deleting in parallel) left no thread for the pages'
Redis reads, and every page on that worker was the degraded fallback until they finished.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_fixtures import live_api_on_embedded

API_KEY = "admin-" + uuid.uuid4().hex
THREADS = 2  # the page pool: as many erasures as threads took all of it


def wait_blocked(client: Any, n: int) -> None:
    """Until ``n`` clients are blocked by the server (here: by CLIENT PAUSE)."""
    deadline = time.monotonic() + 30
    while int(client.info("clients")["blocked_clients"]) < n:
        assert time.monotonic() < deadline, "the erasures never reached Redis"
        time.sleep(0.02)


def test_pages_are_served_while_erasures_hold_redis(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path: Path) -> None:
    with live_api_on_embedded(request, recent_world, serving_bundle, tmp_path / "unpacked", API_KEY, threads=THREADS) as (srv, store):
        client = store.client
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            assert not http.get("/homepage/1001").json()["degraded"]
            deleted: list[int] = []

            def erase(user: int) -> None:
                with httpx.Client(base_url=srv.url, timeout=120) as c:
                    deleted.append(c.delete(f"/users/{user}", headers={"X-API-Key": API_KEY}).status_code)

            client.client_pause(120_000, all=False)  # writes wait (reads go on): each erasure holds its thread
            eraser = [threading.Thread(target=erase, args=(1002 + i,)) for i in range(THREADS)]
            try:
                for t in eraser:
                    t.start()
                wait_blocked(client, THREADS)
                r = http.get("/homepage/1001", params={"rows": 3, "cols": 3})
            finally:
                client.client_unpause()
                for t in eraser:
                    t.join(timeout=60)
        assert r.status_code == 200
        assert r.headers.get("X-Degraded") is None and not r.json()["degraded"]  # was "deadline": no thread for its read
        assert deleted == [200] * THREADS
