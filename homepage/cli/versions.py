"""The store's versions: ``publish`` (dataset state and model bundle into Redis), ``rollback``, ``versions``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)

from homepage.cli import app, err
from homepage.cli.train import parse_time
from homepage.config import load_config
from homepage.progress_bar import ProgressBar
from homepage.publish import publish_dataset
from homepage.settings import SettingsError, get_settings, shown_url
from homepage.store import RedisStore, StoreError, StoreRefused, StoreUnavailable, connect


def store_location() -> str:
    """Which Redis the settings name, as a user set it (password hidden): for errors and empty listings."""
    settings = get_settings()
    return f"REDIS_URL {shown_url(settings.redis_url)}" if settings.redis_url else f"HOMEPAGE_EMBEDDED_DIR {str(settings.embedded_dir)!r}"


def open_store() -> RedisStore:
    """A store on the configured Redis, checked with a PING: settings the server refuses name ``REDIS_URL``.

    Bad variables are reported by ``get_settings``; a database index the server does not
    have, or a wrong password, only when connecting.
    """
    settings = get_settings()
    where = store_location()
    store = connect(settings)
    try:
        store.check_settings()
    except StoreRefused as e:
        store.close()
        raise SettingsError(f"{where}: the server refuses it: {e}") from None
    except BaseException:
        store.close()
        raise
    return store


@app.command("publish")
def publish(
    dataset: Path = typer.Argument(..., help="Dataset directory."),
    models: Path | None = typer.Option(None, "--models", help="Model bundle dir, or a models dir with LATEST."),
    at: str | None = typer.Option(None, "--at", help="State as of this time (ISO or Unix seconds; default: the last event)."),
    config: Path | None = typer.Option(None, "--config", help="Pipeline config JSON (trending half-life; default: the bundle's)."),
    keep: int | None = typer.Option(None, "--keep", min=1, help="Published versions to keep (default: settings)."),
) -> None:
    """Load a dataset's state into Redis as a new version and make it active."""
    half_life = load_config(config).half_life_seconds if config is not None else None  # None: the bundle's
    at_ts = parse_time(at, "--at") if at is not None else None
    store = open_store()
    try:
        with ProgressBar(
            TextColumn("publishing users"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True, console=err,
            disable=not err.is_terminal,  # off a terminal a transient bar leaves a blank line before an error's one line
        ) as bar:
            task = bar.add_task("users", total=None)
            result = publish_dataset(
                store,
                dataset,
                at=at_ts,
                models=models,
                half_life=half_life,
                keep=keep,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        store.close()
    m = result.meta
    settings = get_settings()
    # named: a misspelt REDIS_URL publishes into the embedded Redis, which nothing serves from
    into = (
        f"the Redis at REDIS_URL {shown_url(settings.redis_url)}" if settings.redis_url
        else f"the embedded Redis in {str(settings.embedded_dir)!r} (REDIS_URL is not set)"
    )
    typer.echo(
        f"published {m.version} into {into}, prefix {settings.key_prefix!r} (state as of {m.as_of}, {result.users_written} users"
        f"{', bundle ' + m.bundle_version if m.bundle_version else ''}) in {result.seconds:.1f}s"
    )
    if result.deleted_versions:
        typer.echo(f"deleted old versions: {', '.join(result.deleted_versions)}")
    if result.unlisted_files:
        shown = ", ".join(result.unlisted_files[:5]) + (f" and {len(result.unlisted_files) - 5} more" if len(result.unlisted_files) > 5 else "")
        err.print(escape(f"warning: not published, as the bundle's manifest does not list them: {shown}"), style="yellow", highlight=False)


@app.command("rollback")
def rollback() -> None:
    """Make the previous published version active again."""
    store = open_store()
    try:
        check_rollback_target(store)
        replaced = store.active_version()
        active = store.rollback()
        typer.echo(f"active version: {active}")
        try:
            if replaced is not None:
                warn_of_titles_back(store, replaced, active)
            missed = store.events_missed_by(active)
        except (StoreError, ValueError, KeyError) as e:
            # the rollback is done: an error here read as a failed rollback, and running it again rolled back one version more
            err.print(f"[yellow]warning:[/] rolled back to {escape(active)}, but what it serves again could not be checked: {escape(str(e))}",
                      highlight=False, soft_wrap=True)
            return
        if missed:
            err.print(
                f"[yellow]warning:[/] {missed} events acknowledged since {active} was last live are not in its user "
                "histories or trending counts (continue watching, seen titles); they are kept in the events stream: "
                "`homepage logs merge-events DATASET` then `homepage publish DATASET` brings them back",
                highlight=False,
            )
    finally:
        store.close()


def warn_of_titles_back(store: RedisStore, replaced: str, active: str) -> None:
    """Name the titles a rollback serves again that the replaced version's bundle did not (withdrawn since: a licence ended).

    Publish refuses a bundle serving titles its dataset no longer lists; a rollback restores an
    older bundle as it was, so such titles are back on pages until a publish replaces it. Warned,
    not refused: rollback is the lever pulled when the newer version is broken.
    """
    older, newer = store.bundle_titles(active), store.bundle_titles(replaced)
    if older is None or newer is None:
        return
    back = older[~older["title_id"].isin(newer["title_id"])]
    if back.empty:
        return
    named = ", ".join(f"{int(t)} {n!r}" for t, n in zip(back["title_id"].iloc[:5], back["name"].iloc[:5]))
    err.print(
        f"[yellow]warning:[/] {escape(active)} serves {len(back)} titles {escape(replaced)} did not ({escape(named)}"
        f"{', ...' if len(back) > 5 else ''}): if they were withdrawn, they are on pages again until `homepage publish` "
        "with a bundle trained on the current dataset",
        highlight=False,
    )


def check_rollback_target(store: RedisStore) -> None:
    """Refuse, in plain words, a rollback with no version before the active one (``RedisStore.rollback`` re-checks atomically)."""
    from homepage.errors import HomepageError

    active = store.active_version()
    published = store.versions()
    older = published[: published.index(active)] if active in published else published
    if older and not store.version_exists(older[-1]):
        raise HomepageError(
            f"rollback: the version before {active}, {older[-1]}, has lost its record in Redis (evicted, or restored in part?): "
            "workers could not load it; publish the dataset again instead"
        )
    if older:
        return
    where = f"under prefix {store.keys.prefix!r}"
    if active is None and not published:
        raise HomepageError(f"rollback: nothing to roll back: no version is published {where} (run `homepage publish`)")
    raise HomepageError(
        f"rollback: no earlier version to roll back to: the active version {active} is the oldest kept {where} "
        "(no version before it)"
    )


@app.command("versions")
def versions() -> None:
    """List the published versions (oldest first); a star marks the active one."""
    store = open_store()
    try:
        active = store.active_version()
        listed = store.versions()
        if not listed:  # on stderr: stdout stays a listing a script can read
            err.print(
                f"no published versions under key prefix {escape(repr(store.keys.prefix))} at {escape(store_location())}: run `homepage publish`",
                highlight=False,
            )
        for v in listed:
            mark = "*" if v == active else " "
            try:
                m = store.meta(v)
            except StoreUnavailable:
                raise  # an outage: no listing rather than a wrong one
            except StoreError:  # one version's record gone (evicted, a partial restore): the others are listed all the same
                typer.echo(f"{mark} {v}  record missing from Redis (evicted, or restored in part?)")
                continue
            as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.as_of))
            typer.echo(f"{mark} {v}  as of {as_of}  users {m.n_users}  bundle {m.bundle_version or '-'}")
    finally:
        store.close()


@app.command("gc")
def gc(
    keep: int | None = typer.Option(None, "--keep", min=1, help="Published versions to keep (default: settings, 3)."),
) -> None:
    """Delete versions beyond the newest kept ones, retired ones, and ones a failed publish left behind.

    Publish runs it after each flip; run it by hand after a publish that failed (e.g. Redis out of memory).
    """
    store = open_store()
    try:
        deleted = store.gc(keep if keep is not None else store.settings.versions_keep)
        typer.echo(f"deleted {len(deleted)} version(s){': ' + ', '.join(deleted) if deleted else ''}")
    finally:
        store.close()
