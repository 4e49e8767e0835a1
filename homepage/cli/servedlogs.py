"""Served-log commands: simulate logs on the synthetic world, estimate examination,
train the page model from logs, and replay policies against logged pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from homepage.cli import app, err
from homepage.cli.outputs import check_output_file, table_console
from homepage.errors import HomepageError
from homepage.strict_json import write_json


def _progress(label: str, total: int) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True))
    return bar, bar.add_task(label, total=total)


def _load(dataset: Path, models: Path) -> tuple[Any, Any, Any]:
    """The bundle, its page models and the dataset's event log indexed like the bundle's catalog."""
    from homepage.bundle import load_bundle
    from homepage.cli.replay import refuse_other_catalog
    from homepage.dataset import load_dataset
    from homepage.eventlog import EventLog
    from homepage.page import PageModels

    bundle = load_bundle(models)
    ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    refuse_other_catalog(ds.titles, bundle, dataset, "--models")
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    return bundle, PageModels.from_bundle(bundle), log


SERVED_AFTER_DATA_SLACK = 86_400  # seconds a served page may come after the dataset's last event


def _check_window(bundle: Any, logs: Any, served_logs: Path, log: Any) -> None:
    """The pages must come after the bundle's training window and within the dataset's time.

    A page served after the dataset's last event would be rebuilt without the events between
    (or, with times in the wrong unit, with the user's whole later history).
    """
    first, last = int(logs["ts"].min()), int(logs["ts"].max())
    if bundle.until > first:
        raise HomepageError(
            f"--models: bundle {bundle.version} was trained on events up to {bundle.until}, after the first served page "
            f"of {served_logs} ({first}); retrain with `homepage train --until` at or before it"
        )
    if log.last_ts is not None and last > log.last_ts + SERVED_AFTER_DATA_SLACK:
        raise HomepageError(
            f"--served-logs {served_logs}: its last page was served at {last}, more than a day after the dataset's last event "
            f"({log.last_ts}): merge the events first (`homepage logs merge-events`), or check that ts is in Unix seconds"
        )


def _check_same_data(logs: Any, bundle: Any, served_logs: Path) -> None:
    """Refuse served logs of another catalog: the titles they show must be the bundle's.

    (Users are not checked: a service's logs hold new users the dataset has never seen.)
    """
    import numpy as np

    titles = logs["title_id"].unique()
    title_share = float((bundle.catalog.index_of(titles.astype(np.int64)) >= 0).mean())
    if title_share < 0.9:
        raise HomepageError(
            f"--served-logs {served_logs}: {title_share:.0%} of its titles are in bundle {bundle.version}'s catalog; "
            "were these pages served from another dataset?"
        )


def _theta(examination_json: Path | None, logs: Any, served_logs: Path) -> Any:
    """Relative examination: from ``homepage examination --json`` output, else from the logs' randomised pages."""
    import numpy as np

    from homepage.servedlogs.examination import estimate_examination

    R = int(logs["row_index"].max()) + 1
    C = int(logs["col_index"].max()) + 1
    if examination_json is None:
        return estimate_examination(logs, R, C, where=f"--served-logs {served_logs}").theta
    try:
        theta = np.asarray(json.loads(Path(examination_json).read_text())["theta"], dtype=np.float64)
    except FileNotFoundError as e:
        raise HomepageError(f"{examination_json}: not found") from e
    except OSError as e:
        raise HomepageError(f"{examination_json}: cannot read it: {e.strerror}") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise HomepageError(f"{examination_json}: not an examination estimate (theta: a rows x cols list): {e}") from e
    if theta.ndim != 2 or theta.shape[0] < R or theta.shape[1] < C or not (np.isfinite(theta) & (theta > 0)).all():
        raise HomepageError(f"{examination_json}: theta must be finite, positive and at least {R} x {C} (the served pages' size)")
    return theta


@app.command("simulate-logs")
def simulate_logs(
    world: Path = typer.Argument(..., help="Synthetic world directory (from `homepage generate`), with truth.npz."),
    models: Path = typer.Option(..., "--models", help="Models directory or bundle trained on the world."),
    out: Path = typer.Option(..., "--out", help="Served-log Parquet file to write."),
    pages: int = typer.Option(2000, "--pages", min=1, help="Pages built (each served to --visits visits)."),
    visits: int = typer.Option(20, "--visits", min=1, help="Visits per built page (the page cache), sampled independently."),
    random_share: float = typer.Option(0.05, "--random-share", min=0.0, max=1.0, help="Share of pages with rows and titles shuffled."),
    policy: str = typer.Option("template", "--policy", help="The logging policy."),
    rows: int = typer.Option(10, "--rows", min=1, max=100),
    cols: int = typer.Option(10, "--cols", min=1, max=100),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Serve pages to the synthetic world's users and log what the browsing simulator played.

    Pages are served after the bundle's training cut-off; the simulator decides which slots a user
    examines and what they play."""
    from fixtures.simulator import BrowsingSimulator, WorldTruth
    from homepage.pagebuilder.policies import policy as get_policy
    from homepage.servedlogs.schema import write_served_logs
    from homepage.servedlogs.simulate import LogSpec, simulate_served_logs

    check_output_file(out, "--out")
    truth = WorldTruth.load(world)
    bundle, pm, log = _load(world, models)
    if get_policy(policy).needs_model and pm.page_model is None:
        raise HomepageError(f"--policy: {policy!r} needs a page model, and bundle {bundle.version} has none")
    end = int(log.last_ts or bundle.until)
    if end <= bundle.until:
        raise HomepageError(f"--models: bundle {bundle.version} was trained up to the end of {world}; train it with --until before the end")
    spec = LogSpec(n_pages=pages, start=bundle.until + 1, end=end, random_share=random_share, policy=policy, rows=rows, cols=cols,
                   half_life=bundle.config.half_life_seconds, seed=seed, visits_per_page=visits)
    sim = BrowsingSimulator(truth, seed=seed)
    bar, task = _progress("simulate", pages)
    with bar:
        frame = simulate_served_logs(sim, log, pm, log.user_ids, spec, progress=lambda n: bar.advance(task, n))
    write_served_logs(frame, out)
    typer.echo(f"{out}: {frame['page_id'].nunique()} pages, {len(frame)} impressions, {int(frame['played'].sum())} plays")


@app.command("examination")
def examination(
    served_logs: Path = typer.Argument(..., help="Served-log Parquet file."),
    rows: int = typer.Option(10, "--rows", min=1, max=100),
    cols: int = typer.Option(10, "--cols", min=1, max=100),
    method: str = typer.Option("factorised", "--method", help="factorised (row x column) or full (one rate per slot)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the estimate here."),
) -> None:
    """Estimate each slot's examination probability from a served log's randomised pages.

    Probabilities are relative to the top-left slot."""
    from rich.table import Table

    from homepage.servedlogs.examination import estimate_examination
    from homepage.servedlogs.schema import read_served_logs

    check_output_file(json_out, "--json")
    est = estimate_examination(read_served_logs(served_logs), rows, cols, method=method, strict_size=True, where=str(served_logs))
    table = Table(title=f"relative examination ({est.method}, {est.pages} randomised pages)")
    table.add_column("row")
    for c in range(cols):
        table.add_column(str(c), justify="right")
    for r in range(rows):
        table.add_row(str(r), *(f"{x:.2f}" for x in est.theta[r]))
    table_console().print(table)
    if json_out is not None:
        write_json(json_out, {"method": est.method, "pages": est.pages, "theta": est.theta, "impressions": est.impressions, "plays": est.plays}, "--json", indent=1)


@app.command("train-from-logs")
def train_from_logs(
    dataset: Path = typer.Argument(..., help="Dataset the served users' histories come from."),
    models: Path = typer.Option(..., "--models", help="Models directory or bundle (its rankers make the candidate rows)."),
    served_logs: Path = typer.Option(..., "--served-logs", help="Served-log Parquet file."),
    out: Path = typer.Option(..., "--out", help="Directory to write the page model into."),
    correction: bool = typer.Option(True, "--correction/--no-correction", help="Correct plays for the examination of their slot."),
    rounds: int = typer.Option(200, "--rounds", min=1, max=10_000),
    floor: float = typer.Option(0.05, "--floor", min=0.001, max=1.0, help="Examination floor (IPS weights <= 1/floor)."),
    examination_json: Path | None = typer.Option(None, "--examination", help="Examination estimate (from `homepage examination --json`); default: estimated from this log's randomised pages."),
) -> None:
    """Train the stage-wise page model from served pages, labels corrected for 2-D position bias."""
    from homepage.servedlogs.schema import read_served_logs
    from homepage.servedlogs.training import train_from_served_logs

    _check_model_out(out)
    logs = read_served_logs(served_logs)
    bundle, pm, log = _load(dataset, models)
    _check_same_data(logs, bundle, served_logs)
    _check_window(bundle, logs, served_logs, log)
    theta = _theta(examination_json, logs, served_logs) if correction else None
    n_layouts = int(logs.groupby(["user_id", "ts", "policy"]).ngroups)
    bar, task = _progress("stage data", n_layouts)
    with bar:
        model, report = train_from_served_logs(logs, log, pm, theta, bundle.config.half_life_seconds, rounds, floor, progress=lambda n: bar.advance(task, n))
    if report.truncated_layouts >= report.layouts:
        raise HomepageError(
            f"--served-logs {served_logs}: none of its {report.layouts} layouts could be replayed whole (a served row was not among "
            f"bundle {bundle.version}'s candidates for that user and time, or its rules refused it): served with another bundle, or to other users?"
        )
    model.manifest["served_logs"] = str(served_logs)
    model.save(out)
    typer.echo(f"{out}: page model from {report.layouts} layouts, {report.groups} stage groups, correction={'on' if correction else 'off'}")
    if report.truncated_layouts:
        err.print(escape(f"warning: {report.truncated_layouts} of {report.layouts} layouts were replayed only up to a row the bundle no longer proposes"), style="yellow", highlight=False)


def _check_model_out(out: Path) -> None:
    """``--out`` must be new, an empty directory or a page model written before (never a dataset or a file)."""

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "model.txt").is_file())):
        raise HomepageError(f"--out {out}: exists and is not a page model directory; refusing to write into it")


@app.command("replay-logs")
def replay_logs(
    dataset: Path = typer.Argument(..., help="Dataset the served users' histories come from."),
    models: Path = typer.Option(..., "--models", help="Models directory or bundle."),
    served_logs: Path = typer.Option(..., "--served-logs", help="Served-log Parquet file (pages actually served)."),
    policies: str = typer.Option("row-ranking,template", "--policies", help="Comma-separated policies built with the bundle."),
    page_models: list[str] = typer.Option([], "--page-model", help="NAME=DIR: also replay stage-wise with this page model (repeatable)."),
    floor: float = typer.Option(0.05, "--floor", min=0.001, max=1.0),
    examination_json: Path | None = typer.Option(None, "--examination", help="Examination estimate (from `homepage examination --json`); default: estimated from this log's randomised pages."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100),
) -> None:
    """Estimate policies' page quality from served pages.

    Rebuild each served page for the same user and time and score it against what was played
    there (re-discounted, and corrected by the examination of the new slot over the served one)."""
    from rich.table import Table

    from homepage.cli.replay import check_policies_fit, parse_policies
    from homepage.page import PageModels
    from homepage.pagebuilder.model import PageModel
    from homepage.servedlogs.replay import MEASURES, ReplayPolicy, replay_served_logs
    from homepage.servedlogs.schema import read_served_logs

    check_output_file(json_out, "--json")
    logs = read_served_logs(served_logs)
    bundle, pm, log = _load(dataset, models)
    _check_same_data(logs, bundle, served_logs)
    _check_window(bundle, logs, served_logs, log)
    names = parse_policies(policies) if policies.strip() else []
    check_policies_fit(names, pm, bundle.version, "--policies")
    entries = [ReplayPolicy(name, pm, name) for name in names]
    in_sample: dict[str, list[int]] = {}
    for spec in page_models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise HomepageError(f"--page-model: {spec!r} is not NAME=DIR")
        if name == "logged" or name in {e.name for e in entries}:  # the report's columns are keyed by name
            raise HomepageError(f"--page-model: {name!r} is already a policy of this replay (or 'logged'); give it another NAME")
        if not (Path(path) / "model.txt").is_file():
            what = "a file" if Path(path).is_file() else ("a model bundle or dataset" if (Path(path) / "manifest.json").is_file() else "not a page model directory")
            raise HomepageError(f"--page-model {spec}: {path} is {what}; give a page model from `homepage train-from-logs --out`")
        model = PageModel.load(Path(path))
        learnt = model.manifest.get("served_window")
        if learnt is not None and learnt[0] <= int(logs["ts"].max()) and learnt[1] >= int(logs["ts"].min()):
            in_sample[name] = [int(learnt[0]), int(learnt[1])]
            typer.echo(
                f"warning: --page-model {name}: trained on pages served from {learnt[0]} to {learnt[1]}, which overlaps "
                f"{served_logs}: its estimate is in-sample (replay logs served after its training window for one that is not)",
                err=True,
            )
        entries.append(ReplayPolicy(name, PageModels(pm.version, pm.config_hash, pm.catalog, pm.rankers, page_model=model, artwork=pm.artwork, rules=pm.rules), "stage-wise"))
    if not entries:
        raise HomepageError("--policies: give at least one policy or --page-model")
    theta = _theta(examination_json, logs, served_logs)
    n_layouts = int(logs.groupby(["user_id", "ts", "policy"]).ngroups)
    bar, task = _progress("replay", n_layouts)
    with bar:
        result = replay_served_logs(logs, log, entries, theta, bundle.config.half_life_seconds, floor, progress=lambda n: bar.advance(task, n))
    report = result.to_json(bootstrap)
    if in_sample:
        report["in_sample"] = in_sample  # page models scored on pages from the window they were trained on
    table = Table(title=f"served-log replay: {report['layouts']} layouts, {report['visits']} visits")
    table.add_column("policy")
    for m in MEASURES:
        table.add_column(m, justify="right")
    for name, res in report["policies"].items():  # type: ignore[union-attr]
        table.add_row(name, *(f"{res[m]['mean']:.3f} [{res[m]['ci'][0]:.3f}, {res[m]['ci'][1]:.3f}]" for m in MEASURES))
    table_console().print(table)
    if json_out is not None:
        write_json(json_out, report, "--json", indent=2)
