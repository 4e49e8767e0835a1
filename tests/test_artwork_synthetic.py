"""The synthetic world as ground truth: every estimator close to the simulator's exact play rate,
policies ranked correctly, the contextual policy beating the non-contextual one; and the
``homepage artwork evaluate`` command on logs written in the documented Parquet format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from artwork.experiment import POLICIES, run_synthetic_experiment, world_contexts
from artwork.feedback import write_feedback
from artwork.logs import simulate_uniform_logs
from fixtures.simulator import BrowsingSimulator, WorldTruth
from fixtures.world import WorldParams, generate_world, write_world
from homepage.catalog import Catalog
from homepage.cli import _register, app
from homepage.dataset import load_dataset
from homepage.eventlog import EventLog


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artwork") / "world"
    write_world(generate_world(WorldParams(n_users=200, n_titles=150, seed=3)), out)
    return out


@pytest.fixture(scope="module")
def world(world_dir: Path) -> tuple[BrowsingSimulator, Catalog, np.ndarray]:
    out = world_dir
    ds = load_dataset(out)
    truth = WorldTruth.load(out)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    ctx = world_contexts(EventLog.from_frame(ds.events, catalog, ds.users), catalog, truth.user_ids, truth.period_end)
    return BrowsingSimulator(truth), catalog, ctx


def test_estimators_track_the_truth_and_rank_the_policies(world: tuple[BrowsingSimulator, Catalog, np.ndarray]) -> None:
    sim, catalog, ctx = world
    res = run_synthetic_experiment(sim, catalog, ctx, n_eval=100_000, n_train=30_000, seed=1, n_boot=50)
    truth = res.truth
    assert truth["random"] < truth["non_contextual"] < truth["contextual"] <= res.oracle
    assert truth["contextual"] >= 1.05 * truth["non_contextual"]
    for name in ("replay", "ips", "snips", "dr"):
        est = {p: next(e for e in res.estimates[p] if e.estimator == name) for p in POLICIES}
        for p in POLICIES:
            e = est[p]
            # within twice the 95% half-width: a 4-sigma band, so this fails on bias, not on bad luck
            assert abs(e.value - truth[p]) <= (e.high - e.low), (name, p, e, truth[p])
            assert abs(e.value - truth[p]) / truth[p] < 0.1, (name, p, e.value, truth[p])
        ranked = sorted(POLICIES, key=lambda p: est[p].value)
        assert ranked == ["random", "non_contextual", "contextual"], name


def test_uniform_logs_have_exact_propensities(world: tuple[BrowsingSimulator, Catalog, np.ndarray]) -> None:
    sim, _, _ = world
    s = simulate_uniform_logs(sim, 20_000, seed=2)
    logs = s.logs
    np.testing.assert_allclose(logs.propensity, 1.0 / logs.n_choices)
    # each variant position is shown about equally often among titles with 3+ variants
    shares = np.bincount(logs.action[logs.n_choices >= 3], minlength=3)[:3]
    assert shares.min() / shares.max() > 0.9
    # observed play rate agrees with the exact truth of the logging policy
    probs = (np.arange(logs.n_actions)[None, :] < logs.n_choices[:, None]) / logs.n_choices[:, None]
    assert logs.reward.mean() == pytest.approx(s.true_value(probs), rel=0.05)


def test_evaluate_command_on_parquet_logs(world: tuple[BrowsingSimulator, Catalog, np.ndarray], tmp_path: Path) -> None:
    sim, _, _ = world
    s = simulate_uniform_logs(sim, 5_000, seed=4)
    write_feedback(s.logs, tmp_path / "logs.parquet")
    _register()
    result = CliRunner().invoke(app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", "uniform", "--json", "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out["estimates"]) == {"replay", "ips", "snips", "dr"}
    # the uniform policy is the logging policy: IPS reduces to the logged play rate
    assert out["estimates"]["ips"]["estimate"] == pytest.approx(s.logs.reward.mean())
    for v in out["estimates"].values():
        assert v["low"] <= v["estimate"] <= v["high"]
    table = CliRunner().invoke(app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", "uniform", "--n-boot", "20"])
    assert table.exit_code == 0 and "95%" in table.output and "snips" in table.output
    # the bootstrap resamples users (the logs carry user ids), or rows when asked
    assert out["bootstrap_unit"] == "users" and "bootstrap over users" in table.output
    assert out["unsupported"] == [] and "warning" not in table.output
    by_rows = CliRunner().invoke(
        app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", "uniform", "--json", "--n-boot", "50", "--resample", "rows"]
    )
    assert by_rows.exit_code == 0 and json.loads(by_rows.output)["bootstrap_unit"] == "rows"
    bad = CliRunner().invoke(app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", "uniform", "--resample", "pages"])
    assert bad.exit_code == 2 and "--resample" in bad.output


def test_evaluate_command_with_a_saved_model(
    world: tuple[BrowsingSimulator, Catalog, np.ndarray], world_dir: Path, tmp_path: Path
) -> None:
    """Train, save, and evaluate the model from the command line: the CLI agrees with the library."""
    from artwork.feedback import LoggedFeedback
    from artwork.ope import evaluate_policy
    from artwork.selector import ArtworkSelector

    sim, catalog, ctx = world
    train = simulate_uniform_logs(sim, 20_000, seed=5).logs
    sel = ArtworkSelector(epsilon=0.1).fit(train, ctx, catalog, context_row=train.user_id)
    sel.save(tmp_path / "model")
    ev = simulate_uniform_logs(sim, 4_000, seed=6).logs
    ev = LoggedFeedback(
        ev.action, ev.reward, ev.propensity, ev.n_actions, title_idx=ev.title_idx, user_id=ev.user_id,
        n_choices=ev.n_choices, context=ctx[ev.user_id],
    )
    write_feedback(ev, tmp_path / "ev.parquet")
    ds_dir = world_dir
    _register()
    result = CliRunner().invoke(
        app,
        ["artwork", "evaluate", str(tmp_path / "ev.parquet"), "--policy", f"model:{tmp_path / 'model'}@0.0",
         "--dataset", str(ds_dir), "--json", "--n-boot", "0"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)["estimates"]
    dist = sel.action_probabilities(ctx, ev.title_idx, ev.user_id, epsilon=0.0, user_ids=ev.user_id)
    (ips,) = evaluate_policy(ev, dist, estimators=("ips",), n_boot=0)
    assert out["ips"]["estimate"] == pytest.approx(ips.value)


def test_evaluate_json_is_strict_when_no_logged_row_supports_the_policy(tmp_path: Path) -> None:
    """A target whose action was never logged: replay keeps no row and SNIPS divides by zero. ``--json``
    printed a bare ``NaN`` for those, which ``jq`` and strict parsers reject; now they are null."""
    import pandas as pd

    from artwork.feedback import LoggedFeedback

    n = 200
    rng = np.random.default_rng(0)
    action = np.zeros(n, np.int64)
    action[:5] = 1  # arm 2 is never shown
    logs = LoggedFeedback(action, (rng.random(n) < 0.3).astype(np.float64), np.where(action == 0, 0.95, 0.05), 3)
    write_feedback(logs, tmp_path / "logs.parquet")
    pd.DataFrame({f"p_{j}": np.full(n, float(j == 2)) for j in range(3)}).to_parquet(tmp_path / "arm2.parquet")
    _register()
    result = CliRunner().invoke(
        app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", f"probs:{tmp_path / 'arm2.parquet'}", "--json", "--n-boot", "20"]
    )
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    whole = json.loads(result.output, parse_constant=refuse)
    out = whole["estimates"]
    assert out["replay"]["estimate"] is None and out["snips"]["estimate"] is None
    assert out["ips"]["estimate"] == 0.0 and out["replay"]["support"] == 0.0
    # IPS's 0 [0, 0] looks like a confident answer: the output names every estimator without support
    assert set(whole["unsupported"]) == {"replay", "ips", "snips", "dr"}
    table = CliRunner().invoke(
        app, ["artwork", "evaluate", str(tmp_path / "logs.parquet"), "--policy", f"probs:{tmp_path / 'arm2.parquet'}", "--n-boot", "20"]
    )
    assert table.exit_code == 0 and "no logged row supports this policy for replay, ips, snips, dr" in table.output
