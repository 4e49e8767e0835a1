"""Repeated failure logs are rate limited, and the count of the held-back ones is not lost."""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest

from homepage.domain import CandidateRow
from homepage.log_throttle import LogThrottle
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
