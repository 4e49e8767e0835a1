"""What clients send cannot add series to ``/metrics``: its labels take bounded values whatever the requests.

Found by a soak (2026-12-07): a scan with WebDAV methods (``PROPFIND``, ``MKCOL``, ... which the
HTTP parser passes on to the app, and h11 any token) added a latency histogram of 18 series per
method on every route it named.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings
from homepage.metrics import FALLBACK_REASONS, LABELLED_METHODS

# methods httptools (llhttp) passes to the app, and tokens h11 would
SCAN_METHODS = [
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKACTIVITY",
    "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "LINK", "UNLINK", "SOURCE",
    "QUERY", "TRACE", "ACL", "BIND", "REBIND", "UNBIND", "MKCALENDAR",
] + [f"X-SCAN-{i}" for i in range(30)]


def metrics_after(app: object, requests: list[tuple[str, str]]) -> str:
    """Send each (method, path) to the app in process (no lifespan, no Redis needed), then read ``/metrics``."""

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for method, path in requests:
                await client.request(method, path)
            return (await client.get("/metrics")).text

    return asyncio.run(run())


def test_request_methods_take_a_bounded_set_of_label_values(tmp_path: Path) -> None:
    app = create_app(ServeSettings(models_dir=tmp_path))
    paths = ["/health/live", "/homepage/7", "/events", "/users/7", "/no/such/route"]
    text = metrics_after(app, [(m, p) for m in SCAN_METHODS + ["GET", "DELETE"] for p in paths])
    methods = set(re.findall(r'^homepage_request_seconds_count\{[^}]*method="([^"]*)"', text, re.M))
    assert "other" in methods and {"GET", "DELETE"} <= methods, methods
    assert methods <= LABELLED_METHODS | {"other"}, sorted(methods - LABELLED_METHODS)
    # each endpoint's histogram: at most one per labelled method and "other", however many methods were sent
    histograms = re.findall(r"^homepage_request_seconds_count\{", text, re.M)
    assert len(histograms) <= len(paths) * 3 + 1, len(histograms)  # GET, DELETE, other; /metrics itself


def test_every_fallback_reason_is_a_series_from_the_start(tmp_path: Path) -> None:
    """An alert on ``increase(homepage_fallbacks_total{reason="deadline"}[5m])`` sees the first fallback too.

    A series born at its first increment starts at that value, which ``rate`` and ``increase``
    cannot see: the first outage after a deploy counted nothing in them.
    """
    text = metrics_after(create_app(ServeSettings(models_dir=tmp_path)), [])
    found = dict(re.findall(r'^homepage_fallbacks_total\{reason="(\w+)"\} (\S+)$', text, re.M))
    assert found == {r: "0.0" for r in FALLBACK_REASONS}, found
    assert set(FALLBACK_REASONS) == {"deadline", "redis_unavailable", "model_error", "not_published"}  # X-Degraded's values (README)
