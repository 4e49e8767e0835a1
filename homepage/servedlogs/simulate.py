"""Served logs from the synthetic world: pages built by a logging policy, a share of them
randomised, impressions and plays sampled by the browsing simulator.

Randomised pages (a ``random_share`` of them) show the logging policy's rows in a uniformly
random order with the titles shuffled within each row (``shuffle_page``): what is shown no
longer depends on where, so on those pages a slot's click-through rate is proportional to
its examination probability, which ``homepage.servedlogs.examination`` estimates. A built
page can be served to several visits (the page cache), each sampled independently; a
randomised page is reshuffled for every visit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fixtures.simulator import BrowsingSimulator
from homepage.domain import PlacedRow, RequestContext
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page, page_id_for, prepare_request
from homepage.replay.run import WorldCache
from homepage.servedlogs.schema import COLUMNS, RANDOM_POLICY


@dataclass(frozen=True)
class LogSpec:
    """What to simulate: how many pages, when, how big, and how much randomisation."""

    n_pages: int = 3000
    start: int = 0  # page times drawn uniformly from [start, end]
    end: int = 0
    random_share: float = 0.3
    policy: str = "row-ranking"
    rows: int = 10
    cols: int = 10
    half_life: float = 7 * 86_400.0
    seed: int = 0
    visits_per_page: int = 1  # visits served the same (cached) page, each sampled independently


def shuffle_page(placed: list[PlacedRow], rng: np.random.Generator) -> tuple[list[PlacedRow], list[float]]:
    """The randomised intervention: the same rows in a uniformly random order, titles shuffled within each row.

    Content stays what the logging policy chose, so it is independent of the slot it lands
    in; the row propensity of stage s is exactly 1 / (rows - s).
    """
    order = rng.permutation(len(placed))
    out = []
    for stage, k in enumerate(order):
        r = placed[k]
        perm = rng.permutation(len(r.title_ids))
        pick = lambda xs: tuple(xs[j] for j in perm) if len(xs) == len(perm) else xs  # noqa: E731
        out.append(replace(r, title_ids=pick(r.title_ids), scores=pick(r.scores), variant_ids=pick(r.variant_ids), propensities=pick(r.propensities), stage=stage))
    return out, [1.0 / (len(placed) - s) for s in range(len(placed))]


def simulate_served_logs(
    sim: BrowsingSimulator,
    log: EventLog,
    models: PageModels,
    users: np.ndarray,
    spec: LogSpec,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """One page per draw of (user, time); returns impressions in ``SERVED_LOG_SCHEMA`` column order."""
    rng = np.random.default_rng(spec.seed)
    worlds = WorldCache(log, spec.half_life, 86_400)
    users = np.asarray(users, dtype=np.int64)
    page_users = rng.choice(users, size=spec.n_pages, replace=True)
    times = np.sort(rng.integers(spec.start, spec.end + 1, size=spec.n_pages))
    randomised = rng.random(spec.n_pages) < spec.random_share
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for i in range(spec.n_pages):
        uid, t = int(page_users[i]), int(times[i])
        user = log.user_state(uid, t)
        world = worlds.at(t)
        ctx = RequestContext(user_id=uid, now=t, rows=spec.rows, cols=spec.cols)
        prep = prepare_request(user, world, models, ctx)
        page = build_page(user, world, models, ctx, policy=spec.policy, prepared=prep)
        if progress is not None:
            progress(1)
        if not page.rows:
            continue
        for v in range(spec.visits_per_page):
            placed, props, policy = list(page.rows), [1.0] * len(page.rows), spec.policy
            if randomised[i]:  # a fresh shuffle per visit: each page's content visits every slot
                placed, props = shuffle_page(placed, rng)
                policy = RANDOM_POLICY
            grid, variants = _grids(placed, spec.cols)
            _, played = sim.sample(uid, grid, variants, rng)
            pid = page_id_for(uid, t, policy, models.version, nonce=f"{i}.{v}")
            _append(cols, played, grid, variants, placed, props, uid, t, policy, pid)
    frame = pd.DataFrame(cols)
    frame["played"] = frame["played"].astype(np.int8)
    frame["row_index"] = frame["row_index"].astype(np.int32)
    frame["col_index"] = frame["col_index"].astype(np.int32)
    return frame


def _grids(placed: list[PlacedRow], cols: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Title ids (-1 empty) and variant ids (None without artwork) of a page as (R, C) grids."""
    grid = np.full((len(placed), cols), -1, dtype=np.int64)
    for r, row in enumerate(placed):
        grid[r, : min(len(row.title_ids), cols)] = row.title_ids[:cols]
    if not any(row.variant_ids for row in placed):
        return grid, None
    variants = np.full(grid.shape, "", dtype=object)
    for r, row in enumerate(placed):
        variants[r, : min(len(row.variant_ids), cols)] = row.variant_ids[:cols]
    return grid, variants


def _append(
    cols: dict[str, list], played: np.ndarray, grid: np.ndarray, variants: np.ndarray | None,
    placed: list[PlacedRow], props: list[float], uid: int, t: int, policy: str, pid: str,
) -> None:
    """Add one visit's impressions (every filled slot) to the column lists."""
    rr, cc = np.nonzero(grid >= 0)
    n = rr.size
    cols["page_id"] += [pid] * n
    cols["user_id"] += [uid] * n
    cols["ts"] += [t] * n
    cols["policy"] += [policy] * n
    cols["row_index"] += rr.tolist()
    cols["col_index"] += cc.tolist()
    cols["row_id"] += [placed[r].row_id for r in rr]
    cols["ranker"] += [placed[r].ranker for r in rr]
    cols["title_id"] += grid[rr, cc].tolist()
    cols["variant_id"] += [None if variants is None else (variants[r, c] or None) for r, c in zip(rr, cc)]
    cols["row_propensity"] += [props[r] for r in rr]
    cols["artwork_propensity"] += [
        (placed[r].propensities[c] if c < len(placed[r].propensities) else None) for r, c in zip(rr, cc)
    ]
    cols["played"] += played[rr, cc].astype(np.int8).tolist()
