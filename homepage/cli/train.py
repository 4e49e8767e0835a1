"""``homepage train``: fit every configured ranker and write a versioned model bundle."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import typer

from homepage.cli import app


def parse_time(text: str, option: str = "--until") -> int:
    """Unix seconds from ``text`` (the value of ``option``): an integer, or an ISO date/time (UTC unless it says otherwise).

    An integer after the year 9999 is refused as milliseconds, as ingest and ``POST /events`` refuse them.
    """
    from homepage.domain import LATEST_TIME
    from homepage.errors import HomepageError

    s = text.strip()
    if re.fullmatch(r"-?[0-9]+", s):  # not str.isdigit(): "²" is a digit to it, and int() refuses it
        if int(s) > LATEST_TIME:
            raise HomepageError(f"{option}: {s} is after the year 9999: Unix seconds expected, not milliseconds")
        return int(s)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as e:
        raise HomepageError(f"{option}: {text!r} is neither Unix seconds nor an ISO date/time") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


MIN_PAGE_REQUESTS = 200  # fewer page-model training requests than this: a warning (ml-latest-small gives 3,600)


@app.command("train")
def train(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `homepage ingest` or `homepage generate`)."),
    out: Path = typer.Option(..., "--out", help="Models directory; the bundle goes into OUT/<version>/."),
    until: str | None = typer.Option(
        None, "--until", help="Train on events up to this time (ISO or Unix seconds); default: the split quantile."
    ),
    config: Path | None = typer.Option(None, "--config", help="Pipeline config JSON; default: the built-in config."),
    artwork_logs: Path | None = typer.Option(
        None, "--artwork-logs", help="Logged artwork impressions (served log or artwork feedback Parquet) to train the artwork selector on."
    ),
    engine: str = typer.Option("local", "--engine", help="Where the heavy steps run: local (this process) or spark (needs the \\[spark] extra)."),
    master: str | None = typer.Option(None, "--master", help="With --engine spark: Spark master URL; default local[2]."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Local engine: processes building the page model's training data."),
) -> None:
    """Fit every configured ranker on events with ts <= UNTIL and write one model bundle."""
    from rich.console import Console

    from homepage.cli.outputs import check_output_dir
    from homepage.cli.ranker_warnings import ranker_problem_warnings
    from homepage.config import load_config
    from homepage.dataset import load_dataset
    from homepage.engines import get_engine

    check_output_dir(out, "--out")  # a read-only volume fails now, not after loading the dataset
    cfg = load_config(config)
    t = parse_time(until) if until is not None else None
    runner = get_engine(engine, master, dataset)
    try:
        ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
        bundle = runner.train(ds, out, cfg, t, True, artwork_logs=artwork_logs, workers=workers)
    finally:
        runner.close()
    training = bundle.manifest["components"].get("page_model", {}).get("training", {})
    console = Console(stderr=True)
    for line in ranker_problem_warnings(training.get("ranker_problems", {}), training.get("requests", 0), "page-model training requests"):
        console.print(line)
    if training and (training.get("requests", 0) < MIN_PAGE_REQUESTS or training.get("valid_ndcg_at_1") is None):
        console.print(
            f"[yellow]warning:[/] the page model learnt from {training.get('requests', 0)} requests"
            f"{' and had no held-back users to validate on' if training.get('valid_ndcg_at_1') is None else ''}: too few to trust; "
            "compare it with the template (homepage replay) before serving it, or train the rankers alone "
            '("page": {"train_model": false} in the --config)',
            highlight=False,
            soft_wrap=True,
        )
    gone = bundle.manifest["components"].get("artwork", {}).get("logs", {}).get("skipped_not_in_catalog", 0)
    if gone:
        console.print(f"note: --artwork-logs: left out {gone:,} impressions of titles or artwork variants {dataset} does not have", highlight=False, soft_wrap=True)
    typer.echo(str(bundle.path))
