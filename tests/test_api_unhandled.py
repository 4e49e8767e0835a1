"""An error no route handles: one log line with its traceback, a 500 without details, and nothing left for the server to log again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings


def get_all(app: object, requests: list[tuple[str, dict[str, str]]]) -> list[httpx.Response]:
    """GET each (path, headers) in the app in process, without its lifespan (no Redis needed). An error
    escaping the app, which a server would log again, is raised here (``raise_app_exceptions``)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(run())


def test_an_unhandled_error_is_answered_500_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ServeSettings(models_dir=tmp_path))

    @app.get("/boom/{user_id}")
    def boom(user_id: int) -> None:
        raise RuntimeError("secret detail of user 4242")

    with caplog.at_level(logging.ERROR):
        # the same fault on every request after the first: not a traceback each
        r, *again = get_all(app, [("/boom/4242", {"X-Request-ID": "ticket-7"})] + [(f"/boom/{u}", {}) for u in range(5)])
    assert r.status_code == 500 and r.json() == {"detail": "internal error"} and r.headers["x-request-id"] == "ticket-7"
    assert all(a.status_code == 500 for a in again)
    records = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(records) == 1 and records[0].exc_info is not None
    # the route, not the user's id; the request id a client can quote
    assert records[0].getMessage() == "unhandled error on GET /boom/{user_id} (request ticket-7; 0 more on this route since the last logged)"
    assert "secret detail" not in r.text
    (metrics_response,) = get_all(app, [("/metrics", {})])
    metrics = metrics_response.text
    assert 'homepage_responses_total{endpoint="/boom/{user_id}",status="500"} 6.0' in metrics


def test_a_500_is_readable_by_a_browser_app_on_an_allowed_origin(tmp_path: Path) -> None:
    """CORS wraps the 500 too: without its headers a web client on another origin cannot read the request id to quote."""
    app = create_app(ServeSettings(models_dir=tmp_path, cors_origins="https://app.example.test"))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    (r,) = get_all(app, [("/boom", {"Origin": "https://app.example.test", "X-Request-ID": "ticket-8"})])
    assert r.status_code == 500 and r.headers["access-control-allow-origin"] == "https://app.example.test"
    assert r.headers["x-request-id"] == "ticket-8" and "x-request-id" in r.headers["access-control-expose-headers"].lower()
