"""Continue watching: titles the user started and has not finished, most likely to be resumed first.

A title is a candidate when its latest known watch progress is in ``[start, finish)``.
The resume score multiplies three things: recency of the last play (halving every
``recency_half_life_days``), how far in the user is (``0.5 + 0.5 * progress``), and a
penalty for each other title the user has played since (they moved on). No progress in
the data (MovieLens has none) means no row: nothing is fabricated.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from homepage.domain import CandidateRow, RowReason
from homepage.state import PLAY, UserState
from rankers.base import RankerConfig, Ranker, RankRequest, StateNeed
from rankers.similarity import top_k
from rankers.top_n import make_row

DAY = 86_400.0


class ContinueWatchingConfig(RankerConfig):
    """Configuration of :class:`ContinueWatchingRanker`."""

    row_length: int = Field(default=20, ge=1, le=1000)
    start: float = Field(default=0.05, ge=0.0, le=1.0, description="progress below this was a sample, not a start")
    finish: float = Field(default=0.9, gt=0.0, le=1.0, description="progress at or above this counts as finished")
    max_age_days: float = Field(default=180.0, gt=0.0, description="older partial plays are dropped")
    recency_half_life_days: float = Field(default=14.0, gt=0.0)
    moved_on_penalty: float = Field(default=0.1, ge=0.0, description="score divided by 1 + penalty x titles played since")
    display_title: str = "Continue watching"

    @model_validator(mode="after")
    def _order(self) -> ContinueWatchingConfig:
        if self.start >= self.finish:
            raise ValueError("start must be below finish")
        return self


def resume_scores(user: UserState, cfg: ContinueWatchingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(catalog index, resume score) of the user's unfinished titles, in no particular order."""
    idx, prog, ts = user.latest_progress
    age = (user.as_of - ts).astype(np.float64)
    ok = (prog >= cfg.start) & (prog < cfg.finish) & (age <= cfg.max_age_days * DAY)
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    idx, prog, ts, age = idx[ok], prog[ok].astype(np.float64), ts[ok], age[ok]
    # distinct other titles played after each candidate's last play: the user moved on from it
    plays = (user.kinds == PLAY) & (user.title_idx >= 0)
    p_idx, p_ts = user.title_idx[plays], user.ts[plays]
    played, first = np.unique(p_idx[::-1], return_index=True)
    own_last = p_ts[::-1][first]  # per title in ``played``; every candidate is among them
    last_play = np.sort(own_last)
    since = last_play.size - np.searchsorted(last_play, ts, side="right")
    # a later play of the candidate itself without progress (a resume) is not moving on from it
    since -= own_last[np.searchsorted(played, idx)] > ts
    score = np.exp2(-np.maximum(age, 0.0) / (cfg.recency_half_life_days * DAY)) * (0.5 + 0.5 * prog)
    score = score / (1.0 + cfg.moved_on_penalty * since)
    return idx, score


class ContinueWatchingRanker(Ranker):
    """One row of partly watched titles; stateless (reads the user's progress)."""

    name = "continue_watching"
    Config = ContinueWatchingConfig
    needs = frozenset({StateNeed.HISTORY, StateNeed.PROGRESS})
    config: ContinueWatchingConfig

    def rows(self, request: RankRequest) -> list[CandidateRow]:
        cfg = self.config
        if cfg.max_rows == 0:
            return []
        idx, score = resume_scores(request.user, cfg)
        if idx.size == 0:
            return []
        order, sc = top_k(score, cfg.row_length)
        row = make_row(self.name, "continue_watching", cfg.display_title, RowReason(kind="continue_watching"), request, idx[order], sc)
        return [row]
