"""Resumes: titles a user started and did not finish by the request time, and played again after it.

Targets leave out titles seen by t, so ``resume_recall`` is the one replay metric that sees what a
"Continue watching" row is for; these tests pin down which titles count.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.eventlog import DAY, EventLog
from homepage.replay.metrics import RESUME, score_page
from homepage.replay.protocol import ReplayProtocol, sample_requests
from homepage.state import PLAY

CATALOG = Catalog.from_frames(pd.DataFrame({"title_id": range(1, 9), "name": [f"t{i}" for i in range(1, 9)], "year": 2000, "genres": "Drama"}))
RATING = 1


def log_of(rows: list[tuple[int, int, int, float, float]]) -> EventLog:
    """(title_id, kind, ts, progress, stars) events of user 1."""
    frame = pd.DataFrame(rows, columns=["title_id", "kind", "ts", "progress", "stars"])
    frame["user_id"] = 1
    frame = frame.astype({"user_id": np.int64, "title_id": np.int64, "kind": np.int8, "ts": np.int64})
    return EventLog.from_frame(frame, CATALOG, None)


HISTORY = [
    (1, PLAY, 10, 0.30, np.nan),  # unfinished, played again later: a resume
    (2, PLAY, 11, 0.95, np.nan),  # finished
    (3, PLAY, 12, 0.02, np.nan),  # a sample, not a start
    (4, PLAY, 13, 0.50, np.nan),  # unfinished, never played again
    (5, PLAY, 14, 0.40, np.nan),
    (5, PLAY, 15, 0.95, np.nan),  # its latest play finished it
    (6, RATING, 16, np.nan, 4.0),  # rated, no progress
]
LATER = [(1, PLAY, 30, 0.8, np.nan), (2, PLAY, 31, 0.5, np.nan), (3, PLAY, 32, 0.5, np.nan), (5, PLAY, 33, 0.5, np.nan), (6, PLAY, 34, 0.5, np.nan), (8, PLAY, 40, 0.5, np.nan)]


def test_only_unfinished_titles_played_again_are_resumes() -> None:
    log = log_of(HISTORY + LATER)
    req = sample_requests(log, ReplayProtocol(split_time=20, requests_per_user=10, horizon_days=1))
    by_time = {int(t): set(CATALOG.title_ids[r].tolist()) for t, r in zip(req.times, req.resumes, strict=True)}
    assert by_time[29] == {1}  # not 2 (finished), 3 (a sample), 4 (not played again), 5 (finished last), 6 (rated)
    assert by_time[30] == set()  # title 1 was played at 30: not again after it
    assert all(len(r) == 0 or t == 29 for t, r in by_time.items())


def test_without_progress_data_there_are_no_resumes() -> None:
    no_progress = [(t, k, ts, np.nan, 3.0) for t, k, ts, _, _ in HISTORY + LATER]
    req = sample_requests(log_of(no_progress), ReplayProtocol(split_time=20, requests_per_user=10, horizon_days=1))
    assert len(req) > 0 and req.resumes == ()


def test_resume_recall_is_the_share_shown_and_nan_without_resumes() -> None:
    grid = np.array([[0, 1, 2], [3, -1, -1]])
    genres = np.zeros((8, 1), bool)
    info = np.ones(8)
    shown = score_page(grid, ["a", "b"], np.array([7]), genres, info, (1, 3), resumes=np.array([1, 5]))
    assert shown.values[RESUME] == 0.5
    assert math.isnan(score_page(grid, ["a", "b"], np.array([7]), genres, info, (1, 3)).values[RESUME])
    assert math.isnan(score_page(grid, ["a", "b"], np.array([7]), genres, info, (1, 3), resumes=np.zeros(0, np.int64)).values[RESUME])


def test_horizon_bounds_the_resumes() -> None:
    late = [(1, PLAY, 30 + int(2 * DAY), 0.8, np.nan), (8, PLAY, 31, 0.5, np.nan)]
    req = sample_requests(log_of(HISTORY + late), ReplayProtocol(split_time=20, requests_per_user=10, horizon_days=1))
    first = int(np.argmin(req.times))
    assert int(req.times[first]) == 30 and req.resumes[first].size == 0  # title 1 comes back after the window
