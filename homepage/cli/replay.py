"""``homepage replay``: offline page-quality evaluation of page policies on held-out requests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from homepage.cli import app


def parse_policies(text: str) -> list[str]:
    """Policy names from ``--policies`` (comma-separated), each checked against the registered policies."""
    from homepage.errors import HomepageError
    from homepage.pagebuilder.policies import policy as get_policy

    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))  # a repeated name is one policy
    if not names:
        raise HomepageError("--policies: give at least one policy name")
    for n in names:
        try:
            get_policy(n)
        except HomepageError as e:
            raise HomepageError(f"--policies: {e}") from None
    return names


def check_policies_fit(names: list[str], models: Any, version: str, option: str) -> None:
    """Refuse a policy the bundle cannot build: one needing a page model it lacks, or
    ``single-list`` without a personalised ranker (it would be a most-popular list under that ranker's name)."""
    from homepage.errors import HomepageError
    from homepage.pagebuilder.policies import policy as get_policy

    for n in names:
        if get_policy(n).needs_model and models.page_model is None:
            raise HomepageError(f"{option}: {n!r} needs a page model, and bundle {version} has none")
        if get_policy(n).single_list and models.personal is None:
            raise HomepageError(f"{option}: {n!r} is a personalised ranker's list, and bundle {version} has no such ranker")


def refuse_other_catalog(titles: Any, bundle: Any, dataset: Path, option: str) -> None:
    """Refuse a bundle trained on another catalog than the dataset's titles: its titles' statistics would be read as these."""
    from homepage.catalog import catalog_mismatch
    from homepage.errors import HomepageError

    why = catalog_mismatch(titles["title_id"].to_numpy(), titles["name"], bundle.catalog, str(dataset))
    if why is not None:
        raise HomepageError(f"{option}: bundle {bundle.version} was trained on another catalog: {why}; train it on {dataset}")


@app.command("replay")
def replay_command(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `homepage ingest` or `homepage generate`)."),
    models: Path = typer.Option(..., "--models", help="Models directory or bundle (from `homepage train`)."),
    policies: str = typer.Option(
        "stage-wise,row-ranking,template,single-list", "--policies", help="Comma-separated policy names to compare."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here."),
    report_dir: Path | None = typer.Option(None, "--report", help="Write a Markdown report with PNG plots here."),
    split_time: str | None = typer.Option(None, "--split-time", help="T (ISO or Unix seconds); default: the 80th percentile of event times."),
    until: str | None = typer.Option(
        None, "--until", help="Requests and their targets end here (ISO or Unix seconds); for validation replays inside a training window."
    ),
    horizon_days: float = typer.Option(30.0, "--horizon-days", min=0.001, max=3650.0, help="Targets are plays/ratings in (t, t + horizon]."),
    requests_per_user: int = typer.Option(3, "--requests-per-user", min=1, max=1000),
    max_requests: int = typer.Option(2000, "--max-requests", min=1),
    rows: int | None = typer.Option(None, "--rows", min=1, max=100, help="Page rows; default: the bundle's config (page.rows), as in train and backtest."),
    cols: int | None = typer.Option(None, "--cols", min=1, max=100, help="Page columns; default: the bundle's config (page.cols)."),
    seed: int = typer.Option(0, "--seed", min=0),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100, help="Bootstrap resamples for the intervals."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Processes building pages in parallel."),
    served_logs: Path | None = typer.Option(
        None,
        "--served-logs",
        help="Evaluate from logs of pages actually served (impressions with row and column, attributed plays, "
        "propensities; `homepage logs export` writes them) instead of from the interaction history.",
    ),
    examination: Path | None = typer.Option(
        None, "--examination", help="With --served-logs: slot examination estimate (`homepage examination --json`)."
    ),
    engine: str = typer.Option("local", "--engine", help="Where pages are built: local (--workers processes) or spark (needs the \\[spark] extra)."),
    master: str | None = typer.Option(None, "--master", help="With --engine spark: Spark master URL; default local[2]."),
    baseline_models: Path | None = typer.Option(
        None,
        "--baseline-models",
        help="Also replay the same policies with this bundle (trained on the same dataset, e.g. without your ranker), "
        "as baseline:NAME, with paired differences on the same requests.",
    ),
) -> None:
    """Replay held-out requests and score every policy's pages against later plays.

    Rebuild each user's state as of t, build the page with every policy through the same
    build_page the API uses, and score it against what the user played after t. Refuses a bundle
    trained on events after the split."""
    import numpy as np
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from homepage.bundle import load_bundle
    from homepage.cli.outputs import check_output_dir, check_output_file, table_console
    from homepage.cli.ranker_warnings import ranker_problem_warnings
    from homepage.cli.train import parse_time
    from homepage.dataset import load_dataset
    from homepage.engines import get_engine
    from homepage.errors import HomepageError
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.provenance import run_provenance
    from homepage.replay.protocol import ReplayProtocol, sample_requests
    from homepage.replay.report import foreign_report_files, print_tables, write_report
    from homepage.pagebuilder.policies import policy as get_policy
    from homepage.strict_json import write_json

    def day(t: int) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(t))

    check_output_file(json_out, "--json")
    check_output_dir(report_dir, "--report")
    if report_dir is not None and (foreign := foreign_report_files(report_dir)):
        raise HomepageError(f"--report {report_dir}: would overwrite {', '.join(foreign)}, which is not a replay report; give another directory")
    if served_logs is not None:
        if engine != "local":
            raise HomepageError("--served-logs: runs on the local engine only")
        if baseline_models is not None:
            raise HomepageError("--baseline-models: not with --served-logs (give replay-logs a --page-model NAME=DIR instead)")
        from homepage.cli.servedlogs import replay_logs

        replay_logs(dataset, models, served_logs, policies, [], 0.05, examination, json_out, bootstrap)
        return
    split = parse_time(split_time, "--split-time") if split_time is not None else None  # bad input fails before any loading
    until_t = parse_time(until) if until is not None else None
    names = parse_policies(policies)
    runner = get_engine(engine, master, dataset)
    bundle = load_bundle(models)
    pm = PageModels.from_bundle(bundle)
    check_policies_fit(names, pm, bundle.version, "--policies")
    base = load_bundle(baseline_models) if baseline_models is not None else None
    base_pm = PageModels.from_bundle(base) if base is not None else None
    if base is not None and base_pm is not None:
        if not np.array_equal(base.catalog.title_ids, bundle.catalog.title_ids):
            raise HomepageError(f"--baseline-models: bundle {base.version} has another catalog than {bundle.version}; train both on {dataset}")
        check_policies_fit(names, base_pm, base.version, "--baseline-models")
    ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    provenance = run_provenance(dataset)  # the bytes just read, the code running
    for option, b in (("--models", bundle), ("--baseline-models", base)):
        if b is not None:
            refuse_other_catalog(ds.titles, b, dataset, option)
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)  # index titles as the models do
    protocol = ReplayProtocol(
        split_time=split,
        split_quantile=bundle.config.split_quantile,
        horizon_days=horizon_days,
        requests_per_user=requests_per_user,
        max_requests=max_requests,
        seed=seed,
        rows=rows if rows is not None else bundle.config.page.rows,
        cols=cols if cols is not None else bundle.config.page.cols,
        viewport_rows=pm.rules.viewport_rows,
        viewport_cols=pm.rules.viewport_cols,
    )
    T = protocol.resolve_split(log)
    for option, b in (("--models", bundle), ("--baseline-models", base)):
        if b is not None and b.until > T:
            raise HomepageError(
                f"{option}: bundle {b.version} was trained on events up to {b.until}, after the split {T}; "
                "retrain with `homepage train --until` at or before the split"
            )
    stale = [
        f"{option}: bundle {b.version} was trained up to {day(b.until)}, {(T - b.until) / 86_400:.0f} days before the split "
        f"{day(T)}: the {gap:,} events between are neither trained on nor replayed (retrain with --until at the split "
        "for the figures of a model deployed then)"
        for option, b in (("--models", bundle), ("--baseline-models", base))
        if b is not None and T - b.until > protocol.horizon_days * 86_400
        and (gap := int(np.searchsorted(log.t_ts, T, side="right") - np.searchsorted(log.t_ts, b.until, side="right")))
    ]
    if until_t is not None and until_t <= T:
        raise HomepageError(f"--until {until_t}: at or before the split {T}; requests come after the split")
    requests = sample_requests(log, protocol, until=until_t)
    if len(requests) == 0:
        raise HomepageError(f"{dataset}: no user has plays or ratings after the split {T}")
    console = Console(stderr=True, soft_wrap=True)  # warnings whole, not cut at 80 columns in a log
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("replay", total=len(requests) * (2 if base is not None else 1))
        try:
            result = runner.replay(log, bundle.path, pm, names, requests, protocol, bundle.config.half_life_seconds, T, lambda n: bar.advance(task, n), workers)
            if base is not None:
                baseline = runner.replay(
                    log, base.path, base_pm, names, requests, protocol, base.config.half_life_seconds, T, lambda n: bar.advance(task, n), workers
                )
                result = result.with_baseline(baseline)
        finally:
            runner.close()
    report = result.to_json(n_boot=bootstrap) | {"provenance": provenance}
    print_tables(report, table_console())
    for line in ranker_problem_warnings(result.ranker_problems, len(result.requests), "requests"):
        console.print(line)
    # a ranker that proposed nothing looks like one that contributes nothing; the row policies place
    # any ranker's rows (the template one of each type first), the single list none but its own
    row_runs = [run for name, run in result.runs.items() if not get_policy(name.removeprefix("baseline:")).single_list]
    placed = {k for run in row_runs for k in run.ranker_rows}
    silent = [
        f"ranker {r.name} put no row on any replayed page: it proposed none, or none won a place (its data may lack "
        "what it reads: watch progress for continue_watching, ratings at or above its threshold for video_to_video's anchors)"
        for r in bundle.rankers if row_runs and r.name not in placed
    ]
    for line in [*stale, *result.warnings(), *silent]:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    if json_out is not None:
        write_json(json_out, report, "--json", indent=2)
    if report_dir is not None:
        path = write_report(result, report, report_dir)
        console.print(f"report: {path}")
