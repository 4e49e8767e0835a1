"""``homepage eval rankers``: every configured ranker and the peer baselines on one temporal split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from homepage.cli import app
from homepage.cli.outputs import check_output_file, table_console
from homepage.cli.train import parse_time
from homepage.errors import HomepageError
from homepage.progress_bar import ProgressBar
from homepage.provenance import run_provenance
from homepage.strict_json import write_json

eval_app = typer.Typer(help="Evaluate each ranker's own list against peer baselines.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

METRICS = ("ndcg@10", "ndcg@20", "recall@20", "recall@50", "coverage", "novelty")


def parse_lambdas(text: str) -> list[float]:
    """``"50,200,500"`` -> [50.0, 200.0, 500.0]; a HomepageError naming the option otherwise."""
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise HomepageError(f"--ease-lambdas: not a comma-separated list of numbers: {text!r}") from e
    if not out or any(x <= 0 for x in out):
        raise HomepageError(f"--ease-lambdas: needs positive numbers, got {text!r}")
    return out


def results_table(result: dict[str, Any]) -> Table:
    """Rankers and peers side by side, one row each."""
    p = result["protocol"]
    what = "rankers vs peers" if result["peers"] else "rankers"
    table = Table(title=f"{what}: split {p['split_time']}, {p['test_users']} test users")
    table.add_column("method", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for m in METRICS:
        table.add_column(m, justify="right")
    for kind in ("rankers", "peers"):
        for name, metrics in result[kind].items():
            if "skipped" in metrics or "failed" in metrics:
                table.add_row(name, "ranker (failed)" if "failed" in metrics else kind[:-1], *["-"] * len(METRICS))
                continue
            table.add_row(name, kind[:-1], *[f"{metrics[m]:.4f}" for m in METRICS])
    return table


@eval_app.command("rankers")
def eval_rankers(
    dataset: Path = typer.Argument(..., help="Dataset directory."),
    split_time: str | None = typer.Option(None, "--split-time", help="T (ISO or Unix seconds); default: the config's split quantile."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results here."),
    config: Path | None = typer.Option(None, "--config", help="Pipeline config JSON (which rankers)."),
    min_stars: float | None = typer.Option(None, "--min-stars", min=0.0, max=10.0, help="Positives need at least these stars."),
    ease_lambdas: str = typer.Option("50,200,500,1000", "--ease-lambdas", help="EASE lambdas tried on validation."),
    tune_personalized: bool = typer.Option(
        False, "--tune-personalized", help="Search the personalised blend weights on the validation splits first."
    ),
    only: str | None = typer.Option(None, "--rankers", help="Comma-separated names: evaluate only these of the config's rankers."),
    peers: bool = typer.Option(True, "--peers/--no-peers", help="Also fit the peers (most-popular, EASE, ALS, BPR, cosine); off: rankers alone, faster."),
) -> None:
    """Temporal split: fit on ts <= T, score each test user's top 50 against titles they met after T.

    A ranker that raises or returns rows breaking the contract is reported (table, JSON, an error
    line each) without stopping the others; the command then exits 1.
    """
    from homepage.catalog import Catalog
    from homepage.config import load_config
    from homepage.dataset import load_dataset
    from homepage.evaluation.ranker_eval import run_protocol
    from homepage.eventlog import EventLog
    from homepage.ingest.titles import titles_as_of
    from rankers.base import Ranker
    from rankers.registry import RankerNotFound, build_rankers

    lambdas = parse_lambdas(ease_lambdas)
    check_output_file(json_out, "--json")
    cfg = load_config(config)
    ds = load_dataset(dataset)
    provenance = run_provenance(dataset)  # the bytes just read, the code running
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    if not len(log):
        raise HomepageError(f"{dataset}: no plays or ratings to evaluate on")
    t = parse_time(split_time, "--split-time") if split_time is not None else log.quantile_time(cfg.split_quantile)
    if log.first_ts is not None and not (log.first_ts <= t < (log.last_ts or t)):
        raise HomepageError(f"--split-time: {t} is outside the data ({log.first_ts}..{log.last_ts})")
    if ds.tag_events is not None:  # rankers are fitted at the split: no tags written after it
        catalog = Catalog.from_frames(titles_as_of(ds.titles, ds.tag_events, t), ds.variants)
    specs = cfg.rankers
    if only is not None:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in cfg.rankers}]
        if not wanted or unknown:
            names = ", ".join(s.name for s in cfg.rankers)
            raise HomepageError(f"--rankers: {', '.join(unknown) or repr(only)} not in the config's rankers ({names})")
        specs = [s for s in cfg.rankers if s.name in wanted]
    rankers: list[tuple[str, Ranker | str]] = []
    for spec in specs:
        try:
            rankers.append((spec.name, build_rankers([spec])[0]))
        except RankerNotFound as e:
            rankers.append((spec.name, f"not available: {e}"))
    console = Console(stderr=True)
    with ProgressBar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("splitting", total=None)
        result = run_protocol(
            log, catalog, t, rankers, peers=None if peers else [], ease_lambdas=lambdas, min_stars=min_stars,
            tune_personalized=tune_personalized, half_life=cfg.half_life_seconds,
            progress=lambda msg: bar.update(task, description=msg),
        )
    result["protocol"]["dataset"] = str(dataset)
    result["protocol"]["config_hash"] = cfg.config_hash()
    result["provenance"] = provenance
    if json_out is not None:
        write_json(json_out, result, "--json", indent=2, sort_keys=True)
    table_console().print(results_table(result))
    failed = {n: m["failed"] for n, m in result["rankers"].items() if "failed" in m}
    if failed:
        err = Console(stderr=True)
        for name, why in failed.items():
            err.print(f"[red]error[/]: ranker {name}: {escape(why)}", highlight=False)
        raise typer.Exit(1)
