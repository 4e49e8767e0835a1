"""Page-model training from served logs, with labels corrected for 2-D position bias.

For each served layout the rows are replayed in their served order through the shared page
loop (``LoggedOrderScorer``), so the stage features are exactly those serving computes. At
stage s the query group is the served rows placed at s or below; a row's label is its
estimated value *at slot s*:

- corrected: ``sum over its played titles of theta[s, k] / theta[p, c]``: each play is
  divided by the examination of the slot (p, c) it was served in (an unbiased estimate of
  the title's attraction under the position-based model, weights clipped at 1 / floor)
  and re-discounted by the slot (s, k) the title would take if the row moved up to s;
- uncorrected: the raw count of plays, as if every slot were equally examined.

Labels are graded per group (``homepage.pagebuilder.training.grade``) for LambdaRank.
Rows the logging policy never served have no label and stay out of training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from homepage.domain import RequestContext
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.page import PageModels, prepare_request
from homepage.pagebuilder.candidates import CandidateMatrix
from homepage.pagebuilder.features import COL, StageView
from homepage.pagebuilder.loop import assemble
from homepage.pagebuilder.model import PageModel
from homepage.pagebuilder.training import StageData, grade
from homepage.replay.run import WorldCache
from homepage.servedlogs.examination import moved_play_weight
from homepage.servedlogs.layouts import layouts
from homepage.servedlogs.stagegrid import effective_grid


class LoggedOrderScorer:
    """Places the served rows in their served order (replaying a logged page through the loop)."""

    stagewise = True

    def __init__(self, order: np.ndarray) -> None:
        self.order = order  # candidate-matrix row index served at each stage

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        stage = int(view.X[0, COL["stage"]]) if view.X.shape[0] else 0
        target = self.order[stage] if stage < self.order.size else -1
        return (view.remaining == target).astype(np.float64)


@dataclass(frozen=True)
class ServedTrainingReport:
    layouts: int
    replayed_stages: int
    groups: int
    rows: int
    truncated_layouts: int  # a served row was not among today's candidates, or the rules refused it


def served_stage_data(
    logs: pd.DataFrame,
    log: EventLog,
    models: PageModels,
    theta: np.ndarray | None,
    half_life: float,
    floor: float = 0.05,
    progress: Callable[[int], None] | None = None,
) -> tuple[StageData, ServedTrainingReport]:
    """Stage groups from served layouts; ``theta`` (R, C) relative examination, None = uncorrected labels."""
    data, report = served_stage_data_multi(logs, log, models, [theta], half_life, floor, progress)
    return data[0], report


def served_stage_data_multi(
    logs: pd.DataFrame,
    log: EventLog,
    models: PageModels,
    thetas: list[np.ndarray | None],
    half_life: float,
    floor: float = 0.05,
    progress: Callable[[int], None] | None = None,
    graded: bool = True,
) -> tuple[list[StageData], ServedTrainingReport]:
    """``served_stage_data`` for several label schemes at once (the stage features are shared).

    ``graded=False`` keeps the label values themselves (for a pointwise regression objective).
    """
    catalog = models.catalog
    worlds = WorldCache(log, half_life, 3600)
    replay_rules = models.rules.refusing_only()
    Xs: list[list[np.ndarray]] = [[] for _ in thetas]
    ys: list[list[np.ndarray]] = [[] for _ in thetas]
    sizes: list[list[int]] = [[] for _ in thetas]
    owners: list[list[int]] = [[] for _ in thetas]
    n_layouts = truncated = stages = 0
    cached: tuple | None = None
    for li, lay in enumerate(layouts(logs, catalog)):
        n_layouts += 1
        R, C = lay.grid.shape
        if cached is None or cached[0] != (lay.user_id, lay.ts, R, C):  # layouts of one request are adjacent
            user = log.user_state(lay.user_id, lay.ts)
            world = worlds.at(lay.ts)
            ctx = RequestContext(user_id=lay.user_id, now=lay.ts, rows=R, cols=C)
            prep = prepare_request(user, world, models, ctx)
            cm = models.candidate_matrix(prep.candidates, user, world)
            cached = ((lay.user_id, lay.ts, R, C), world, prep, cm, {row.row_id: i for i, row in enumerate(cm.rows)})
        _, world, prep, cm, where = cached
        order = []
        for rid in lay.row_ids:
            if rid not in where:
                break
            order.append(where[rid])
        order_a = np.array(order, dtype=np.int64)
        _, traces = assemble(cm, catalog, models.title_stats(world), prep.signals, LoggedOrderScorer(order_a), replay_rules, models.ranker_vocab, len(order), C, explain=True)
        done = 0
        for s, tr in enumerate(traces):
            if int(tr.view.remaining[tr.chosen]) != order_a[s]:
                break  # the rules refused the served order from here on
            done += 1
        if done < R:
            truncated += 1
        stages += done
        for s in range(done):
            view = traces[s].view
            served_rows = order_a[s:done]
            pos = {int(ci): s + k for k, ci in enumerate(served_rows)}  # cm row -> served row_index
            members = np.flatnonzero(np.isin(view.remaining, served_rows))
            if members.size < 2:
                continue
            grid = effective_grid(view, C)
            for li_, theta in enumerate(thetas):
                gains = _gains(members, view.remaining, pos, grid, lay.grid, lay.plays, theta, s, floor)
                if gains.max() <= 0:
                    continue
                Xs[li_].append(view.X[members])
                ys[li_].append(grade(gains) if graded else gains.astype(np.float32))
                sizes[li_].append(members.size)
                owners[li_].append(li)
        if progress is not None:
            progress(1)
    if not Xs[0]:
        raise HomepageError("served log: no stage group with a play; nothing to train on")
    data = [StageData(np.concatenate(x), np.concatenate(y), np.array(g, dtype=np.int64), np.array(o, dtype=np.int64)) for x, y, g, o in zip(Xs, ys, sizes, owners) if x]
    if len(data) < len(thetas):
        raise HomepageError("served log: no stage group with a play under one of the label schemes")
    return data, ServedTrainingReport(n_layouts, stages, int(data[0].groups.size), int(data[0].y.size), truncated)


def _gains(members: np.ndarray, remaining: np.ndarray, pos: dict[int, int], eff: np.ndarray, served: np.ndarray, plays: np.ndarray, theta: np.ndarray | None, s: int, floor: float) -> np.ndarray:
    """Label values of the group's rows at stage ``s`` (see the module docstring).

    Only plays of titles the row would still show at stage s count (a title shown in a row
    placed between s and the row's own slot may be taken by that row in the loop).
    """
    gains = np.zeros(members.size)
    for g, m in enumerate(members):
        p = pos[int(remaining[m])]
        for c in np.flatnonzero(plays[p] > 0):
            k = np.flatnonzero(eff[m] == served[p, c])
            if k.size == 0:
                continue
            if theta is None:
                gains[g] += plays[p, c]
            else:
                gains[g] += plays[p, c] * moved_play_weight(theta, (p, int(c)), (s, int(k[0])), floor)
    return gains


def train_from_served_logs(
    logs: pd.DataFrame,
    log: EventLog,
    models: PageModels,
    theta: np.ndarray | None,
    half_life: float,
    num_rounds: int = 200,
    floor: float = 0.05,
    progress: Callable[[int], None] | None = None,
) -> tuple[PageModel, ServedTrainingReport]:
    """Fit a page model on served layouts (corrected labels when ``theta`` is given).

    The model's manifest records when the pages it learnt from were served (``served_window``),
    so that a replay of logs from that window can say its estimate is in-sample.
    """
    data, report = served_stage_data(logs, log, models, theta, half_life, floor, progress)
    window = (int(logs["ts"].min()), int(logs["ts"].max())) if len(logs) else None
    return fit_on_stage_data(data, report, models, theta is not None, num_rounds, window=window), report


def fit_on_stage_data(
    data: StageData,
    report: ServedTrainingReport,
    models: PageModels,
    corrected: bool,
    num_rounds: int = 200,
    objective: str = "lambdarank",
    window: tuple[int, int] | None = None,
) -> PageModel:
    """LambdaRank on graded labels, or least squares on label values (``objective="regression"``)."""
    params = {"objective": "regression", "metric": "l2"} if objective == "regression" else None
    return PageModel.fit(
        data.X,
        data.y,
        data.groups,
        models.ranker_vocab,
        models.kind_vocab,
        num_rounds=num_rounds,
        params=params,
        extra_manifest={
            "source": "served_logs", "position_correction": corrected, "objective": objective, "training": report.__dict__,
            **({"served_window": list(window)} if window is not None else {}),
        },
    )
