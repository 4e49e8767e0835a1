"""An error no route handles: one log line with its traceback, a 500 without details, and nothing left for the server to log again."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings


def test_an_unhandled_error_is_answered_500_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ServeSettings(models_dir=tmp_path))

    @app.get("/boom/{user_id}")
    def boom(user_id: int) -> None:
        raise RuntimeError("secret detail of user 4242")

    # no lifespan (no Redis needed); raise_server_exceptions: an error escaping the app, which the server would log again, fails here
    client = TestClient(app, raise_server_exceptions=True)
    with caplog.at_level(logging.ERROR):
        r = client.get("/boom/4242", headers={"X-Request-ID": "ticket-7"})
        again = [client.get(f"/boom/{u}") for u in range(5)]  # the same fault on every request: not a traceback each
    assert r.status_code == 500 and r.json() == {"detail": "internal error"} and r.headers["x-request-id"] == "ticket-7"
    assert all(a.status_code == 500 for a in again)
    records = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(records) == 1 and records[0].exc_info is not None
    # the route, not the user's id; the request id a client can quote
    assert records[0].getMessage() == "unhandled error on GET /boom/{user_id} (request ticket-7; 0 more on this route since the last logged)"
    assert "secret detail" not in r.text
    metrics = client.get("/metrics").text
    assert 'homepage_responses_total{endpoint="/boom/{user_id}",status="500"} 6.0' in metrics


def test_a_500_is_readable_by_a_browser_app_on_an_allowed_origin(tmp_path: Path) -> None:
    """CORS wraps the 500 too: without its headers a web client on another origin cannot read the request id to quote."""
    app = create_app(ServeSettings(models_dir=tmp_path, cors_origins="https://app.example.test"))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    client = TestClient(app, raise_server_exceptions=True)
    r = client.get("/boom", headers={"Origin": "https://app.example.test", "X-Request-ID": "ticket-8"})
    assert r.status_code == 500 and r.headers["access-control-allow-origin"] == "https://app.example.test"
    assert r.headers["x-request-id"] == "ticket-8" and "x-request-id" in r.headers["access-control-expose-headers"].lower()
