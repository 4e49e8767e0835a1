"""Served logs on a small synthetic world: the Parquet format and its validation, examination
estimated from randomised pages against the simulator's truth, the served order replayed
exactly through the page loop, corrected labels, the oracle greedy page, the replay
estimator's identities, and the commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures.simulator import BrowsingSimulator, WorldTruth
from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import ModelBundle, train_bundle
from homepage.cli import _register, app
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.page import PageModels
from homepage.servedlogs.examination import estimate_examination
from homepage.servedlogs.experiment import with_page_model
from homepage.servedlogs.layouts import layouts
from homepage.servedlogs.quality import ORACLE, PolicyEntry, true_expected_plays
from homepage.servedlogs.replay import score_against_log
from homepage.servedlogs.schema import COLUMNS, read_served_logs, write_served_logs
from homepage.servedlogs.simulate import LogSpec, simulate_served_logs
from homepage.servedlogs.training import served_stage_data, served_stage_data_multi, train_from_served_logs

ROWS, COLS = 5, 6


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelBundle, PageModels, EventLog, BrowsingSimulator]:
    base = tmp_path_factory.mktemp("served")
    out = base / "world"
    write_world(generate_world(WorldParams(n_users=300, n_titles=250, seed=5)), out)
    ds = load_dataset(out)
    bundle = train_bundle(ds, base / "models", PipelineConfig(page=PageConfig(train_model=False)))
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    return out, bundle, PageModels.from_bundle(bundle), log, BrowsingSimulator(WorldTruth.load(out), seed=1)


@pytest.fixture(scope="module")
def logs(world: tuple) -> pd.DataFrame:
    _, bundle, pm, log, sim = world
    spec = LogSpec(n_pages=450, start=bundle.until + 1, end=int(log.last_ts), random_share=0.5, policy="row-ranking", rows=ROWS, cols=COLS, seed=2, visits_per_page=15)
    return simulate_served_logs(sim, log, pm, log.user_ids, spec)


@pytest.fixture(scope="module")
def few_logs(logs: pd.DataFrame) -> pd.DataFrame:
    """The logs of the first 60 built pages (training replays every layout; keep it fast)."""
    keys = logs[["user_id", "ts"]].drop_duplicates().head(60)
    return logs.merge(keys, on=["user_id", "ts"])


def test_log_round_trip_and_validation(logs: pd.DataFrame, world: tuple, tmp_path: Path) -> None:
    assert tuple(logs.columns) == COLUMNS
    path = write_served_logs(logs, tmp_path / "logs.parquet")
    back = read_served_logs(path)
    assert len(back) == len(logs) and int(back["played"].sum()) == int(logs["played"].sum())
    random = back[back["policy"] == "random"]
    # a uniformly random row order: stage s of an R-row page chose among R - s rows
    rows_per_page = random.groupby("page_id")["row_index"].transform("max") + 1
    assert np.allclose(random["row_propensity"], 1.0 / (rows_per_page - random["row_index"]))
    if world[2].artwork is not None:  # the bundle's selector chose the artwork, with its propensity
        assert back["variant_id"].notna().all()
        assert ((back["artwork_propensity"] > 0) & (back["artwork_propensity"] <= 1)).all()
    bad = logs.copy()
    bad.loc[bad.index[3], "played"] = 2
    with pytest.raises(HomepageError, match=r"row 3: played = 2 is out of range"):  # the value, not np.int8(2)
        write_served_logs(bad, tmp_path / "bad.parquet")
    with pytest.raises(HomepageError, match="missing column"):
        write_served_logs(logs.drop(columns=["row_id"]), tmp_path / "bad.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.parquet"]  # no temporary file left


def test_examination_estimate_is_close_to_the_simulator(logs: pd.DataFrame, world: tuple) -> None:
    sim = world[4]
    est = estimate_examination(logs, ROWS, COLS)
    true = sim.examination(ROWS, COLS)
    true = true / true[0, 0]
    assert est.theta[0, 0] == 1.0
    assert np.abs(est.theta - true).max() < 0.12
    # and it decays down the page and along the rows, as the truth does
    assert est.theta[-1, 0] < est.theta[0, 0] and est.theta[0, -1] < est.theta[0, 0]


def test_a_size_beyond_the_randomised_pages_is_refused_only_when_asked(logs: pd.DataFrame) -> None:
    """replay-logs asks for the served pages' size, which randomised pages may not fill: those slots get the prior."""
    est = estimate_examination(logs, ROWS + 1, COLS)
    assert est.theta.shape == (ROWS + 1, COLS) and est.impressions[ROWS].sum() == 0 and (est.theta > 0).all()
    with pytest.raises(HomepageError, match=f"rows {ROWS + 1}: the randomised pages"):
        estimate_examination(logs, ROWS + 1, COLS, strict_size=True)


def test_served_order_is_replayed_and_labels_corrected(few_logs: pd.DataFrame, world: tuple) -> None:
    _, bundle, pm, log, sim = world
    logs = few_logs
    n_layouts = sum(1 for _ in layouts(logs, pm.catalog))
    deterministic = logs[logs["policy"] != "random"]
    # the visits of one deterministic page collapse into one layout; random pages are reshuffled per visit
    assert n_layouts == deterministic.groupby(["user_id", "ts"]).ngroups + logs.loc[logs["policy"] == "random", "page_id"].nunique()
    theta = sim.examination(ROWS, COLS)
    theta = theta / theta[0, 0]
    (corr, raw), rep = served_stage_data_multi(logs, log, pm, [theta, None], bundle.config.half_life_seconds)
    alone, _ = served_stage_data(logs, log, pm, theta, bundle.config.half_life_seconds)
    assert np.array_equal(alone.y, corr.y)
    assert rep.replayed_stages >= 0.9 * n_layouts * 3 and rep.truncated_layouts <= 0.2 * n_layouts
    assert corr.y.max() <= 4 and corr.y.min() >= 0
    # the same plays, re-weighted: positive labels in the same groups' rows, different grades
    assert np.array_equal(corr.groups, raw.groups) and np.array_equal(corr.X, raw.X, equal_nan=True)
    assert np.array_equal(corr.y > 0, raw.y > 0)
    assert not np.array_equal(corr.y, raw.y)


def test_oracle_greedy_page_beats_every_policy_on_true_plays(logs: pd.DataFrame, few_logs: pd.DataFrame, world: tuple) -> None:
    _, bundle, pm, log, sim = world
    theta = estimate_examination(logs, ROWS, COLS).theta
    model, _ = train_from_served_logs(few_logs, log, pm, theta, bundle.config.half_life_seconds, num_rounds=30)
    pm = with_page_model(pm, None, artwork=False)  # the oracle shows neutral artwork; so do the others here
    trained = with_page_model(pm, model, artwork=False)
    entries = [PolicyEntry("corrected", trained), PolicyEntry("row-ranking", pm, "row-ranking"), PolicyEntry("template", pm, "template"), PolicyEntry(ORACLE, None)]
    rng = np.random.default_rng(0)
    users = rng.choice(log.user_ids, 40)
    times = rng.integers(bundle.until + 1, int(log.last_ts), 40)
    vals = true_expected_plays(sim, log, entries, users, times, ROWS, COLS, bundle.config.half_life_seconds)
    for name in ("corrected", "row-ranking", "template"):
        assert vals[ORACLE].mean() >= vals[name].mean()
        assert (vals[ORACLE] >= vals[name] - 1e-9).mean() > 0.8  # greedy is not always optimal, nearly so
    assert vals["corrected"].mean() > 0


def test_replay_estimator_identities() -> None:
    theta = np.array([[1.0, 0.5], [0.5, 0.25]])
    served = np.array([[10, 11], [12, 13]])
    plays = np.array([[0.0, 1.0], [0.5, 0.0]])
    same = score_against_log(served, served, plays, theta, 0.05)
    assert same["corrected"] == pytest.approx(plays.sum()) and same["overlap"] == 1.0
    moved = score_against_log(np.array([[11, 12], [-1, -1]]), served, plays, theta, 0.05)
    # 11 moves from (0, 1) to (0, 0): x 1/0.5; 12 from (1, 0) to (0, 1): x 0.5/0.5
    assert moved["corrected"] == pytest.approx(1.0 * 2.0 + 0.5 * 1.0)
    none = score_against_log(np.array([[20, 21], [22, 23]]), served, plays, theta, 0.05)
    assert none["hits"] == 0.0 and none["corrected"] == 0.0 and none["overlap"] == 0.0


def test_commands_end_to_end(world: tuple, tmp_path: Path) -> None:
    world_dir, bundle, *_ = world
    _register()
    runner = CliRunner()
    logs = tmp_path / "served.parquet"
    res = runner.invoke(app, ["simulate-logs", str(world_dir), "--models", str(bundle.path), "--out", str(logs), "--pages", "30",
                              "--visits", "20", "--random-share", "0.5", "--rows", str(ROWS), "--cols", str(COLS), "--policy", "row-ranking"])
    assert res.exit_code == 0, res.output
    assert read_served_logs(logs)["page_id"].nunique() == 30 * 20
    ex = tmp_path / "exam.json"
    res = runner.invoke(app, ["examination", str(logs), "--rows", str(ROWS), "--cols", str(COLS), "--json", str(ex)])
    assert res.exit_code == 0, res.output
    assert np.array(json.loads(ex.read_text())["theta"]).shape == (ROWS, COLS)
    pm_dir = tmp_path / "pm"
    res = runner.invoke(app, ["train-from-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(logs), "--out", str(pm_dir), "--rounds", "20"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "replay.json"
    # the service's own logs have no randomised pages: the examination estimate comes from a file then
    served_only = tmp_path / "service.parquet"
    frame = read_served_logs(logs)
    write_served_logs(frame[frame["policy"] != "random"], served_only)
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(served_only), "--policies", "row-ranking"])
    assert res.exit_code != 0 and "randomised" in str(res.exception) and f"--served-logs {served_only}" in str(res.exception)
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(logs), "--examination", str(ex),
                              "--policies", "row-ranking", "--page-model", f"served={pm_dir}", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert set(rep["policies"]) == {"logged", "row-ranking", "served"}
    # the page model learnt from these very pages: the replay says its estimate is in-sample
    served_ts = read_served_logs(logs)["ts"]
    assert rep["in_sample"] == {"served": [int(served_ts.min()), int(served_ts.max())]}
    assert "warning: --page-model served: trained on pages served from" in " ".join(res.output.split())
    observed = read_served_logs(logs)["played"].sum() / (30 * 20)
    assert rep["policies"]["logged"]["corrected"]["mean"] == pytest.approx(observed)
    # the logging policy rebuilt is the logged page for deterministic pages: full overlap there
    assert rep["policies"]["row-ranking"]["overlap"]["mean"] > 0.5
    # the replay command itself accepts served logs, with the same estimator
    out2 = tmp_path / "via-replay.json"
    res = runner.invoke(app, ["replay", str(world_dir), "--models", str(bundle.path), "--served-logs", str(logs), "--examination", str(ex),
                              "--policies", "row-ranking", "--json", str(out2)])
    assert res.exit_code == 0, res.output
    rep2 = json.loads(out2.read_text())
    assert rep2["policies"]["row-ranking"] == rep["policies"]["row-ranking"]
    # a served log from before the bundle's cut-off is refused
    early = read_served_logs(logs).assign(ts=int(bundle.until) - 10)
    write_served_logs(early, tmp_path / "early.parquet")
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(tmp_path / "early.parquet")])
    assert res.exit_code != 0 and "retrain" in str(res.exception)
    # served logs of another catalog are refused, naming the file
    other = read_served_logs(logs).assign(title_id=lambda f: f["title_id"] + 10_000_000)
    write_served_logs(other, tmp_path / "other.parquet")
    for cmd in (["replay-logs"], ["train-from-logs", "--out", str(tmp_path / "pm2")]):
        res = runner.invoke(app, [cmd[0], str(world_dir), "--models", str(bundle.path), "--served-logs", str(tmp_path / "other.parquet"), *cmd[1:]])
        assert res.exit_code != 0 and "another dataset" in str(res.exception) and "other.parquet" in str(res.exception), res.output
    # a service's logs of users the dataset has never seen are fine
    new_users = read_served_logs(logs).assign(user_id=lambda f: f["user_id"] + 5_000_000)
    write_served_logs(new_users, tmp_path / "new-users.parquet")
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(tmp_path / "new-users.parquet"),
                              "--examination", str(ex), "--policies", "row-ranking"])
    assert res.exit_code == 0, res.output
    # wrong-kind paths and sizes fail with the option named
    res = runner.invoke(app, ["examination", str(logs), "--rows", str(ROWS), "--cols", str(COLS + 1)])
    assert res.exit_code != 0 and f"cols {COLS + 1}" in str(res.exception) and f"{COLS} columns" in str(res.exception)
    res = runner.invoke(app, ["examination", str(logs), "--json", str(tmp_path)])
    assert res.exit_code != 0 and "--json" in str(res.exception)
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(logs), "--examination", str(tmp_path)])
    assert res.exit_code != 0 and "cannot read" in str(res.exception)
    res = runner.invoke(app, ["simulate-logs", str(world_dir), "--models", str(bundle.path), "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--out" in str(res.exception)
    assert not list(tmp_path.parent.glob(".*.tmp"))


def test_served_logs_that_would_be_read_wrongly_are_refused(logs: pd.DataFrame, world: tuple, tmp_path: Path) -> None:
    """From a review: a Parquet timestamp read as microseconds (pages rebuilt with later history), nulls cast to INT64_MIN,
    1-based slots (an all-zero table), an empty file (a NaN traceback), an examination with Infinity."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    world_dir, bundle, *_ = world
    _register()
    runner = CliRunner()
    as_time = pa.Table.from_pandas(logs.assign(ts=pd.to_datetime(logs["ts"], unit="s")), preserve_index=False)
    pq.write_table(as_time, tmp_path / "ts.parquet")
    with pytest.raises(HomepageError, match="ts is datetime64.*not integer Unix seconds"):
        read_served_logs(tmp_path / "ts.parquet")
    bad_cases = {
        "null": (logs.assign(row_index=logs["row_index"].astype("float64").where(logs.index != 5)), r"row 5: row_index is null"),
        "one-based": (logs.assign(row_index=logs["row_index"] + 1), r"row_index starts at 1: slots are numbered from 0"),
        "empty": (logs.iloc[:0], r"no impressions"),
    }
    for name, (frame, message) in bad_cases.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / f"{name}.parquet")
        with pytest.raises(HomepageError, match=message):
            read_served_logs(tmp_path / f"{name}.parquet")
    late = write_served_logs(logs.assign(ts=logs["ts"] + 400 * 86_400), tmp_path / "late.parquet")
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(late)])
    assert res.exit_code != 0 and "more than a day after the dataset's last event" in str(res.exception), res.output
    exam = tmp_path / "exam.json"
    exam.write_text(json.dumps({"theta": [[1.0, float("inf")] * 10] * 10}))
    served = write_served_logs(logs, tmp_path / "served.parquet")
    res = runner.invoke(app, ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(served), "--examination", str(exam)])
    assert res.exit_code != 0 and "theta must be finite" in str(res.exception), res.output


def test_examination_needs_enough_randomised_evidence(logs: pd.DataFrame) -> None:
    """One randomised page made a slot 1,178x the top-left one, and replay used it as a correction."""
    random_pages = logs.loc[logs["policy"] == "random", "page_id"].unique()
    played = logs[logs["policy"] == "random"].groupby("page_id")["played"].sum().idxmax()  # the one with the most plays
    one = logs[(logs["policy"] != "random") | (logs["page_id"] == played)]
    with pytest.raises(HomepageError, match=r"1 randomised pages with \d+ plays .* too few to estimate examination"):
        estimate_examination(one)
    assert estimate_examination(logs).pages == random_pages.size


def test_page_model_names_and_paths_are_checked_before_the_replay(logs: pd.DataFrame, world: tuple, tmp_path: Path) -> None:
    """A NAME that repeated a policy crashed in the report after the whole replay; a bundle given as DIR blamed the features."""
    world_dir, bundle, *_ = world
    _register()
    served = write_served_logs(logs, tmp_path / "served.parquet")
    base = ["replay-logs", str(world_dir), "--models", str(bundle.path), "--served-logs", str(served), "--policies", "template"]
    for spec, words in ((f"template={bundle.path}", "already a policy"), (f"logged={bundle.path}", "already a policy"),
                        (f"pm={bundle.path}", "is a model bundle or dataset"), (f"pm={served}", "is a file")):  # fmt: skip
        res = CliRunner().invoke(app, [*base, "--page-model", spec])
        assert res.exit_code != 0 and words in str(res.exception), (spec, res.exception)


def test_served_replay_intervals_resample_users() -> None:
    """Two layouts of one user move together in a resample: one user's layouts alone give a zero-width interval."""
    from homepage.servedlogs.replay import ServedReplay

    values = {"p": {"hits": [0.0, 1.0] * 20}}
    ones = np.ones(40, np.int64)
    by_layout = ServedReplay(ones, values, None).to_json()["policies"]["p"]["hits"]["ci"]
    users_alike = ServedReplay(ones, values, np.repeat(np.arange(20), 2)).to_json()  # each user: a 0 and a 1
    users_apart = ServedReplay(ones, values, np.tile([1, 2], 20)).to_json()  # one user all 0, the other all 1
    assert 0.0 < by_layout[1] - by_layout[0] < 1.0
    assert users_alike["policies"]["p"]["hits"]["ci"] == [0.5, 0.5] and users_alike["users"] == 20
    assert users_apart["policies"]["p"]["hits"]["ci"] == [0.0, 1.0]
