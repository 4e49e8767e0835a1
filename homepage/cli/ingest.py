"""``homepage ingest movielens``: a MovieLens release -> a dataset directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from homepage.cli import err
from homepage.cli.data import ingest_app
from homepage.cli.outputs import check_dataset_out
from homepage.progress_bar import ProgressBar


@ingest_app.command("movielens")
def movielens(
    src: Path = typer.Argument(..., help="An unpacked MovieLens release (ml-latest-small, ml-1m, ml-100k, ml-25m, ...)."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to write (replaced atomically)."),
    metadata: Path | None = typer.Option(None, "--metadata", help="MeLU-format metadata CSV (director, cast, rating, poster)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed rows (counted) instead of stopping."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Ingest a MovieLens release of any layout; ratings become rating events."""
    from homepage.ingest import ingest_bytes, ingest_movielens

    check_dataset_out(out, "--out")
    total = ingest_bytes(src, metadata)
    columns = (TextColumn("ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with ProgressBar(*columns, console=err, disable=quiet, transient=True) as progress:
        task = progress.add_task("ingest", total=total)
        manifest, bad = ingest_movielens(
            src, out, metadata=metadata, skip_bad=skip_bad, on_bytes=lambda n: progress.advance(task, n)
        )
    if bad.total:
        err.print(f"[yellow]skipped {bad.total} malformed rows[/]", highlight=False)
        for f, c in sorted(bad.counts.items()):
            lines = ", ".join(str(x) for x in bad.first_lines.get(f, []))
            err.print(escape(f"  {f}: {c} (first at lines {lines}; {bad.first_messages.get(f, '')})"), highlight=False)
        share = bad.total / max(bad.total + manifest.counts["events"] + manifest.counts["titles"], 1)
        if share > 0.1:  # a file in another format, not a few bad lines: the figures would describe what is left
            err.print(
                escape(f"warning: {share:.0%} of the rows were skipped: the file may not be in the format read (see the first message above)"),
                style="yellow",
                highlight=False,
            )
    unknown = int(manifest.extra.get("ratings_of_unknown_titles", 0) or 0)  # type: ignore[call-overload]
    if unknown:
        share = unknown / max(manifest.counts["events"], 1)
        err.print(
            escape(f"warning: {unknown} ratings ({share:.0%}) are of titles the movies file does not list; they are kept but no ranker can recommend those titles"),
            style="yellow",
            highlight=False,
        )
    for f, n in dict(manifest.extra.get("repeated_ids") or {}).items():  # type: ignore[call-overload]
        err.print(escape(f"warning: {f}: {n} rows repeat an id of an earlier row; the first of each was kept"), style="yellow", highlight=False)
    repeats = int(manifest.extra.get("repeated_ratings", 0) or 0)  # type: ignore[call-overload]
    if repeats:
        err.print(
            escape(f"warning: {repeats} ratings repeat the (user, title) pair of an earlier rating; the earliest of each was kept"),
            style="yellow",
            highlight=False,
        )
    c = manifest.counts
    typer.echo(
        f"{out}: {manifest.source}, {c['events']} events, {c['titles']} titles, {c['users']} users, {c['variants']} variants"
    )
