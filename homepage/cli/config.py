"""``homepage config show``: the pipeline configuration in effect, as the JSON a ``--config`` file takes."""

from __future__ import annotations

from pathlib import Path

import typer

from homepage.cli import app

config_app = typer.Typer(help="Pipeline configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(config: Path | None = typer.Option(None, "--config", help="A config file to check and show with its defaults filled in.")) -> None:
    """Print the configuration (the defaults, or --config's) as JSON: a starting point for a config file.

    Its ``rankers`` list replaces the default rankers as a whole: to add a ranker, keep the
    entries shown and append yours.
    """
    from homepage.config import load_config

    typer.echo(load_config(config).model_dump_json(indent=2))
