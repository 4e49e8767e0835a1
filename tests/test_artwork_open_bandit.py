"""The Open Bandit sample (ZOZOTOWN): reader, the Thompson-sampling policy's distribution, and a
cross-check of the estimators against the Open Bandit Pipeline (obp) when it is installed, and
against a direct computation always."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artwork.open_bandit import (
    CAMPAIGNS,
    N_ITEMS,
    bts_from_random,
    position_action_dist,
    read_open_bandit,
    read_open_bandit_csv,
)
from artwork.ope import evaluate_policy
from artwork.reward_model import cross_fitted_q
from homepage.errors import HomepageError
from conftest import shared_path

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def obd() -> Path:
    return shared_path("open-bandit-dataset-small")


@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_reader(obd: Path, campaign: str) -> None:
    logs = read_open_bandit(obd, "random", campaign, with_context=True)
    assert len(logs) == 10_000 and logs.n_actions == N_ITEMS[campaign]
    assert set(np.unique(logs.position)) == {0, 1, 2}
    np.testing.assert_allclose(logs.propensity, 1.0 / N_ITEMS[campaign])
    assert logs.context is not None and logs.context.shape == (10_000, 4 + N_ITEMS[campaign])
    assert 0.0 < logs.reward.mean() < 0.02


def test_bts_distribution_is_its_impression_share(obd: Path) -> None:
    bts = read_open_bandit(obd, "bts", "men")
    dist = position_action_dist(bts)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    raw = pd.read_csv(obd / "bts" / "men" / "men.csv", usecols=["item_id", "position"])
    share = raw[raw.position == 2].item_id.value_counts(normalize=True)
    np.testing.assert_allclose(dist[1, share.index.to_numpy()], share.to_numpy())


def test_estimates_match_a_direct_computation(obd: Path) -> None:
    est, observed = bts_from_random(obd, "men", n_boot=50)
    values = {e.estimator: e.value for e in est}
    rnd = pd.read_csv(obd / "random" / "men" / "men.csv", usecols=["item_id", "position", "click"])
    bts = pd.read_csv(obd / "bts" / "men" / "men.csv", usecols=["item_id", "position"])
    share = bts.groupby("position").item_id.value_counts(normalize=True)
    pi_e = np.array([share.get((p, a), 0.0) for p, a in zip(rnd.position, rnd.item_id)])
    w = pi_e * 34
    assert values["ips"] == pytest.approx((w * rnd.click).mean())
    assert values["snips"] == pytest.approx((w * rnd.click).sum() / w.sum())
    assert observed == pytest.approx(pd.read_csv(obd / "bts" / "men" / "men.csv", usecols=["click"]).click.mean())
    for e in est:
        assert e.low <= e.value <= e.high


def test_cross_check_with_obp(obd: Path) -> None:
    """Same data, same target, same reward model: obp's IPW, SNIPW, DR and Replay give our numbers."""
    ope = pytest.importorskip(
        "obp.ope",
        reason="obp is not installed; it pins pandas 1.5 and numpy 1.23, so it is no dependency: the README (Artwork) says how to run this cross-check",
    )
    rnd = read_open_bandit(obd, "random", "women")
    bts = read_open_bandit(obd, "bts", "women")
    table = position_action_dist(bts)  # (3, K)
    dist = table[rnd.position]
    q = cross_fitted_q(rnd)
    ours = {e.estimator: e.value for e in evaluate_policy(rnd, dist, q, n_boot=0, estimators=("ips", "snips", "dr"))}
    n, k = len(rnd), rnd.n_actions
    dist3 = np.zeros((n, k, 3))
    dist3[:, :, :] = table.T[None, :, :]  # a context-free policy: the same table for every row
    q3 = np.repeat(q[:, :, None], 3, axis=2)
    args = dict(reward=rnd.reward, action=rnd.action, pscore=rnd.propensity, action_dist=dist3, position=rnd.position)
    assert ours["ips"] == pytest.approx(ope.InverseProbabilityWeighting().estimate_policy_value(**args))
    assert ours["snips"] == pytest.approx(ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**args))
    dr = ope.DoublyRobust().estimate_policy_value(estimated_rewards_by_reg_model=q3, **args)
    assert ours["dr"] == pytest.approx(dr)
    # replay: obp's takes a deterministic target; ours agrees on one (each position's most shown item)
    det = np.eye(k)[table.argmax(axis=1)]  # (3, K)
    (rep,) = evaluate_policy(rnd, det[rnd.position], n_boot=0, estimators=("replay",))
    det3 = np.zeros((n, k, 3))
    det3[:, :, :] = det.T[None, :, :]
    theirs = ope.ReplayMethod().estimate_policy_value(reward=rnd.reward, action=rnd.action, action_dist=det3, position=rnd.position)
    assert rep.value == pytest.approx(theirs)


def test_not_an_open_bandit_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text(",a,b\n0,1,2\n")
    with pytest.raises(HomepageError, match="missing column 'item_id'"):
        read_open_bandit_csv(bad)
    with pytest.raises(HomepageError, match="campaign"):
        read_open_bandit(tmp_path, "random", "kids")
