"""Training the artwork selector from logs: ``homepage artwork train`` on simulated logs beats the random
policy in off-policy evaluation on held-out logs; bad input is refused naming the file and row; a
bundle trained with ``--artwork-logs`` records it and serves it through ``build_page``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from artwork.experiment import world_contexts
from artwork.feedback import LoggedFeedback, write_feedback
from artwork.logs import simulate_uniform_logs
from artwork.page_artwork import PageArtwork
from artwork.training_logs import read_training_logs
from artwork.tuning import Trial, best_trial
from fixtures.simulator import BrowsingSimulator, WorldTruth
from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import load_bundle, train_bundle
from homepage.catalog import Catalog
from homepage.cli import _register, app
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.domain import RequestContext
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.page import PageModels, build_page
from homepage.servedlogs.schema import write_served_logs

WEEK = 7 * 86_400


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artwork-train") / "world"
    write_world(generate_world(WorldParams(n_users=200, n_titles=150, seed=11)), out)
    return out


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``homepage artwork simulate`` then ``homepage artwork train`` through the command line."""
    root = tmp_path_factory.mktemp("artwork-trained")
    _register()
    runner = CliRunner()
    sim = runner.invoke(app, ["artwork", "simulate", str(world), "--out", str(root / "logs.parquet"), "--impressions", "40000", "--seed", "1"])
    assert sim.exit_code == 0, sim.output
    res = runner.invoke(app, ["artwork", "train", str(root / "logs.parquet"), "--dataset", str(world), "--out", str(root / "art")])
    assert res.exit_code == 0, res.output
    assert "selector trained" in res.output
    return root


def test_trained_policy_beats_random_on_held_out_logs(world: Path, trained: Path) -> None:
    ds = load_dataset(world)
    truth = WorldTruth.load(world)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    ctx = world_contexts(EventLog.from_frame(ds.events, catalog, ds.users), catalog, truth.user_ids, truth.period_end)
    held = simulate_uniform_logs(BrowsingSimulator(truth), 30_000, seed=99).logs  # a log the model never saw
    held = LoggedFeedback(
        held.action, held.reward, held.propensity, held.n_actions, title_idx=held.title_idx,
        user_id=truth.user_ids[held.user_id], n_choices=held.n_choices, context=ctx[held.user_id],
    )
    write_feedback(held, trained / "held.parquet")
    runner = CliRunner()

    def estimate(policy: str) -> dict[str, dict[str, float]]:
        res = runner.invoke(app, ["artwork", "evaluate", str(trained / "held.parquet"), "--policy", policy,
                                  "--dataset", str(world), "--json", "--n-boot", "100"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["estimates"]

    model = estimate(f"model:{trained / 'art' / 'selector'}@0.0")
    uniform = estimate("uniform")
    for name in ("ips", "snips", "dr"):
        assert model[name]["low"] > uniform[name]["high"], (name, model[name], uniform[name])
        assert model[name]["estimate"] > 1.1 * uniform[name]["estimate"]
    report = json.loads((trained / "art" / "training.json").read_text())
    assert report["data"]["impressions"] == 40_000
    assert len(report["training"]["trials"]) >= 2  # the regularisation was chosen on validation


def test_documented_evaluate_works_on_simulated_and_served_logs_without_contexts(world: Path, trained: Path, tmp_path: Path) -> None:
    """``homepage artwork evaluate HELD_OUT --policy model:DIR/selector@0.0 --dataset D``, as documented, on the
    output of ``homepage artwork simulate`` (no ``ctx_*`` columns) and on a served log: it stopped with "a model
    policy needs title_idx and ctx_* columns", so no log a command writes could evaluate a trained selector."""
    runner = CliRunner()
    held = tmp_path / "held.parquet"
    sim = runner.invoke(app, ["artwork", "simulate", str(world), "--out", str(held), "--impressions", "30000", "--seed", "7"])
    assert sim.exit_code == 0, sim.output
    policy = f"model:{trained / 'art' / 'selector'}@0.0"
    res = runner.invoke(app, ["artwork", "evaluate", str(held), "--policy", policy, "--dataset", str(world), "--json", "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)["estimates"]
    # the truth: the simulator's attraction of every variant on the same rows (the command's seed 7 log)
    ds = load_dataset(world)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    truth_logs = simulate_uniform_logs(BrowsingSimulator(WorldTruth.load(world)), 30_000, seed=7)
    from artwork.selector import ArtworkSelector
    from artwork.target_policy import read_model_logs

    rows, _ = read_model_logs(held, policy, catalog, EventLog.from_frame(ds.events, catalog, ds.users))
    probs = ArtworkSelector.load(trained / "art" / "selector", catalog).action_probabilities(
        rows.context, rows.title_idx, epsilon=0.0, user_ids=rows.user_id
    )
    dist = np.zeros((len(rows), rows.n_actions))
    dist[:, : probs.shape[1]] = probs
    truth = truth_logs.true_value(dist)
    uniform = truth_logs.true_value((truth_logs.attraction > 0) / (truth_logs.attraction > 0).sum(axis=1, keepdims=True))
    assert truth > 1.1 * uniform  # the selector learnt something, so the check below can tell a cold context apart
    for name in ("ips", "snips", "dr"):
        assert est[name]["low"] <= truth <= est[name]["high"], (name, est[name], truth)
    frame, _ = _served_frame(world)
    served = write_served_logs(frame, tmp_path / "served.parquet")
    res = runner.invoke(app, ["artwork", "evaluate", str(served), "--policy", policy, "--dataset", str(world), "--json", "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n"] == len(frame)


def _served_frame(ds_dir: Path, n: int = 400) -> tuple[pd.DataFrame, Catalog]:
    """A served log by hand: random titles and variants shown to the dataset's users with exact propensities."""
    ds = load_dataset(ds_dir)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    rng = np.random.default_rng(0)
    titles = rng.integers(0, len(catalog), n)
    k = np.array([len(catalog.variants[t]) for t in titles])
    pos = (rng.random(n) * k).astype(int)
    frame = pd.DataFrame({
        "page_id": [f"p{i // 10}" for i in range(n)],
        "user_id": rng.choice(ds.users["user_id"].to_numpy(), n),
        "ts": np.full(n, int(ds.events["ts"].max()), np.int64),
        "policy": "template",
        "row_index": (np.arange(n) % 10) // 5,
        "col_index": np.arange(n) % 5,
        "row_id": "top_n",
        "ranker": "top_n",
        "title_id": catalog.title_ids[titles],
        "variant_id": [catalog.variants[t][j].variant_id for t, j in zip(titles, pos)],
        "row_propensity": 1.0,
        "artwork_propensity": 1.0 / k,
        "played": (rng.random(n) < 0.2).astype(np.int8),
    })
    return frame, catalog


def test_served_logs_train_with_propensities_and_contexts(world: Path, tmp_path: Path) -> None:
    frame, catalog = _served_frame(world)
    frame.loc[3, ["variant_id", "artwork_propensity"]] = [None, None]  # a page served without artwork
    path = write_served_logs(frame, tmp_path / "served.parquet")
    ds = load_dataset(world)
    data = read_training_logs(path, catalog, EventLog.from_frame(ds.events, catalog, ds.users), WEEK)
    assert len(data.logs) == len(frame) - 1 and data.n_skipped == 1
    keep = frame.drop(index=3)
    np.testing.assert_allclose(data.logs.propensity, keep["artwork_propensity"].to_numpy(float))
    ids = [catalog.variants[t][a].variant_id for t, a in zip(data.logs.title_idx, data.logs.action)]
    assert ids == keep["variant_id"].tolist()
    assert np.abs(data.contexts).sum() > 0  # the users' histories, not cold contexts


def test_impressions_after_the_training_cut_are_left_out(world: Path, tmp_path: Path) -> None:
    frame, catalog = _served_frame(world)
    last = int(frame["ts"].max())
    frame["ts"] = np.where(np.arange(len(frame)) % 3 == 0, last + 86_400, last - 86_400)  # a third served after the cut
    path = write_served_logs(frame, tmp_path / "served.parquet")
    ds = load_dataset(world)
    events = EventLog.from_frame(ds.events, catalog, ds.users)
    data = read_training_logs(path, catalog, events, WEEK, until=last)
    before = frame[frame["ts"] <= last]
    assert len(data.logs) == len(before) == len(frame) - len(frame[frame["ts"] > last]) > 0
    np.testing.assert_allclose(data.logs.propensity, before["artwork_propensity"].to_numpy(float))
    assert len(read_training_logs(path, catalog, events, WEEK).logs) == len(frame)  # no cut: every impression
    with pytest.raises(HomepageError, match="after the training cut"):
        read_training_logs(path, catalog, events, WEEK, until=last - 10 * 86_400)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


BAD_SERVED = [
    ("no title in the catalog", lambda f: f.assign(title_id=999_999),
     "none of its 400 impressions with artwork is of a title and variant in the dataset's catalog (row 0: title_id 999999"),
    # row 1 has no artwork choice: row numbers still count every row of the file
    ("propensity", lambda f: f.assign(artwork_propensity=f["artwork_propensity"].where(f.index != 2, 0.0).where(f.index != 1, None),
                                      variant_id=f["variant_id"].where(f.index != 1, None)), "row 2: artwork_propensity = 0.0 is not a probability in (0, 1]"),
    ("played", lambda f: f.assign(played=f["played"].where(f.index != 4, 3)), "row 4: played = 3 is not 0 or 1"),
    ("half-null", lambda f: f.assign(artwork_propensity=f["artwork_propensity"].where(f.index != 6, None)), "row 6: variant_id and artwork_propensity must be both set or both empty"),
    ("missing", lambda f: f.drop(columns=["artwork_propensity"]), "missing column 'artwork_propensity'"),
    ("no artwork", lambda f: f.assign(variant_id=None, artwork_propensity=None), "none of its 400 impressions has an artwork choice"),
]


@pytest.mark.parametrize(("case", "damage", "message"), BAD_SERVED, ids=[c[0] for c in BAD_SERVED])
def test_bad_served_logs_name_the_file_and_row(world: Path, tmp_path: Path, case: str, damage, message: str) -> None:
    frame, catalog = _served_frame(world)
    path = _write(damage(frame), tmp_path / f"{case}.parquet")
    ds = load_dataset(world)
    with pytest.raises(HomepageError) as e:
        read_training_logs(path, catalog, EventLog.from_frame(ds.events, catalog, ds.users), WEEK)
    assert str(path) in str(e.value) and message in str(e.value)


def test_bad_feedback_and_files_name_the_problem(world: Path, trained: Path, tmp_path: Path) -> None:
    ds = load_dataset(world)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    events = EventLog.from_frame(ds.events, catalog, ds.users)
    frame = pq.read_table(trained / "logs.parquet").to_pandas().head(50)
    cases = [
        (frame.assign(action=frame["action"].where(frame.index != 9, 40)), "row 9: action is not a variant position of its title"),
        (frame.assign(title_idx=frame["title_idx"].where(frame.index != 1, -3)), "row 1: title_idx is not an index of the dataset's catalog"),
        (frame.assign(reward=frame["reward"].where(frame.index != 0, np.nan)), "row 0: column 'reward' is empty"),
        (frame.drop(columns=["user_id"]), "missing column 'user_id'"),
        (pd.DataFrame({"x": [1]}), "neither a served log"),
    ]
    for i, (bad, message) in enumerate(cases):
        path = _write(bad, tmp_path / f"bad{i}.parquet")
        with pytest.raises(HomepageError, match=".*") as e:
            read_training_logs(path, catalog, events, WEEK)
        assert str(path) in str(e.value) and message in str(e.value), (message, str(e.value))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(HomepageError, match="not a readable Parquet file"):
        read_training_logs(tmp_path / "text.parquet", catalog, events, WEEK)


def test_cli_error_is_one_line_naming_the_file_and_row(world: Path, tmp_path: Path) -> None:
    frame, _ = _served_frame(world)
    path = _write(frame.assign(played=frame["played"].where(frame.index != 5, 3)), tmp_path / "bad.parquet")
    res = subprocess.run(
        [sys.executable, "-m", "homepage", "artwork", "train", str(path), "--dataset", str(world), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    assert f"{path}: row 5: played = 3" in " ".join(res.stderr.split()) and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_a_served_log_spanning_catalog_versions_trains_on_what_the_catalog_still_has(world: Path, tmp_path: Path) -> None:
    """Pages served before a catalog change show titles since withdrawn and variants since gone (a genre
    changed): those impressions are left out and counted, the rest train; the log was refused whole before."""
    frame, catalog = _served_frame(world)
    ds = load_dataset(world)
    withdrawn = int(frame["title_id"].iloc[5])
    regenred_row = next(i for i in range(len(frame)) if not frame["variant_id"].iloc[i].endswith("-n")
                        and int(frame["title_id"].iloc[i]) != withdrawn)
    gone_variant = frame["variant_id"].iloc[regenred_row]
    titles = ds.titles[ds.titles["title_id"] != withdrawn]
    variants = ds.variants[(ds.variants["title_id"] != withdrawn) & (ds.variants["variant_id"] != gone_variant)]
    now = Catalog.from_frames(titles, variants)  # the catalog of the next version
    left_out = (frame["title_id"] == withdrawn) | (frame["variant_id"] == gone_variant)
    path = write_served_logs(frame, tmp_path / "served.parquet")
    data = read_training_logs(path, now, EventLog.from_frame(ds.events, now, ds.users), WEEK)
    assert data.n_not_in_catalog == int(left_out.sum()) >= 2 and data.summary()["skipped_not_in_catalog"] == data.n_not_in_catalog
    assert data.first_not_in_catalog.startswith(f"row {int(np.flatnonzero(left_out.to_numpy())[0])}: title_id ")
    keep = frame[~left_out]
    assert len(data.logs) == len(keep)
    assert now.title_ids[data.logs.title_idx].tolist() == keep["title_id"].tolist()
    assert [now.variants[t][a].variant_id for t, a in zip(data.logs.title_idx, data.logs.action)] == keep["variant_id"].tolist()
    np.testing.assert_allclose(data.logs.propensity, keep["artwork_propensity"].to_numpy(float))


def test_artwork_train_command_reports_the_impressions_a_catalog_change_left_out(world: Path, tmp_path: Path) -> None:
    frame, _ = _served_frame(world)
    frame = frame.assign(title_id=frame["title_id"].where(frame.index != 5, 999_999),
                         variant_id=frame["variant_id"].where(frame.index != 7, "gone-1"))
    path = _write(frame, tmp_path / "served.parquet")
    res = subprocess.run(
        [sys.executable, "-m", "homepage", "artwork", "train", str(path), "--dataset", str(world), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr
    assert "left out 2 impressions of titles or artwork variants" in " ".join(res.stderr.split())
    assert "row 5: title_id 999999" in " ".join(res.stderr.split())
    training = json.loads((tmp_path / "o" / "training.json").read_text())
    assert training["data"]["skipped_not_in_catalog"] == 2 and training["data"]["impressions"] == len(frame) - 2


def test_evaluate_says_how_many_impressions_a_catalog_change_left_out(world: Path, trained: Path, tmp_path: Path) -> None:
    """``homepage artwork evaluate SERVED --policy model:... --dataset D`` leaves out impressions of titles D does not
    have, as training does; it did so without a word (a log of 400 impressions, half of another catalog, was
    estimated over 200 rows, exit 0, nothing on stderr), where it used to stop naming the row. Now it says how many
    and which first, and the JSON counts them."""
    frame, _ = _served_frame(world)
    gone = np.arange(len(frame)) % 4 == 1  # a quarter of the impressions: titles the dataset no longer lists
    frame = frame.assign(title_id=np.where(gone, frame["title_id"] + 1_000_000, frame["title_id"]))
    served = write_served_logs(frame, tmp_path / "served.parquet")
    policy = f"model:{trained / 'art' / 'selector'}@0.0"
    res = subprocess.run(
        [sys.executable, "-m", "homepage", "artwork", "evaluate", str(served), "--policy", policy, "--dataset", str(world),
         "--json", "--n-boot", "10", "--replay-runs", "2"],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n"] == int((~gone).sum()) and out["skipped_not_in_catalog"] == int(gone.sum())
    err = " ".join(res.stderr.split())
    assert f"left out {int(gone.sum())} impressions of titles or artwork variants" in err, err
    assert f"row 1: title_id {int(frame['title_id'].iloc[1])}" in err, err


def _under_a_file_size_limit(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))  # Python ignores SIGXFSZ: writes fail with EFBIG


def test_a_train_that_fails_mid_write_leaves_out_alone_and_can_be_run_again(world: Path, trained: Path, tmp_path: Path) -> None:
    """A full disk (here a file-size limit) while saving: it left a truncated selector.npz the next run refused to write over."""
    out = tmp_path / "art"
    argv = [sys.executable, "-m", "homepage", "artwork", "train", str(trained / "logs.parquet"), "--dataset", str(world), "--out", str(out)]
    failed = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=lambda: _under_a_file_size_limit(16_384))
    assert failed.returncode == 2 and "File too large" in failed.stderr, failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither --out nor a temporary directory
    for _ in range(2):  # into a new --out, then over the selector it wrote
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in out.iterdir()) == ["selector.json", "selector.npz", "training.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_simulate_that_fails_mid_write_keeps_the_previous_log_whole(world: Path, tmp_path: Path) -> None:
    """``artwork simulate --out`` wrote its Parquet in place: a full disk left a truncated log for ``artwork train`` to read."""
    import pyarrow.parquet as pq

    out = tmp_path / "sim.parquet"
    argv = [sys.executable, "-m", "homepage", "artwork", "simulate", str(world), "--out", str(out), "--impressions", "2000", "--seed", "3"]
    assert subprocess.run(argv, capture_output=True, text=True, timeout=300).returncode == 0
    before = out.read_bytes()
    bigger = [*argv[:-4], "--impressions", "200000", "--seed", "4"]
    failed = subprocess.run(bigger, capture_output=True, text=True, timeout=300, preexec_fn=lambda: _under_a_file_size_limit(len(before) + 4096))
    assert failed.returncode != 0, failed.stdout
    assert out.read_bytes() == before and pq.read_table(out).num_rows == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.parquet"]  # no temporary file left


def test_bundle_ships_the_trained_selector(world: Path, trained: Path, tmp_path: Path) -> None:
    ds = load_dataset(world)
    cfg = PipelineConfig(page=PageConfig(train_model=False))
    logs = trained / "logs.parquet"
    bundle = train_bundle(ds, tmp_path / "m", cfg, artwork_logs=logs)
    comp = json.loads((bundle.path / "manifest.json").read_text())["components"]["artwork"]
    assert comp["trained"] is True
    assert comp["logs"]["path"] == str(logs.resolve()) and comp["logs"]["impressions"] == 40_000
    import hashlib

    assert comp["logs"]["sha256"] == hashlib.sha256(logs.read_bytes()).hexdigest()
    assert comp["training"]["chosen"]["ridge"] > 0

    untrained = train_bundle(ds, tmp_path / "m0", cfg)
    assert json.loads((untrained.path / "manifest.json").read_text())["components"]["artwork"] == {"dir": "artwork", "trained": False}

    # the serving path: load_bundle -> PageModels.from_bundle -> build_page (what the API calls)
    models = PageModels.from_bundle(load_bundle(bundle.path))
    plain = PageModels.from_bundle(load_bundle(untrained.path))
    assert isinstance(models.artwork, PageArtwork) and models.artwork.selector.n_train_rows_ == 40_000
    eps = models.artwork.selector.epsilon
    log = EventLog.from_frame(ds.events, models.catalog, ds.users)
    t = bundle.until
    non_neutral = 0
    for u in log.user_ids[:20].tolist():
        req = RequestContext(user_id=u, now=t)
        page = build_page(log.user_state(u, t), log.global_state(t), models, req, policy="template")
        base = build_page(log.user_state(u, t), log.global_state(t), plain, req, policy="template")
        for row in page.rows:
            for tid, vid, p in zip(row.title_ids, row.variant_ids, row.propensities):
                k = len(models.catalog.variants[int(models.catalog.index_of([tid])[0])])
                assert p == pytest.approx(1 - eps + eps / k) or p == pytest.approx(eps / k)
        shown = [v for r in page.rows for v in r.variant_ids]
        untrained_shown = [v for r in base.rows for v in r.variant_ids]
        non_neutral += sum(not v.endswith("-0") for v in shown) - sum(not v.endswith("-0") for v in untrained_shown)
    assert non_neutral > 50  # the trained selector moves off the neutral variant the untrained one serves


def test_bundle_refuses_bad_artwork_logs_before_fitting(world: Path, tmp_path: Path) -> None:
    ds = load_dataset(world)
    with pytest.raises(HomepageError, match="artwork logs file not found"):
        train_bundle(ds, tmp_path / "m", PipelineConfig(page=PageConfig(train_model=False)), artwork_logs=tmp_path / "none.parquet")
    assert not any((tmp_path / "m").glob("v*"))


def test_train_command_takes_artwork_logs(world: Path, trained: Path, tmp_path: Path) -> None:
    """``homepage train --artwork-logs``: the flag reaches the bundle; a bad file fails before any fitting."""
    cfg = tmp_path / "pipeline.json"
    cfg.write_text(json.dumps({"page": {"train_model": False}}))
    res = CliRunner().invoke(app, ["train", str(world), "--out", str(tmp_path / "m"), "--config", str(cfg),
                                   "--artwork-logs", str(trained / "logs.parquet")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())
    assert manifest["components"]["artwork"]["trained"] is True
    bad = CliRunner().invoke(app, ["train", str(world), "--out", str(tmp_path / "m2"), "--config", str(cfg),
                                   "--artwork-logs", str(tmp_path / "missing.parquet")])
    assert bad.exit_code != 0 and "artwork logs file not found" in str(bad.exception)


def test_one_tiny_propensity_cannot_take_the_fit_over(world: Path, tmp_path: Path) -> None:
    """Importance weights are clipped: one played impression logged at 1e-9 carried 1e9 / n of the weight (a review)."""
    import dataclasses

    from artwork.selector import ArtworkSelector

    frame, catalog = _served_frame(world, n=2000)
    ds = load_dataset(world)
    data = read_training_logs(write_served_logs(frame, tmp_path / "s.parquet"), catalog, EventLog.from_frame(ds.events, catalog, ds.users), WEEK)
    played = int(np.flatnonzero(data.logs.reward > 0)[0])
    tiny = data.logs.propensity.copy()
    tiny[played] = 1e-9
    fitted = []
    for logs in (data.logs, dataclasses.replace(data.logs, propensity=tiny)):
        sel = ArtworkSelector(epsilon=0.05).fit(logs, data.contexts, catalog, data.context_row)
        fitted.append(np.concatenate([sel.theta_.ravel(), sel._bias_values.ravel()]))
    assert np.corrcoef(fitted[0], fitted[1])[0, 1] > 0.9
    assert dataclasses.replace(data, logs=dataclasses.replace(data.logs, propensity=tiny)).summary()["propensities_clipped"] == 1


def test_artwork_train_refuses_an_out_that_is_a_file_or_another_directory_before_training(world: Path, trained: Path, tmp_path: Path) -> None:
    _register()
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for out in (a_file, world):
        res = CliRunner().invoke(app, ["artwork", "train", str(trained / "logs.parquet"), "--dataset", str(world), "--out", str(out)])
        assert res.exit_code != 0 and "is not an artwork selector directory" in str(res.exception), res.output
    assert a_file.read_text() == "keep me" and not (world / "training.json").exists()


def test_a_trial_without_a_validation_value_never_wins() -> None:
    """A setting whose greedy choice no validation row matched has value NaN; ``max`` kept it when it came first."""
    nan, a, b = Trial(0.1, 1.0, 1.0, float("nan")), Trial(1.0, 1.0, 1.0, 0.12), Trial(10.0, 1.0, 1.0, 0.15)
    assert best_trial([nan, a, b]) is b
    assert best_trial([a, nan]) is a
    assert best_trial([nan]) is nan  # nothing better to choose
