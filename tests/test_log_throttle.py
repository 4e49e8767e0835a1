"""Repeated failure logs are rate limited, and the count of the held-back ones is not lost."""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest

from homepage.domain import CandidateRow
from homepage.log_throttle import LogThrottle, RepeatedWarnings
from homepage.page import collect_candidates
from rankers.base import Ranker, RankRequest


def test_one_message_per_period_per_key_with_the_count_held_back() -> None:
    now = [0.0]
    t = LogThrottle(period=60.0, clock=lambda: now[0])
    assert t.admit("a") == 0
    assert [t.admit("a") for _ in range(5)] == [None] * 5
    assert t.admit("b") == 0  # keys are independent
    now[0] = 59.9
    assert t.admit("a") is None
    now[0] = 60.0
    assert t.admit("a") == 6  # the six held back since the first
    assert t.admit("a") is None


def test_repeated_warnings_pass_once_a_period_and_the_next_says_how_many_were_held() -> None:
    now = [0.0]
    f = RepeatedWarnings(period=60.0, clock=lambda: now[0])

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, None, None)

    assert f.filter(record(logging.WARNING, "Invalid HTTP request received."))
    assert not any(f.filter(record(logging.WARNING, "Invalid HTTP request received.")) for _ in range(7))
    assert f.filter(record(logging.WARNING, "Unsupported upgrade request."))  # another message: its own period
    assert all(f.filter(record(logging.INFO, "Started server process")) for _ in range(3))  # other levels untouched
    now[0] = 61.0
    r = record(logging.WARNING, "Invalid HTTP request received.")
    assert f.filter(r) and r.getMessage() == "Invalid HTTP request received. (and 7 times since the last line; they are logged once a minute)"


class Exploding(Ranker):
    name: ClassVar[str] = "exploding_for_logs"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        raise RuntimeError("boom")


def test_a_ranker_failing_on_every_request_logs_once_but_notes_every_page(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("homepage.page.RANKER_LOG", LogThrottle(period=60.0))
    request = RankRequest(None, None, None, None)  # type: ignore[arg-type]  # never read: the ranker raises first
    with caplog.at_level(logging.ERROR, logger="homepage.page"):
        notes = [collect_candidates([Exploding()], request)[1] for _ in range(50)]
    assert all(n == ["ranker exploding_for_logs failed: RuntimeError"] for n in notes)
    lines = [r for r in caplog.records if "exploding_for_logs" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None  # the first one, with its traceback


class Slow(Ranker):
    name: ClassVar[str] = "slow_for_logs"

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        import time

        time.sleep(0.06)
        return []


def test_a_slow_ranker_is_named_in_the_log_once_a_minute(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are built on the event loop and the deadline covers only the Redis read: a slow
    plug-in held every request of its worker and nothing named it. Serving passes its deadline
    and the ranker is logged, not noted (replay's pages must not depend on timing); offline
    (no deadline) nothing is timed."""
    monkeypatch.setattr("homepage.page.RANKER_LOG", LogThrottle(period=60.0))
    request = RankRequest(None, None, None, None)  # type: ignore[arg-type]  # never read
    with caplog.at_level(logging.WARNING, logger="homepage.page"):
        collect_candidates([Slow()], request)  # offline: no deadline
        assert not [r for r in caplog.records if "slow_for_logs" in r.getMessage()]
        notes = [collect_candidates([Slow(), Exploding()], request, slow_seconds=0.05)[1] for _ in range(3)]
    assert all(n == ["ranker exploding_for_logs failed: RuntimeError"] for n in notes)
    slow = [r.getMessage() for r in caplog.records if "slow_for_logs" in r.getMessage()]
    assert len(slow) == 1 and "took" in slow[0] and "the deadline is 50 ms" in slow[0], slow
    # a failing ranker that is also slow is logged for both
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="homepage.page"):
        collect_candidates([Exploding()], request, slow_seconds=0.0)
    assert any("exploding_for_logs took" in r.getMessage() for r in caplog.records)
