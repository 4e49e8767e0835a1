"""Off-policy evaluation: replay, IPS, self-normalised IPS and doubly robust, with bootstrap intervals.

A target policy is given as its action probabilities for every logged row,
``action_dist`` of shape (n, n_actions) (rows sum to 1; zero outside a row's choice set).
Every estimator here is a ratio of two sums over logged rows, sum(num) / sum(den), so
one bootstrap over rows serves all of them with a single matrix product per replicate.

- replay (Li et al. 2011): draw the target's action for each logged row; keep the row
  when it equals the logged action (and, when the logging policy was not uniform over
  a fixed arm set, with probability min propensity / propensity, which is rejection
  sampling); the estimate is the mean reward of the kept rows. For a deterministic
  target on uniform logs this is exactly the classic replay (and obp's ``ReplayMethod``).
- ips: mean of w * r, with w = pi_e(a|x) / pi_b(a|x).
- snips: sum(w * r) / sum(w).
- dr: mean of sum_a pi_e(a|x) q(x, a) + w * (r - q(x, a_logged)), with a reward model q.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from artwork.feedback import LoggedFeedback
from homepage.errors import HomepageError

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimator's estimate of a policy's mean reward, with a bootstrap interval."""

    estimator: str
    value: float
    low: float
    high: float
    n: int  # logged rows used
    support: float  # replay: rows kept (mean over runs); importance estimators: effective sample size of the weights


def check_action_dist(action_dist: np.ndarray, logs: LoggedFeedback) -> np.ndarray:
    """``action_dist`` as float64 (n, n_actions), or a HomepageError naming what is wrong."""
    d = np.asarray(action_dist, dtype=np.float64)
    if d.ndim != 2 or d.shape != (len(logs), logs.n_actions):
        raise HomepageError(f"action_dist: shape {d.shape}, expected ({len(logs)}, {logs.n_actions})")
    if (d < -1e-12).any():
        raise HomepageError("action_dist: negative probability")
    s = d.sum(axis=1)
    bad = np.abs(s - 1.0) > 1e-6
    if bad.any():
        raise HomepageError(f"action_dist: row {int(np.argmax(bad))} sums to {s[bad][0]:.6g}, not 1")
    return d


def replay_accept(logs: LoggedFeedback, action_dist: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows kept by one run of Li et al.'s replay: the target's sampled action equals the logged one (bool (n,))."""
    rng = np.random.default_rng(seed)
    n = len(logs)
    u = rng.random(n)
    cdf = np.cumsum(action_dist, axis=1)
    cdf[:, -1] = np.inf  # guard against rounding: every draw lands on some arm
    drawn = (cdf <= u[:, None]).sum(axis=1)
    keep = drawn == logs.action
    # rejection step: with non-uniform logging, keep a row with prob p_min / p so the kept
    # rows look as if logged uniformly; a no-op when every propensity is equal
    p = logs.propensity
    ratio = p.min() / p
    if not np.allclose(ratio, 1.0):
        keep &= rng.random(n) < ratio
    return keep


def estimator_terms(
    logs: LoggedFeedback,
    action_dist: np.ndarray,
    q_hat: np.ndarray | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
    seed: int = 0,
    replay_runs: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row numerators and denominators (E, n) of each estimator, and each one's support (E,).

    ``replay_runs`` > 1 averages the kept-row indicator over independent replay runs
    (a stochastic target's draws are the only randomness averaged; a deterministic target
    gives the same rows every run).
    """
    d = check_action_dist(action_dist, logs)
    n = len(logs)
    rows = np.arange(n)
    r = logs.reward
    pi_e = d[rows, logs.action]
    w = pi_e / logs.propensity
    ess = float(w.sum() ** 2 / max((w**2).sum(), 1e-300))
    ones = np.ones(n)
    num, den, support = [], [], []
    for name in estimators:
        if name == "replay":
            keep = np.mean([replay_accept(logs, d, seed + k) for k in range(replay_runs)], axis=0)
            num.append(keep * r)
            den.append(keep)
            support.append(float(keep.sum()))
        elif name == "ips":
            num.append(w * r)
            den.append(ones)
            support.append(ess)
        elif name == "snips":
            num.append(w * r)
            den.append(w)
            support.append(ess)
        elif name == "dr":
            if q_hat is None:
                raise HomepageError("dr: needs a reward model (q_hat)")
            q = np.asarray(q_hat, dtype=np.float64)
            if q.shape != d.shape:
                raise HomepageError(f"q_hat: shape {q.shape}, expected {d.shape}")
            num.append((d * q).sum(axis=1) + w * (r - q[rows, logs.action]))
            den.append(ones)
            support.append(ess)
        else:
            raise HomepageError(f"estimator: unknown {name!r} (choose from {', '.join(ESTIMATORS)})")
    return np.vstack(num), np.vstack(den), np.asarray(support)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def evaluate_policy(
    logs: LoggedFeedback,
    action_dist: np.ndarray,
    q_hat: np.ndarray | None = None,
    estimators: tuple[str, ...] = ESTIMATORS,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    replay_runs: int = 1,
    groups: np.ndarray | None = None,
) -> tuple[Estimate, ...]:
    """Each estimator's estimate of the target policy's mean reward, with a percentile bootstrap interval.

    The bootstrap resamples logged rows (the replay draws are kept fixed), so the interval
    covers the logging noise, which is what changes if the logs were collected again. With
    ``groups`` (one label per row, e.g. the user) it resamples whole groups instead: served
    logs repeat a user's variant on every page of a stability period, and resampling those
    rows one by one makes the interval too narrow.
    """
    if len(logs) == 0:
        raise HomepageError("logs: no rows to evaluate")
    if "dr" in estimators and q_hat is None:
        estimators = tuple(e for e in estimators if e != "dr")
    num, den, support = estimator_terms(logs, action_dist, q_hat, estimators, seed, replay_runs)
    point = _ratio(num.sum(axis=1), den.sum(axis=1))
    rng = np.random.default_rng(seed + 1)
    n = len(logs)
    if groups is None:
        member = np.arange(n)
    else:
        if len(groups) != n:
            raise HomepageError(f"groups: {len(groups)} labels for {n} rows")
        member = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_units = int(member.max()) + 1
    boots = np.empty((n_boot, len(estimators)))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(np.float64)[member]
        # einsum, not matmul: BLAS gemv on a (1, n) matrix is pathologically slow on a busy machine
        boots[b] = _ratio(np.einsum("en,n->e", num, counts), np.einsum("en,n->e", den, counts))
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():  # an estimator with no kept row has no interval: NaN, without numpy's warning
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        low = np.nanquantile(boots, tail, axis=0) if n_boot else point
        high = np.nanquantile(boots, 1.0 - tail, axis=0) if n_boot else point
    return tuple(
        Estimate(name, float(point[e]), float(low[e]), float(high[e]), n, float(support[e]))
        for e, name in enumerate(estimators)
    )
