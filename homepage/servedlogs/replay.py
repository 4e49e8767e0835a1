"""Replay from served logs: estimate what another policy's pages would have earned on the
service's own traffic.

For every served layout (a page as shown, plays summed over the visits that saw it) the
policy's page is rebuilt for the same user at the same time, through ``build_page``, and
scored against the titles the user played on the served page:

- ``hits``: plays of titles the new page also shows, per visit;
- ``discounted``: those plays re-discounted by the title's new slot,
  ``1/log2(r'+2) * 1/log2(c'+2)`` (no position correction; comparable between policies
  only, not an estimate of plays);
- ``corrected``: plays re-weighted by ``theta[r', c'] / theta[r, c]``, the relative
  examination of the new slot over the served one. Under the position-based model, a play
  divided by the examination of its slot is an unbiased estimate of the title's attraction,
  so this estimates the expected plays the new page earns *from the titles both pages
  show*. Applied to the served page itself it returns the observed plays exactly (when
  no slot's examination is below the floor).

Bias: a title the new page shows but the served page did not contributes nothing, so the
estimate is pessimistic for a policy that departs from the logging policy, by roughly the
new page's value on titles outside the overlap; ``overlap`` (share of the new page's slots
whose title was served) says how far to trust it. Examination ratios are clipped at
``1 / floor`` to bound the variance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from homepage.domain import RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page, prepare_request
from homepage.replay.metrics import resample_weights
from homepage.replay.run import WorldCache
from homepage.servedlogs.examination import moved_play_weight
from homepage.servedlogs.layouts import layouts

MEASURES: tuple[str, ...] = ("hits", "discounted", "corrected", "overlap")
LOGGED = "logged"


@dataclass(frozen=True)
class ReplayPolicy:
    """A policy to replay: its name in the report, the models to build with, the policy to use."""

    name: str
    models: PageModels
    policy: str


@dataclass(eq=False)
class ServedReplay:
    """Per served layout and policy, the measures; ``visits`` weights the layouts; ``users`` is each layout's user."""

    visits: np.ndarray
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    users: np.ndarray | None = None

    def to_json(self, n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
        """Visit-weighted means with 95% bootstrap intervals resampling users (all their layouts together).

        A user's layouts share their taste and plays: resampled one by one, the intervals were
        about 1.4x too narrow (as replay's were before it resampled users).
        """
        w = np.asarray(self.visits, dtype=np.float64)
        counts = resample_weights(w.size, n_boot, seed, groups=self.users)  # (n_boot, layouts)
        bw = counts * w[None, :]
        out: dict[str, object] = {}
        for name, measures in self.values.items():
            res = {}
            for m, vals in measures.items():
                v = np.asarray(vals, dtype=np.float64)
                boot = (bw * v[None, :]).sum(1) / np.maximum(bw.sum(1), 1e-12)
                res[m] = {"mean": float((v * w).sum() / w.sum()), "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]}
            out[name] = res
        users = int(np.unique(self.users).size) if self.users is not None else None
        return {"layouts": int(w.size), "visits": int(w.sum()), "users": users, "interval": "95% percentile bootstrap over users", "policies": out}


def score_against_log(new_grid: np.ndarray, served_grid: np.ndarray, plays_per_visit: np.ndarray, theta: np.ndarray, floor: float) -> dict[str, float]:
    """The measures of one rebuilt page (catalog-index grid) against one served layout."""
    rr, cc = np.nonzero(plays_per_visit > 0)
    pos = {int(t): (r, c) for (r, c), t in np.ndenumerate(new_grid) if t >= 0}
    hits = disc = corr = 0.0
    for r, c in zip(rr, cc):
        where = pos.get(int(served_grid[r, c]))
        if where is None:
            continue
        p = float(plays_per_visit[r, c])
        r2, c2 = where
        hits += p
        disc += p / (np.log2(r2 + 2.0) * np.log2(c2 + 2.0))
        corr += p * moved_play_weight(theta, (int(r), int(c)), (r2, c2), floor)
    shown = new_grid[new_grid >= 0]
    overlap = float(np.isin(shown, served_grid[served_grid >= 0]).mean()) if shown.size else 0.0
    return {"hits": hits, "discounted": disc, "corrected": corr, "overlap": overlap}


def replay_served_logs(
    logs: pd.DataFrame,
    log: EventLog,
    policies: list[ReplayPolicy],
    theta: np.ndarray,
    half_life: float,
    floor: float = 0.05,
    progress: Callable[[int], None] | None = None,
) -> ServedReplay:
    """Rebuild every served layout with each policy and score it against the logged plays."""
    base = policies[0].models
    worlds = WorldCache(log, half_life, 3600)
    values: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MEASURES} for n in [LOGGED, *(p.name for p in policies)]}
    visits: list[int] = []
    users: list[int] = []
    rebuilt: dict[tuple[int, int, int, int], list[np.ndarray]] = {}
    for lay in layouts(logs, base.catalog):
        R, C = lay.grid.shape
        per_visit = lay.plays / lay.visits
        visits.append(lay.visits)
        users.append(lay.user_id)
        for m, v in score_against_log(lay.grid, lay.grid, per_visit, theta, floor).items():
            values[LOGGED][m].append(v)
        key = (lay.user_id, lay.ts, R, C)
        if key not in rebuilt:  # layouts of one request are adjacent: rebuild its pages once
            rebuilt.clear()
            rebuilt[key] = _rebuild(log, worlds, base, policies, lay.user_id, lay.ts, R, C)
        for p, grid in zip(policies, rebuilt[key]):
            for m, v in score_against_log(grid, lay.grid, per_visit, theta, floor).items():
                values[p.name][m].append(v)
        if progress is not None:
            progress(1)
    return ServedReplay(np.array(visits, dtype=np.int64), values, np.array(users, dtype=np.int64))


def _rebuild(log: EventLog, worlds: WorldCache, base: PageModels, policies: list[ReplayPolicy], uid: int, ts: int, R: int, C: int) -> list[np.ndarray]:
    """Each policy's page for (uid, ts) as an (R, C) grid of catalog indices."""
    user = log.user_state(uid, ts)
    world = worlds.at(ts)
    ctx = RequestContext(user_id=uid, now=ts, rows=R, cols=C)
    prep = prepare_request(user, world, base, ctx)
    grids = []
    for p in policies:
        page = build_page(user, world, p.models, ctx, policy=p.policy, prepared=prep)
        grid = np.full((R, C), -1, dtype=np.int64)
        for r, row in enumerate(page.rows[:R]):
            idx = p.models.catalog.index_of(np.array(row.title_ids[:C], dtype=np.int64))
            grid[r, : idx.size] = idx
        grids.append(grid)
    return grids
