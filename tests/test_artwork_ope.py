"""Off-policy estimators: known-answer bandits, direct formulas, intervals, bad input, the Parquet log format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artwork.feedback import LoggedFeedback, read_feedback, write_feedback
from artwork.ope import ESTIMATORS, evaluate_policy, estimator_terms
from artwork.reward_model import cross_fitted_q
from homepage.errors import HomepageError


def bandit_logs(n: int, seed: int = 0, uniform: bool = True) -> tuple[LoggedFeedback, np.ndarray]:
    """A 5-arm, 2-position bandit with known mean rewards mu (2, 5); logging uniform or skewed."""
    rng = np.random.default_rng(seed)
    mu = np.array([[0.05, 0.10, 0.20, 0.30, 0.15], [0.04, 0.08, 0.16, 0.24, 0.12]])
    pos = rng.integers(0, 2, n)
    if uniform:
        pb = np.full((n, 5), 0.2)
    else:
        pb = np.tile(np.array([0.4, 0.3, 0.1, 0.1, 0.1]), (n, 1))
    action = (np.cumsum(pb, axis=1) < rng.random(n)[:, None]).sum(axis=1)
    reward = (rng.random(n) < mu[pos, action]).astype(np.float64)
    logs = LoggedFeedback(action, reward, pb[np.arange(n), action], 5, position=pos)
    return logs, mu


def truth(mu: np.ndarray, dist: np.ndarray, pos: np.ndarray) -> float:
    return float((dist * mu[pos]).sum(axis=1).mean())


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
def test_estimators_recover_the_known_value(uniform: bool, kind: str) -> None:
    logs, mu = bandit_logs(30_000, seed=1, uniform=uniform)
    n = len(logs)
    if kind == "deterministic":
        dist = np.zeros((n, 5))
        dist[:, 3] = 1.0
    else:
        dist = np.tile(np.array([0.1, 0.1, 0.3, 0.4, 0.1]), (n, 1))
    v = truth(mu, dist, logs.position)
    est = evaluate_policy(logs, dist, cross_fitted_q(logs), n_boot=60, replay_runs=5)
    assert [e.estimator for e in est] == list(ESTIMATORS)
    for e in est:
        # within twice the 95% half-width (a 4-sigma band: fails on bias, not on bad luck) and 8%
        assert abs(e.value - v) <= e.high - e.low and abs(e.value - v) / v < 0.08, (e, v)
        assert e.low <= e.value <= e.high
    # and the interval of at least the importance estimators covers the truth
    assert sum(e.low <= v <= e.high for e in est) >= 3


def test_formulas_match_a_direct_computation() -> None:
    logs, _ = bandit_logs(2_000, seed=2, uniform=False)
    rng = np.random.default_rng(3)
    dist = rng.dirichlet(np.ones(5), len(logs))
    q = rng.random((len(logs), 5))
    est = {e.estimator: e.value for e in evaluate_policy(logs, dist, q, n_boot=0)}
    r, a, p = logs.reward, logs.action, logs.propensity
    w = dist[np.arange(len(r)), a] / p
    assert est["ips"] == pytest.approx(np.mean(w * r))
    assert est["snips"] == pytest.approx(np.sum(w * r) / np.sum(w))
    dr = np.mean([dist[i] @ q[i] + w[i] * (r[i] - q[i, a[i]]) for i in range(len(r))])
    assert est["dr"] == pytest.approx(dr)


def test_replay_of_a_deterministic_policy_is_the_mean_reward_of_matching_rows() -> None:
    logs, _ = bandit_logs(5_000, seed=4)
    target = np.where(logs.position == 0, 2, 3)
    dist = np.eye(5)[target]
    (e,) = evaluate_policy(logs, dist, estimators=("replay",), n_boot=0)
    match = logs.action == target
    assert e.value == pytest.approx(logs.reward[match].mean())
    assert e.support == match.sum()


def test_dr_with_the_true_reward_model_is_tighter_than_ips() -> None:
    logs, mu = bandit_logs(20_000, seed=5)
    dist = np.tile(np.array([0.0, 0.0, 0.5, 0.5, 0.0]), (len(logs), 1))
    est = {e.estimator: e for e in evaluate_policy(logs, dist, mu[logs.position], n_boot=200)}
    assert est["dr"].high - est["dr"].low < est["ips"].high - est["ips"].low


def test_intervals_shrink_with_more_logs() -> None:
    widths = []
    for n in (2_000, 32_000):
        logs, _ = bandit_logs(n, seed=6)
        dist = np.tile(np.full(5, 0.2), (n, 1))
        (e,) = evaluate_policy(logs, dist, estimators=("ips",), n_boot=200)
        widths.append(e.high - e.low)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(
    ("dist", "estimators", "message"),
    [
        (np.full((10, 4), 0.25), ESTIMATORS, "action_dist: shape"),
        (np.full((10, 5), 0.3), ESTIMATORS, "sums to"),
        (np.full((10, 5), 0.2), ("ipw",), "unknown 'ipw'"),
    ],
)
def test_bad_input_is_named(dist: np.ndarray, estimators: tuple[str, ...], message: str) -> None:
    logs, _ = bandit_logs(10)
    with pytest.raises(HomepageError, match=message):
        estimator_terms(logs, dist, np.zeros((10, 5)), estimators)


def test_feedback_parquet_round_trip(tmp_path: Path) -> None:
    logs, _ = bandit_logs(100, seed=7)
    logs = LoggedFeedback(
        logs.action, logs.reward, logs.propensity, 7, position=logs.position,
        context=np.random.default_rng(0).random((100, 3)).astype(np.float32),
    )
    write_feedback(logs, tmp_path / "logs.parquet")
    back = read_feedback(tmp_path / "logs.parquet")
    assert back.n_actions == 7
    np.testing.assert_array_equal(back.action, logs.action)
    np.testing.assert_array_equal(back.position, logs.position)
    np.testing.assert_allclose(back.context, logs.context)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"action": [0], "reward": [1.0]}), "missing column 'propensity'"),
        (pd.DataFrame({"action": [0, 1], "reward": [1.0, 0.0], "propensity": [0.5, 0.0]}), r"row 1: propensity 0.0"),
        (pd.DataFrame({"action": [0, -1], "reward": [1.0, 0.0], "propensity": [0.5, 0.5]}), "row 1: action -1"),
        (pd.DataFrame({"action": [0, 1], "reward": [1.0, None], "propensity": [0.5, 0.5]}), "row 1: column 'reward' is empty"),
    ],
)
def test_bad_log_files_are_named(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(HomepageError, match=message) as info:
        read_feedback(path)
    assert "bad.parquet" in str(info.value)


def test_resampling_groups_treats_a_groups_rows_as_one_draw() -> None:
    """Each user's row logged k times (a variant kept for a stability period): resampling users gives
    exactly the interval of the rows logged once; resampling rows gives one about sqrt(k) too narrow."""
    logs, _ = bandit_logs(2_000, seed=3, uniform=False)
    k = 9
    rep = np.repeat(np.arange(len(logs)), k)
    copies = logs.take(rep)
    dist = np.tile(np.array([0.0, 0.0, 0.0, 1.0, 0.0]), (len(logs), 1))
    est = ("ips", "snips")
    once = evaluate_policy(logs, dist, estimators=est, n_boot=200, seed=5)
    grouped = evaluate_policy(copies, dist[rep], estimators=est, n_boot=200, seed=5, groups=rep)
    by_row = evaluate_policy(copies, dist[rep], estimators=est, n_boot=200, seed=5)
    for a, g, r in zip(once, grouped, by_row):
        assert (g.value, g.low, g.high) == pytest.approx((a.value, a.low, a.high), rel=1e-12)
        assert (r.high - r.low) < 0.5 * (g.high - g.low)
    with pytest.raises(HomepageError, match="groups: 3 labels"):
        evaluate_policy(logs, dist, estimators=est, n_boot=10, groups=np.arange(3))
