"""Data commands: ``generate``, ``ingest``, ``dataset info``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from homepage.cli import app
from homepage.dataset import dataset_info

dataset_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
ingest_app = typer.Typer(help="Turn public data into a dataset directory.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(ingest_app, name="ingest")


@dataset_app.command("info")
def info(
    dataset: Path = typer.Argument(..., help="Dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a dataset's counts and time range."""
    summary = dataset_info(dataset)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            typer.echo(f"{k:>10}: {v}")
