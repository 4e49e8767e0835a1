"""``homepage explain``: one user's page at one time, built offline and explained row by row."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer

from homepage.cli import app


@app.command("explain")
def explain_command(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `homepage ingest` or `homepage generate`)."),
    models: Path = typer.Option(..., "--models", help="Models directory or bundle (from `homepage train`)."),
    user: int = typer.Option(..., "--user", help="The user whose page to build (an id the dataset does not hold gets a new user's page)."),
    at: str | None = typer.Option(None, "--at", help="Request time (ISO or Unix seconds); default: the bundle's training cut."),
    world_at: str | None = typer.Option(
        None, "--world-at", help="The world state's time (a served page's world_as_of); default: --at rounded down to the hour, as replay."
    ),
    policy: str = typer.Option("stage-wise", "--policy", help="Page policy (as in `homepage replay --policies`)."),
    rows: int | None = typer.Option(None, "--rows", min=1, max=100, help="Page rows; default: the bundle's config (page.rows)."),
    cols: int | None = typer.Option(None, "--cols", min=1, max=100, help="Page columns; default: the bundle's config (page.cols)."),
    device: str | None = typer.Option(None, "--device", help="Request device (tv, web, mobile, tablet); a page-model feature."),
    hour: int | None = typer.Option(None, "--hour", min=0, max=23, help="Request hour of day; a page-model feature."),
    region: str | None = typer.Option(
        None, "--region", help="Request region, as the API's region parameter: regional rows for it instead of the user's profile region."
    ),
    horizon_days: float = typer.Option(30.0, "--horizon-days", min=0.001, max=3650.0, help="Plays in (at, at + horizon] are marked as hits."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every row's features, titles and hits here."),
) -> None:
    """Explain one user's page: per row, why it is there and what the user played from it.

    Build USER's page as of --at with the bundle, exactly as replay and the API do, and show per
    row its stage, score, the rule that forced it, the ranker's reason, its features at that stage,
    and which of its titles the user played afterwards."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    from homepage.api.schemas import REGION_PATTERN
    from homepage.bundle import load_bundle
    from homepage.cli.outputs import check_output_file, table_console
    from homepage.cli.replay import check_policies_fit, parse_policies, refuse_other_catalog
    from homepage.cli.train import parse_time
    from homepage.dataset import load_dataset
    from homepage.domain import RequestContext
    from homepage.errors import HomepageError
    from homepage.eventlog import EventLog
    from homepage.page import PageModels, build_page
    from homepage.page_explanation import TABLE_FEATURES, explain_rows
    from homepage.pagebuilder.features import DEVICES
    from homepage.replay.protocol import ReplayProtocol
    from homepage.replay.run import CheckpointedWorlds
    from homepage.strict_json import write_json

    check_output_file(json_out, "--json")
    try:
        names = parse_policies(policy)
    except HomepageError as e:  # its words name replay's option
        raise HomepageError(str(e).replace("--policies", "--policy", 1)) from None
    if len(names) != 1:
        raise HomepageError(f"--policy: one policy, not a list ({policy!r})")
    name = names[0]
    if device is not None and device not in DEVICES:
        raise HomepageError(f"--device: {device!r} is not one of {', '.join(DEVICES)}")
    if region is not None and not re.fullmatch(REGION_PATTERN, region):
        raise HomepageError(f"--region: {region!r} is not a region (1 to 16 letters, digits, '_' or '-')")
    t = parse_time(at, "--at") if at is not None else None
    w_at = parse_time(world_at, "--world-at") if world_at is not None else None
    bundle = load_bundle(models)
    pm = PageModels.from_bundle(bundle)
    check_policies_fit([name], pm, bundle.version, "--policy")
    if t is None:
        t = int(bundle.until)
    elif t < bundle.until:
        raise HomepageError(
            f"--at {t}: before bundle {bundle.version}'s training cut {bundle.until}; the bundle has seen events after it "
            "(train one with `homepage train --until` at or before that time)"
        )
    if w_at is not None and w_at > t:  # before the dataset loads (a minute on a large one)
        raise HomepageError(f"--world-at {w_at}: after the request time {t}; a page is built on a world state of its time or before")
    ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    refuse_other_catalog(ds.titles, bundle, dataset, "--models")
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    state = log.user_state(user, t)
    if w_at is not None:  # the world a served page was built on (its world_as_of), as the API decayed it to that second
        world = log.global_state(w_at, bundle.config.half_life_seconds)
    else:  # the world as replay takes it (rounded down to the protocol's granularity), so the page is the one replay scores
        world = CheckpointedWorlds(log, bundle.config.half_life_seconds, ReplayProtocol().world_granularity).at(t)
    ctx = RequestContext(
        user_id=user,
        now=t,
        rows=rows if rows is not None else bundle.config.page.rows,
        cols=cols if cols is not None else bundle.config.page.cols,
        device=device,
        hour=hour,
        region=region,
    )
    page = build_page(state, world, pm, ctx, policy=name, explain=True)
    later = log.after(user, t, int(horizon_days * 86_400))
    later = np.setdiff1d(later[later >= 0], state.known_titles)
    played = bundle.catalog.title_ids[later]
    explained = explain_rows(page, bundle.catalog, played)

    if json_out is not None:  # before the table: a reader that stops early (| head) leaves the file written
        write_json(
            json_out,
            {
                "user_id": user,
                "at": t,
                "policy": name,
                "request": {"rows": ctx.rows, "cols": ctx.cols, "device": ctx.device, "region": ctx.region, "hour": ctx.hour},
                "world_as_of": int(world.as_of),
                "model_version": bundle.version,
                "events_before": len(state),
                "played_after": [int(x) for x in played.tolist()],
                "horizon_days": horizon_days,
                "rows": [r.to_json() for r in explained],
                "notes": list(page.notes),
            },
            "--json",
        )
    console = table_console()
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))
    who = f"{len(state):,} events up to then" if len(state) else "no events up to then: a new user's page"
    shown = {tid for r in explained for tid in r.title_ids}
    hits = sum(len(r.hits) for r in explained)
    console.print(
        f"user {user} at {when} UTC ({who}); bundle {bundle.version}, policy {name}; "
        f"{len(played)} title{'s' if len(played) != 1 else ''} played in the next {horizon_days:g} days, {hits} on this page of {len(shown)} titles",
        highlight=False,
    )
    table = Table(show_lines=False)
    for col in ("stage", "row", "reason", "forced by", "score", *TABLE_FEATURES, "hits (columns)"):
        table.add_column(col, overflow="fold")
    for r in explained:
        feats = [("" if r.features.get(f) is None else f"{r.features[f]:.2f}" if f != "same_ranker_above" else f"{r.features[f]:.0f}") for f in TABLE_FEATURES]
        table.add_row(
            str(r.stage),
            escape(r.display_title),
            escape(r.reason),
            escape(r.forced_by or ""),
            f"{r.score:.3f}",
            *feats,
            ", ".join(str(c + 1) for c in r.hits),
        )
    console.print(table)
    for note in page.notes:
        console.print(f"note: {escape(note)}", highlight=False)
