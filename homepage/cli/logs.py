"""``homepage logs``: served pages out as Parquet (``export``), acknowledged events into a dataset (``merge-events``)."""

from __future__ import annotations

from pathlib import Path

import typer

from homepage.cli import app

logs_app = typer.Typer(help="Served-page and event logs.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")


@logs_app.command("export")
def logs_export(out: Path = typer.Option(..., "--out", help="Parquet file to write (served-log format).")) -> None:
    """Export served pages joined with their attributed plays, for replay and training."""
    from homepage.cli.outputs import check_output_file
    from homepage.cli.versions import open_store
    from homepage.errors import HomepageError
    from homepage.logs_export import served_impressions
    from homepage.servedlogs.schema import write_served_logs

    if out.suffix != ".parquet":
        raise HomepageError(f"--out {out}: must end in .parquet")
    check_output_file(out, "--out")
    store = open_store()
    try:
        frame = served_impressions(store.served_entries(), store.event_entries())
    finally:
        store.close()
    if frame.empty:  # said as such: the served log's own check read the empty columns as float ts
        raise HomepageError(
            f"--out {out}: no served pages to export under key prefix {store.keys.prefix!r} (none served yet, or all erased); nothing written"
        )
    write_served_logs(frame, out)
    typer.echo(f"{out}: {frame['page_id'].nunique()} pages, {len(frame)} impressions, {int(frame['played'].sum())} attributed plays")


@logs_app.command("merge-events")
def logs_merge_events(
    dataset: Path = typer.Argument(..., help="Dataset directory to fold the acknowledged events into."),
    accept_gap: bool = typer.Option(False, "--accept-gap", help="Merge what is left even if the stream's cap trimmed unmerged events or the stream started over (Redis restarted empty)."),
) -> None:
    """Fold into a dataset what the API acknowledged since the last merge: events, profiles (region, favourite genres), erasures."""
    from homepage.cli.versions import open_store
    from homepage.events_merge import merge_stream_into_dataset

    store = open_store()
    try:
        r = merge_stream_into_dataset(dataset, store, accept_gap=accept_gap)
    finally:
        store.close()
    if not r.changed:
        typer.echo(f"{dataset}: nothing new (events stream merged up to {r.last_id or 'nothing yet'})")
        return
    typer.echo(
        f"{dataset}: +{r.added:,} events, {r.new_users:,} new users, {r.erased_events:,} events of erased users dropped; "
        f"{r.total_events:,} events in all; stream merged up to {r.last_id}"
        + (f"; {r.skipped:,} events outside ingest's ranges skipped" if r.skipped else "")
    )
