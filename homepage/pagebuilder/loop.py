"""The page loop: place rows one stage at a time, removing titles already shown from rows below.

Every policy runs through this loop, so every policy de-duplicates and obeys the same
business rules; they differ only in how rows are scored (``RowScorer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import PlacedRow
from homepage.pagebuilder.candidates import CandidateMatrix, TitleStats
from homepage.pagebuilder.features import COL, FEATURE_NAMES, StageFeatures, StageView, UserSignals
from homepage.pagebuilder.rules import PageRules, RulePlan

NEW_GENRES = COL["new_genres"]


class RowScorer(Protocol):
    """Scores the remaining rows of a stage from their feature matrix; higher is placed first."""

    stagewise: bool  # False: rows are scored once, on the empty page

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class StageTrace:
    """What happened at one stage (for explain mode and training)."""

    view: StageView
    scores: np.ndarray
    eligible: np.ndarray
    chosen: int  # position in view.remaining


def assemble(
    cm: CandidateMatrix,
    catalog: Catalog,
    stats: TitleStats,
    user: UserSignals,
    scorer: RowScorer,
    rules: PageRules,
    ranker_vocab: tuple[str, ...],
    rows: int,
    cols: int,
    explain: bool = False,
) -> tuple[list[PlacedRow], list[StageTrace]]:
    """Build up to ``rows`` rows of up to ``cols`` titles; returns the rows and (if explain) the traces."""
    feats = StageFeatures(cm, stats, user, cols, len(ranker_vocab), rules.viewport_rows)
    plan = RulePlan(rules, list(ranker_vocab), cols, rows)
    alive = np.ones(len(cm), dtype=bool)
    placed: list[PlacedRow] = []
    traces: list[StageTrace] = []
    static_scores: np.ndarray | None = None
    for stage in range(rows):
        remaining = np.flatnonzero(alive)
        if remaining.size == 0:
            break
        view = feats.view(stage, remaining)
        if scorer.stagewise:
            s = np.asarray(scorer.score(view, cm), dtype=np.float64)
        else:
            if static_scores is None:
                static_scores = np.asarray(scorer.score(view, cm), dtype=np.float64)
            s = static_scores[remaining]
        counting = plan.genre_rules and stage < rules.viewport_rows  # min_viewport_genres counts the titles the viewport shows
        new_genres = feats.visible_new_genres(remaining, rules.viewport_cols) if counting else view.X[:, NEW_GENRES]
        ok, forced = plan.eligible(stage, cm.ranker[remaining], view.n_effective, new_genres, feats.ranker_count, feats.visible_genre_count)
        masked = np.where(ok, s, -np.inf)
        best = int(np.argmax(masked))
        if masked[best] != masked[best]:  # argmax takes a NaN for the maximum: a NaN score ranks last, not first
            masked[np.isnan(masked)] = -np.inf
            best = int(np.argmax(masked))
        if not ok[best]:  # every eligible row scored -inf or NaN: the first of them, never a row the rules refuse
            if not ok.any():
                break
            best = int(np.argmax(ok))
        row_i = int(remaining[best])
        keep = view.take[row_i]
        if counting:
            feats.see_viewport(row_i, rules.viewport_cols)
        eff = feats.place(row_i, stage)
        cand = cm.rows[row_i]
        placed.append(
            PlacedRow(
                row_id=cand.row_id,
                ranker=cand.ranker,
                display_title=cand.display_title,
                reason=cand.reason,
                title_ids=tuple(catalog.title_ids[eff].tolist()),
                scores=tuple(cm.scores[row_i][keep].tolist()),
                stage=stage,
                score=float(s[best]),
                forced_by=forced,
                features=dict(zip(FEATURE_NAMES, view.X[best].tolist())) if explain else None,
            )
        )
        if explain:
            traces.append(StageTrace(view, s, ok, best))
        alive[row_i] = False
    return placed, traces
