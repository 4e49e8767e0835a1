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
from homepage.pagebuilder.features import FEATURE_NAMES, PageSoFar, StageView, UserSignals, stage_view
from homepage.pagebuilder.rules import PageRules, eligible

NEW_GENRES = FEATURE_NAMES.index("new_genres")


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
    page = PageSoFar(len(catalog), len(catalog.genres), len(ranker_vocab), int(cm.kind.max(initial=0)) + 1)
    remaining = np.arange(len(cm))
    placed: list[PlacedRow] = []
    traces: list[StageTrace] = []
    static_scores: np.ndarray | None = None
    names = list(ranker_vocab)
    for stage in range(rows):
        if remaining.size == 0:
            break
        view = stage_view(cm, remaining, page, stats, user, stage, cols)
        if scorer.stagewise or static_scores is None:
            s = np.asarray(scorer.score(view, cm), dtype=np.float64)
            if not scorer.stagewise:
                static_scores = np.full(len(cm), -np.inf)
                static_scores[remaining] = s
        if not scorer.stagewise:
            s = static_scores[remaining]
        ok, forced = eligible(
            rules,
            stage,
            names,
            cm.ranker[remaining],
            view.n_effective,
            view.X[:, NEW_GENRES],
            page.ranker_count,
            int(page.viewport_genres.sum()),
        )
        if not ok.any():
            break
        masked = np.where(ok, s, -np.inf)
        best = int(np.argmax(masked))
        row_i = int(remaining[best])
        eff = view.effective[best, : view.n_effective[best]]
        cand = cm.rows[row_i]
        pos = {int(t): j for j, t in enumerate(cm.titles[row_i]) if t >= 0}
        title_scores = tuple(float(cm.scores[row_i, pos[int(t)]]) for t in eff)
        genres = view.profiles[best] > 0
        page.place(int(cm.ranker[row_i]), int(cm.kind[row_i]), eff, view.profiles[best], genres, stage < rules.viewport_rows)
        placed.append(
            PlacedRow(
                row_id=cand.row_id,
                ranker=cand.ranker,
                display_title=cand.display_title,
                reason=cand.reason,
                title_ids=tuple(int(x) for x in catalog.title_ids[eff]),
                scores=title_scores,
                stage=stage,
                score=float(s[best]),
                forced_by=forced,
                features=dict(zip(FEATURE_NAMES, (float(x) for x in view.X[best]))) if explain else None,
            )
        )
        if explain:
            traces.append(StageTrace(view, s, ok, best))
        remaining = np.delete(remaining, best)
    return placed, traces
