"""``homepage generate``: write a seeded synthetic world (tables + ground truth) as a dataset."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from homepage.cli import app, err
from homepage.cli.outputs import check_dataset_out
from homepage.errors import HomepageError


@app.command("generate")
def generate(
    users: int = typer.Option(2000, "--users", min=1, help="Number of users."),
    titles: int = typer.Option(1000, "--titles", min=10, help="Number of titles."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed; same seed, same tables."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write (replaced atomically)."),
    events: int | None = typer.Option(None, "--events", min=1, help="Target number of events (default 50 per user)."),
    days: int = typer.Option(365, "--days", min=30, help="Length of the history period in days."),
) -> None:
    """Generate a synthetic world: catalog with artwork, users, viewing histories, truth.npz."""
    from fixtures.world import WorldParams, generate_world, write_world

    check_dataset_out(out, "--out")
    if events is not None and events < users:
        raise HomepageError(f"--events: {events} is fewer than one event per user ({users})")
    params = WorldParams(n_users=users, n_titles=titles, seed=seed, n_events=events, days=days)
    with Progress(
        TextColumn("generating"), BarColumn(), TextColumn("{task.completed}/{task.total} users"), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("users", total=users)
        world = generate_world(params, progress=lambda done, total: bar.update(task, completed=done))
    manifest = write_world(world, out)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(manifest.kind_counts.items()))
    typer.echo(
        f"{out}: {manifest.counts['users']} users, {manifest.counts['titles']} titles, "
        f"{manifest.counts['variants']} variants, {manifest.counts['events']} events ({kinds})"
    )
