"""Reader for the Open Bandit Dataset sample (ZOZOTOWN): ``<root>/<policy>/<campaign>/<campaign>.csv``.

Each CSV row is one item shown at one of three positions, with the click and the logging
policy's propensity. Positions are turned 0-based; user features and affinities are
kept as the context (hashed user features become integer codes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from artwork.feedback import LoggedFeedback
from artwork.ope import Estimate, evaluate_policy
from artwork.reward_model import cross_fitted_q
from homepage.errors import HomepageError

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_ITEMS = {"all": 80, "men": 34, "women": 46}
OBD_COLUMNS = ("item_id", "position", "click", "propensity_score")


def is_open_bandit_csv(path: Path) -> bool:
    """Whether ``path`` looks like an Open Bandit log file (by its header)."""
    if Path(path).suffix.lower() != ".csv":
        return False
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    return all(c in header for c in OBD_COLUMNS)


def read_open_bandit_csv(path: Path, n_items: int | None = None, with_context: bool = True) -> LoggedFeedback:
    """One log file as :class:`LoggedFeedback`; ``n_items`` defaults to the affinity column count."""
    path = Path(path)
    if not path.exists():
        raise HomepageError(f"{path}: Open Bandit log file not found")
    df = pd.read_csv(path, index_col=0)
    missing = [c for c in OBD_COLUMNS if c not in df.columns]
    if missing:
        raise HomepageError(f"{path}: missing column {missing[0]!r}; not an Open Bandit log")
    aff = [c for c in df.columns if c.startswith("user-item_affinity_")]
    k = int(n_items if n_items is not None else (len(aff) or df["item_id"].max() + 1))
    pos = df["position"].to_numpy(np.int64) - 1
    if len(df) and (pos.min() < 0 or pos.max() > 2):
        row = int(np.argmax((pos < 0) | (pos > 2)))
        raise HomepageError(f"{path}: line {row + 2}: position {pos[row] + 1} is not 1, 2 or 3")
    ctx = None
    if with_context:
        user = [c for c in df.columns if c.startswith("user_feature_")]
        codes = [pd.factorize(df[c])[0].astype(np.float32)[:, None] for c in user]
        ctx = np.hstack(codes + [df[aff].to_numpy(np.float32)]) if codes or aff else None
    return LoggedFeedback(
        action=df["item_id"].to_numpy(np.int64),
        reward=df["click"].to_numpy(np.float64),
        propensity=df["propensity_score"].to_numpy(np.float64),
        n_actions=k,
        position=pos,
        context=ctx,
    )


def read_open_bandit(root: Path, policy: str, campaign: str, with_context: bool = False) -> LoggedFeedback:
    """The log of ``policy`` (random or bts) on ``campaign`` (all, men or women) under ``root``."""
    if policy not in POLICIES:
        raise HomepageError(f"policy: {policy!r} is not one of {', '.join(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise HomepageError(f"campaign: {campaign!r} is not one of {', '.join(CAMPAIGNS)}")
    return read_open_bandit_csv(Path(root) / policy / campaign / f"{campaign}.csv", N_ITEMS[campaign], with_context)


def position_action_dist(logs: LoggedFeedback) -> np.ndarray:
    """A context-free policy's action distribution per position (n_positions, n_actions), read from its own log.

    It is the share of each item among the impressions at each position. The Thompson
    sampler's logged propensities change through the week as it updates, so this share is
    the time-average of its per-impression distribution; averaging the logged propensities
    instead would over-weight popular items (they are logged more often when their
    propensity is high).
    """
    pos = logs.position if logs.position is not None else np.zeros(len(logs), np.int64)
    counts = np.zeros((logs.n_positions, logs.n_actions))
    np.add.at(counts, (pos, logs.action), 1.0)
    return counts / counts.sum(axis=1, keepdims=True)


def bts_from_random(
    root: Path, campaign: str, n_boot: int = 200, seed: int = 0, replay_runs: int = 20
) -> tuple[tuple[Estimate, ...], float]:
    """Estimate the Thompson-sampling policy's click rate from the uniform-random policy's log.

    Returns the estimates (replay, ips, snips, dr with the cross-fitted tabular reward
    model) and the click rate observed in the Thompson-sampling policy's own log.
    """
    random_logs = read_open_bandit(root, "random", campaign)
    bts_logs = read_open_bandit(root, "bts", campaign)
    dist = position_action_dist(bts_logs)[random_logs.position]
    q = cross_fitted_q(random_logs, seed=seed)
    est = evaluate_policy(random_logs, dist, q, n_boot=n_boot, seed=seed, replay_runs=replay_runs)
    return est, float(bts_logs.reward.mean())
