"""``homepage backtest``: rolling-origin replay, a bundle trained and replayed per fold, the folds pooled."""

from __future__ import annotations

from pathlib import Path

import typer

from homepage.cli import app


@app.command("backtest")
def backtest_command(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `homepage ingest` or `homepage generate`)."),
    out: Path = typer.Option(..., "--out", help="Models directory: fold k's bundle goes into OUT/fold-<k>/<version>/."),
    folds: str = typer.Option(
        "0.5,0.6,0.7,0.8", "--folds", help="Cut quantiles of event time: fold k trains up to cut k and replays up to cut k+1 (the last: to the end)."
    ),
    config: Path | None = typer.Option(None, "--config", help="Pipeline config JSON; default: the built-in config."),
    policies: str = typer.Option(
        "stage-wise,row-ranking,template,single-list", "--policies", help="Comma-separated policy names to compare."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report JSON here: {protocol, folds, pooled, provenance}."),
    horizon_days: float = typer.Option(30.0, "--horizon-days", min=0.001, max=3650.0, help="Targets are plays/ratings in (t, t + horizon]."),
    requests_per_user: int = typer.Option(3, "--requests-per-user", min=1, max=1000),
    max_requests: int = typer.Option(2000, "--max-requests", min=1, help="Per fold."),
    seed: int = typer.Option(0, "--seed", min=0),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100, help="Bootstrap resamples (of users) for the intervals."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Processes for training data and for building pages."),
) -> None:
    """Backtest page policies over time: train and replay per fold, pool the folds.

    For each fold, train a bundle on events up to its cut and replay the requests before the next
    cut, then pool every fold's requests into one report (intervals resample users across folds).
    More users than one split holds: narrower intervals on small datasets, and a check that a
    result holds at more than one point in time."""
    from rich.console import Console
    from rich.table import Table

    from homepage.catalog import Catalog
    from homepage.cli.outputs import check_output_dir, check_output_file, table_console
    from homepage.cli.ranker_warnings import ranker_problem_warnings
    from homepage.cli.replay import parse_policies
    from homepage.config import load_config
    from homepage.dataset import load_dataset
    from homepage.engines import get_engine
    from homepage.errors import HomepageError
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.pagebuilder.policies import policy as get_policy
    from homepage.replay.backtest import fold_summary, parse_quantiles, plan_folds, pool
    from homepage.replay.protocol import ReplayProtocol, sample_requests
    from homepage.replay.report import print_tables
    from homepage.provenance import run_provenance
    from homepage.strict_json import write_json

    check_output_file(json_out, "--json")
    check_output_dir(out, "--out")
    quantiles = parse_quantiles(folds)
    names = parse_policies(policies)
    cfg = load_config(config)
    if not cfg.page.train_model and any(get_policy(n).needs_model for n in names):
        raise HomepageError("--policies: a policy needs a page model, and the config has page.train_model off")
    ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    provenance = run_provenance(dataset)  # the bytes just read, the code running
    log = EventLog.from_frame(ds.events, Catalog.from_frames(ds.titles, ds.variants), ds.users)
    if not len(log):
        raise HomepageError(f"{dataset}: no plays or ratings to backtest on")
    plan = plan_folds(log, quantiles)
    console = Console(stderr=True)
    runner = get_engine("local", None, dataset)
    results, lines = [], []
    try:
        for k, fold in enumerate(plan):
            console.print(f"fold {k + 1}/{len(plan)}: train up to the {fold.quantile} quantile ({fold.cut}), replay to {fold.until or 'the end'}")
            bundle = runner.train(ds, out / f"fold-{k}", cfg, fold.cut, False, workers=workers)
            pm = PageModels.from_bundle(bundle)
            protocol = ReplayProtocol(
                split_time=fold.cut,
                split_quantile=fold.quantile,
                horizon_days=horizon_days,
                requests_per_user=requests_per_user,
                max_requests=max_requests,
                seed=seed,
                rows=cfg.page.rows,
                cols=cfg.page.cols,
                viewport_rows=pm.rules.viewport_rows,
                viewport_cols=pm.rules.viewport_cols,
            )
            requests = sample_requests(log, protocol, until=fold.until)
            if len(requests) == 0:
                raise HomepageError(f"--folds: fold {k + 1} ({fold.quantile}) has no requests between {fold.cut} and {fold.until or 'the end'}")
            result = runner.replay(log, bundle.path, pm, names, requests, protocol, bundle.config.half_life_seconds, fold.cut, lambda n: None, workers)
            results.append(result)
            lines.append(fold_summary(fold, result))
    finally:
        runner.close()
    merged = pool(results)
    pooled = merged.to_json(n_boot=bootstrap)
    # the pooled report's split is every fold's, not the first one's
    pooled["protocol"].update(folds=list(quantiles), split_quantile=list(quantiles), split_time=[f.cut for f in plan])  # type: ignore[attr-defined]
    report = {"protocol": pooled["protocol"], "folds": lines, "pooled": pooled, "provenance": provenance}
    table = Table(title="ndcg_2d per fold (warm requests)")
    for col in ("fold", "split", "requests", "users", *names):
        table.add_column(col, justify="right")
    for line in lines:
        means = line["policies"]
        table.add_row(str(line["quantile"]), str(line["split_time"]), str(line["warm_requests"]), str(line["users"]),
                      *(f"{means[n]['ndcg_2d']:.4f}" for n in names))  # type: ignore[index]
    tc = table_console()
    tc.print(table)
    print_tables(pooled, tc)
    for line in ranker_problem_warnings(merged.ranker_problems, len(merged.requests), "requests of all folds"):
        console.print(line)
    if json_out is not None:
        write_json(json_out, report, "--json", indent=2)
