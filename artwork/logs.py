"""Logged artwork feedback from the browsing simulator, with the exact truth of any policy.

Each impression: a user drawn uniformly from the world, a title drawn from that user's
homepage candidates (the ``candidates`` titles with the highest base attraction, as a
personalised page would show them), a variant drawn uniformly from the title's variants
(propensity 1 / K), and a play drawn from Bernoulli(attraction). Examination is left out:
an impression here is an examined slot, which is what artwork can influence.

Because the simulator knows every variant's attraction for every logged (user, title),
the true play rate of a policy on these rows is exact: the mean over rows of
sum_k pi(k | row) attraction(user, title, k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from artwork.feedback import LoggedFeedback
from fixtures.simulator import BrowsingSimulator
from homepage.replaced_file import replaced


@dataclass(frozen=True, eq=False)
class SimulatedLogs:
    """Logs of a uniform-random artwork policy and each row's true attraction of every variant."""

    logs: LoggedFeedback  # user_id holds the user *index* in the world; title_idx the catalog index
    attraction: np.ndarray  # float64 (n, K): true P(play) of each variant of the row's title, 0 on padding

    def true_value(self, action_dist: np.ndarray) -> float:
        """Exact play rate of a policy given as action probabilities (n, K) on these rows."""
        return float((action_dist * self.attraction).sum(axis=1).mean())

    def take(self, rows: np.ndarray) -> SimulatedLogs:
        return SimulatedLogs(self.logs.take(rows), self.attraction[rows])


def homepage_candidates(sim: BrowsingSimulator, n_candidates: int, chunk: int = 256) -> np.ndarray:
    """(n_users, n_candidates) each user's titles with the highest base attraction, best first."""
    t = sim.truth
    n_c = min(n_candidates, t.n_titles)
    out = np.empty((t.n_users, n_c), np.int64)
    titles = np.arange(t.n_titles)
    for lo in range(0, t.n_users, chunk):
        users = np.arange(lo, min(lo + chunk, t.n_users))
        logit = sim.base_logit(users[:, None], titles[None, :])
        top = np.argpartition(-logit, n_c - 1, axis=1)[:, :n_c]
        order = np.argsort(-np.take_along_axis(logit, top, axis=1), axis=1)
        out[users] = np.take_along_axis(top, order, axis=1)
    return out


def simulate_uniform_logs(
    sim: BrowsingSimulator, n: int, seed: int = 0, n_candidates: int = 100
) -> SimulatedLogs:
    """``n`` impressions of the uniform-random artwork policy (see the module docstring)."""
    rng = np.random.default_rng(seed)
    t = sim.truth
    cand = homepage_candidates(sim, n_candidates)
    user = rng.integers(0, t.n_users, n)
    title = cand[user, rng.integers(0, cand.shape[1], n)]
    variants = t.title_variants[title]  # (n, K) truth variant indices, -1 padding
    k = (variants >= 0).sum(axis=1)
    action = np.minimum((rng.random(n) * k).astype(np.int64), k - 1)
    att = np.where(variants >= 0, sim.attraction(user[:, None], title[:, None], variants), 0.0)
    reward = (rng.random(n) < att[np.arange(n), action]).astype(np.float64)
    logs = LoggedFeedback(
        action=action,
        reward=reward,
        propensity=1.0 / k,
        n_actions=variants.shape[1],
        title_idx=title,
        user_id=user,
        n_choices=k,
    )
    return SimulatedLogs(logs, att)


def oracle_dist(sim: BrowsingSimulator, logs: LoggedFeedback) -> np.ndarray:
    """The contextual oracle's action distribution: each (user, title)'s best variant (n, K)."""
    best = sim.best_variants(logs.user_id, logs.title_idx)
    pos = np.argmax(sim.truth.title_variants[logs.title_idx] == best[:, None], axis=1)
    return np.eye(logs.n_actions)[pos]


def write_simulated_feedback(sim: BrowsingSimulator, n: int, path: Path, seed: int = 0) -> SimulatedLogs:
    """Simulate ``n`` uniform-random impressions and write them as artwork feedback Parquet (real user ids)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sim_logs = simulate_uniform_logs(sim, n, seed=seed)
    table = pa.Table.from_pandas(feedback_frame(sim_logs, sim), preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"artwork.n_actions": str(sim_logs.logs.n_actions).encode()}
    with replaced(Path(path)) as tmp:  # a failed write leaves no truncated log for `artwork train` to read
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return sim_logs


def feedback_frame(sim_logs: SimulatedLogs, sim: BrowsingSimulator, ts: int | None = None) -> pd.DataFrame:
    """The logs as an artwork feedback table keyed by real user ids, every impression at ``ts``.

    ``ts`` defaults to the end of the world's history, the time the simulator's truth is
    evaluated at; ``homepage artwork train`` builds each user's context as of then.
    """
    t = sim.truth
    frame = sim_logs.logs.to_frame()
    frame["user_id"] = t.user_ids[sim_logs.logs.user_id].astype(np.int64)
    frame["ts"] = np.int64(t.period_end if ts is None else ts)
    return frame
