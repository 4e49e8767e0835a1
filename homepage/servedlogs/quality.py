"""True page quality on the synthetic world: expected plays of pages built by each policy,
and the oracle greedy page that knows the simulator's probabilities.

The oracle runs the same page loop (same de-duplication and rules) with a scorer that, at
stage s, values each remaining row by ``sum_c examination[s, c] * attraction(u, title_c)``
over the titles it would show there: the greedy page for the true click model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fixtures.simulator import BrowsingSimulator
from homepage.domain import RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page, prepare_request
from homepage.pagebuilder.candidates import CandidateMatrix
from homepage.pagebuilder.features import COL, StageView
from homepage.pagebuilder.loop import assemble
from homepage.replay.metrics import bootstrap_mean
from homepage.replay.run import WorldCache
from homepage.servedlogs.stagegrid import effective_grid

ORACLE = "oracle-greedy"


class TrueValueScorer:
    """Oracle row scores: the true expected plays a row adds at the current stage."""

    stagewise = True

    def __init__(self, attraction: np.ndarray, examination: np.ndarray) -> None:
        self.attraction = attraction  # (n_titles,) catalog order, for one user
        self.examination = examination  # (R, C)

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        stage = int(view.X[0, COL["stage"]])
        eff = effective_grid(view, self.examination.shape[1])
        a = np.where(eff >= 0, self.attraction[np.maximum(eff, 0)], 0.0)
        return a @ self.examination[stage, : eff.shape[1]]


@dataclass(frozen=True)
class PolicyEntry:
    """A policy to evaluate: the page models to build with and the policy name to use."""

    name: str
    models: PageModels | None  # None: the oracle
    policy: str = "stage-wise"


def title_map(sim: BrowsingSimulator, models: PageModels) -> np.ndarray:
    """Catalog index -> world title index (-1 for titles the world does not know)."""
    return sim.truth.title_index(models.catalog.title_ids)


def true_expected_plays(
    sim: BrowsingSimulator,
    log: EventLog,
    entries: list[PolicyEntry],
    user_ids: np.ndarray,
    times: np.ndarray,
    rows: int,
    cols: int,
    half_life: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per request, the true expected plays of each policy's page (neutral artwork unless a selector chose)."""
    base = next(e.models for e in entries if e.models is not None)
    assert base is not None
    to_world = title_map(sim, base)
    exam = sim.examination(rows, cols)
    worlds = WorldCache(log, half_life, 3600)
    out = {e.name: np.zeros(len(user_ids)) for e in entries}
    for i, (uid, t) in enumerate(zip(user_ids, times)):
        uid, t = int(uid), int(t)
        user = log.user_state(uid, t)
        world = worlds.at(t)
        ctx = RequestContext(user_id=uid, now=t, rows=rows, cols=cols)
        prep = prepare_request(user, world, base, ctx)
        u = int(sim.truth.user_index(uid))
        att = np.where(to_world >= 0, sim.attraction(u, np.maximum(to_world, 0)), 0.0)
        for e in entries:
            if e.models is None:
                cm = base.candidate_matrix(prep.candidates, user, world)
                placed, _ = assemble(cm, base.catalog, base.title_stats(world), prep.signals, TrueValueScorer(att, exam), base.rules, base.ranker_vocab, rows, cols)
                rows_titles = [r.title_ids for r in placed]
                variants = None
            else:
                page = build_page(user, world, e.models, ctx, policy=e.policy, prepared=prep)
                rows_titles = [r.title_ids for r in page.rows]
                variants = [r.variant_ids for r in page.rows] if any(r.variant_ids for r in page.rows) else None
            grid = np.full((rows, cols), -1, dtype=np.int64)
            vgrid = np.full((rows, cols), "", dtype=object) if variants is not None else None
            for r, tids in enumerate(rows_titles[:rows]):
                grid[r, : min(len(tids), cols)] = tids[:cols]
                if vgrid is not None and variants is not None:
                    vgrid[r, : min(len(variants[r]), cols)] = variants[r][:cols]
            out[e.name][i] = sim.expected_plays(uid, grid, vgrid)
        if progress is not None:
            progress(1)
    return out


def summarise(values: dict[str, np.ndarray], reference: str | None = ORACLE, n_boot: int = 1000) -> dict[str, dict[str, object]]:
    """Mean and 95% bootstrap interval per policy, and its paired ratio to ``reference``."""
    out: dict[str, dict[str, object]] = {}
    ref = values.get(reference) if reference else None
    rng = np.random.default_rng(0)
    n = next(iter(values.values())).size
    idx = rng.integers(0, n, size=(n_boot, n))
    for name, v in values.items():
        mean, lo, hi = bootstrap_mean(v, n_boot)
        res: dict[str, object] = {"mean": mean, "ci": [lo, hi]}
        if ref is not None and name != reference:
            ratios = v[idx].mean(1) / ref[idx].mean(1)
            res["ratio_to_oracle"] = {"mean": float(v.mean() / ref.mean()), "ci": [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]}
        out[name] = res
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000) -> dict[str, object]:
    mean, lo, hi = bootstrap_mean(a - b, n_boot)
    return {"mean": mean, "ci": [lo, hi]}
