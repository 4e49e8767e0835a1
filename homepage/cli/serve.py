"""``homepage serve`` (the API under uvicorn) and ``homepage demo`` (generate, train, publish, serve)."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from enum import Enum
from pathlib import Path

import typer

from homepage.cli import app
from homepage.cli.sigterm import exit_on_sigterm
from homepage.errors import HomepageError

log = logging.getLogger(__name__)


class Clock(str, Enum):
    """``homepage serve --clock``: what the service takes as the current time."""

    wall = "wall"
    data = "data"


def run_server(host: str, port: int, workers: int) -> None:
    """Run the API with uvicorn; with no ``REDIS_URL`` the embedded Redis is started here, shared by the workers.

    With several workers, metrics go through a ``PROMETHEUS_MULTIPROC_DIR`` so that any
    worker's ``/metrics`` shows the sum over all of them: a fresh directory made here and
    removed on exit (or the caller's, if the variable is already set: then it is theirs to clear).
    """
    import uvicorn

    from homepage.api.nodelay import http_protocol
    from homepage.embedded_redis import EmbeddedRedis
    from homepage.log_setup import uvicorn_log_config
    from homepage.metrics import MULTIPROC_ENV
    from homepage.settings import get_settings

    settings = get_settings()
    emb = None
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        try:
            metrics_dir = tempfile.mkdtemp(prefix="homepage-metrics-")
        except OSError as e:  # tempfile found no writable directory (a read-only root file system without a /tmp volume)
            raise HomepageError(f"--workers {workers}: no writable temporary directory for the workers' metrics ({e}); "
                                f"set TMPDIR or {MULTIPROC_ENV} to a writable directory") from None
        os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the spawned workers before they import prometheus_client
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # spawned workers start with one BLAS thread; the app's lifespan limits an in-process one
    watching = threading.Event()
    watcher: threading.Thread | None = None
    if not settings.redis_url:
        emb = EmbeddedRedis(settings.embedded_dir)
        emb.start()  # the workers find it listening and connect to its socket
        watcher = emb.watch(watching)  # killed or crashed, it is started again; the workers reconnect by themselves
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: with the default
    # handler that kills the process before the clean-up below (an orphaned embedded Redis)
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    previous_hup = None
    if workers == 1 and previous is not None:
        # with several workers uvicorn restarts them on SIGHUP; one worker has nothing to restart, and by
        # default SIGHUP (a closed terminal, a mistaken reload) killed it at once, its embedded Redis left running
        previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        uvicorn.run(
            "homepage.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=http_protocol(),  # TCP_NODELAY on accepted sockets: uvicorn's multi-worker path loses it
            log_config=uvicorn_log_config(),  # HOMEPAGE_LOG_FORMAT / _LEVEL, applied in each worker
            access_log=False,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)
        watching.set()
        if watcher is not None:
            watcher.join(timeout=10)  # not reviving the server while it is stopped below
        if emb is not None:
            emb.stop(found_too=True)  # a server found running is stopped too, when this was its last client
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="uvicorn worker processes."),
    clock: Clock | None = typer.Option(
        None, "--clock",
        help="The service's time: 'wall', or 'data' for a historical dataset (MovieLens): the published state's time, advancing from the publish. Default: HOMEPAGE_CLOCK, else wall.",
    ),
) -> None:
    """Serve the API against REDIS_URL, or the embedded Redis that `homepage publish` used."""
    from homepage.settings import get_settings

    # before Redis, the embedded server and the workers' model loading: uvicorn binds only after one
    # worker's start-up, so a second serve by mistake printed "serving on", loaded everything, then exited 3
    _check_port_free(host, port)
    if clock is not None:
        os.environ["HOMEPAGE_CLOCK"] = clock.value  # read by every worker's settings
    _check_serve_settings()
    _check_runtime_dirs(workers)

    if get_settings().redis_url:
        from homepage.cli.versions import open_store
        from homepage.store import StoreUnavailable

        # settings the server refuses (a database index it lacks) fail here, in one line; a Redis
        # that is down is not a reason to refuse to start: the API serves fallback pages meanwhile
        # logged, not printed: under HOMEPAGE_LOG_FORMAT=json a log collector reads them as the workers' lines
        try:
            store = open_store()
        except StoreUnavailable as e:
            log.warning("%s; the API answers degraded until it does", e)
        else:
            if store.keeps_nothing_on_disk():
                log.warning(
                    "the Redis server at REDIS_URL keeps nothing on disk (no AOF, no snapshots): a restart "
                    "loses every acknowledged event not merged yet, the published versions and the erasure records (a dataset "
                    "published again brings back users erased since its last merge-events); set appendonly yes (appendfsync "
                    "always or everysec) for them to survive it"
                )
            if policy := store.evicting_policy():
                log.warning(
                    "the Redis server at REDIS_URL evicts keys when its memory is full (maxmemory-policy %s): "
                    "an evicted history serves a new user's page, an evicted idempotency key counts a retried event twice; "
                    "set maxmemory-policy noeviction", policy,
                )
            store.close()
    typer.echo(f"serving on http://{host}:{port} (docs at /docs)")
    run_server(host, port, workers)


@app.command("demo")
def demo(
    users: int | None = typer.Option(None, "--users", min=10, help="Users of the generated world (default 2000, as world-small)."),
    titles: int | None = typer.Option(None, "--titles", min=10, help="Titles of the generated world."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    var: Path = typer.Option(Path("var"), "--var", help="Where the demo writes its data, models and Redis."),
    models: Path | None = typer.Option(None, "--models", help="Serve this trained bundle instead of training one."),
    use_redis_url: bool = typer.Option(
        False, "--use-redis-url", help="Publish into and serve from REDIS_URL's server (default: the demo's own embedded Redis, even with REDIS_URL set)."
    ),
) -> None:
    """The whole chain on the synthetic world: generate, train, publish into an embedded Redis, serve.

    REDIS_URL is ignored unless --use-redis-url says otherwise: the demo's world is made up and must not land in a real server.
    """  # (one line a paragraph: the help keeps the docstring's line breaks)
    import time

    import pandas as pd

    from fixtures.world import WorldParams, generate_world, write_world
    from homepage.bundle import train_bundle
    from homepage.config import PipelineConfig
    from homepage.dataset import load_dataset
    from homepage.publish import publish_dataset
    from homepage.settings import get_settings
    from homepage.store import connect

    _check_port_free("127.0.0.1", port)  # before a minute of generating and training, not after
    _check_serve_settings()  # so are the variables the workers read (a mistyped HOMEPAGE_POLICY served nothing)
    if use_redis_url and get_settings().redis_url:  # a password, ACL or certificate the server refuses: before the training too
        from homepage.cli.versions import open_store

        open_store().close()
    var = var.resolve()
    if not use_redis_url:  # settings read variables case-insensitively, set or empty: every spelling goes
        for name in [n for n in os.environ if n.lower() in ("redis_url", "homepage_redis_url")]:
            typer.echo(f"{name} is set; the demo uses its own embedded Redis (--use-redis-url to publish into that server)")
            del os.environ[name]
    # the service runs at the wall clock: a world whose year ends today has live trending and
    # recency signals (the committed world-small, the default size and seed, ends 2026-11-01)
    today = int(time.time()) // 86_400 * 86_400
    world = var / "world"
    typer.echo(f"generating {users or 2000} users x {titles or 1000} titles, a year of history up to today, into {world}")
    write_world(generate_world(WorldParams(n_users=users or 2000, n_titles=titles or 1000, seed=7, period_end=today)), world)
    ds = load_dataset(world)
    if models is not None:
        from homepage.bundle import load_bundle

        bundle = load_bundle(models)
    else:
        art_logs = _demo_artwork_logs(world, var)
        typer.echo("training (rankers and the stage-wise page model; under a minute on 2 idle cores)")
        # one regularisation setting (the middle of the default grid): the demo keeps artwork training to seconds
        bundle = train_bundle(ds, var / "models", PipelineConfig(), progress=True, artwork_logs=art_logs,
                              artwork_grid=None if art_logs is None else ((30.0, 200.0, 10.0),))
    os.environ.setdefault("HOMEPAGE_EMBEDDED_DIR", str(var / "redis"))
    os.environ.setdefault("HOMEPAGE_MODELS_DIR", str(var / "serving-models"))
    dev = os.environ.get("HOMEPAGE_DEV", "").lower() in ("1", "true", "yes")
    drawn = not os.environ.get("HOMEPAGE_API_KEY") and not dev  # dev mode: keyless writes, so the viewer can record plays
    if drawn:  # not printed: terminals and CI logs are kept
        os.environ["HOMEPAGE_API_KEY"] = secrets.token_urlsafe(24)
    get_settings.cache_clear()
    store = connect(get_settings())
    try:
        result = publish_dataset(store, world, models=bundle.path)
    finally:
        store.close()
    typer.echo(f"published {result.meta.version} with bundle {bundle.version}")
    users_tab: pd.DataFrame = ds.users
    some = int(users_tab["user_id"].iloc[len(users_tab) // 2])
    typer.echo(f"try:   curl http://127.0.0.1:{port}/homepage/{some}")
    typer.echo(f"docs:  http://127.0.0.1:{port}/docs")
    typer.echo(f"viewer: http://127.0.0.1:{port}/")
    if drawn:
        typer.echo("writes need the header X-API-Key: this run drew a key it does not show; to send events, start the demo "
                   "with HOMEPAGE_API_KEY=<your key> (or HOMEPAGE_DEV=1 for keyless writes and click-to-play)")
    elif os.environ.get("HOMEPAGE_API_KEY"):
        typer.echo("writes need the header X-API-Key with the key in HOMEPAGE_API_KEY (HOMEPAGE_DEV=1 for keyless writes and click-to-play)")
    else:
        typer.echo("development mode: writes need no key; clicking a card in the viewer records a play")
    run_server("127.0.0.1", port, 1)


def _check_serve_settings() -> None:
    """Check the serving variables every worker reads, in one line here (``serve`` and ``demo``).

    A bad ``HOMEPAGE_*`` variable was a pydantic traceback from the worker; a ``HOMEPAGE_POLICY``
    no one registered made every worker refuse every version (not ready, no page served).
    """
    from pydantic import ValidationError

    from homepage.api.settings import ServeSettings
    from homepage.settings import settings_error

    try:
        serve_settings = ServeSettings()
    except ValidationError as e:
        raise settings_error(e) from None
    if serve_settings.policy is not None:
        from homepage.pagebuilder.policies import policy as get_policy

        try:
            get_policy(serve_settings.policy)
        except HomepageError as e:
            raise HomepageError(f"HOMEPAGE_POLICY {serve_settings.policy!r}: {e}") from None


def _check_runtime_dirs(workers: int) -> None:
    """Refuse, in one line, the directories the workers write in at run time when they cannot be written.

    An unwritable ``HOMEPAGE_MODELS_DIR`` (by default ``var/serving-models`` under the working
    directory, read-only in a container image) left every worker never ready, logging a traceback at
    each retry; a ``PROMETHEUS_MULTIPROC_DIR`` that is missing or read-only crashed every worker at
    start-up, again and again, while ``serve`` ran on.
    """
    from homepage.api.settings import ServeSettings
    from homepage.cli.outputs import check_output_dir
    from homepage.metrics import MULTIPROC_ENV

    models_dir = ServeSettings().models_dir
    try:
        check_output_dir(models_dir, "HOMEPAGE_MODELS_DIR")
    except HomepageError as e:
        what = "the default" if "HOMEPAGE_MODELS_DIR" not in {n.upper() for n in os.environ} else "a relative path"
        where = f" ({what}, under the working directory {Path.cwd()})" if not models_dir.is_absolute() else ""
        raise HomepageError(f"{e}: workers unpack the published bundles there{where}; set HOMEPAGE_MODELS_DIR to a writable directory") from None
    metrics = os.environ.get(MULTIPROC_ENV)
    if metrics:
        if not Path(metrics).is_dir():
            raise HomepageError(f"{MULTIPROC_ENV} {metrics}: not a directory (prometheus_client writes the workers' metrics there and does not create it)")
        check_output_dir(Path(metrics), MULTIPROC_ENV)


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, naming it (uvicorn would find out only once everything else is done).

    Only a port in use is refused here: any other bind error (a host name this check cannot
    resolve as uvicorn would) is left to uvicorn to report.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn picks it
    try:
        s = socket.socket(family)  # no IPv6 on the machine: EAFNOSUPPORT here, uvicorn's to report too
    except OSError:
        return
    with s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise HomepageError(f"--port {port}: {host}:{port} is in use ({e.strerror}); stop what listens there or give another --port") from None


def _demo_artwork_logs(world: Path, var: Path, impressions: int = 100_000) -> Path | None:
    """Uniform-random artwork impressions on a synthetic world (plays from its browsing simulator), so the
    demo serves a trained artwork selector; None for a dataset without ground truth."""
    if not (world / "truth.npz").is_file():
        return None
    from artwork.logs import write_simulated_feedback
    from fixtures.simulator import BrowsingSimulator, WorldTruth

    path = var / "artwork-logs.parquet"
    write_simulated_feedback(BrowsingSimulator(WorldTruth.load(world)), impressions, path)
    typer.echo(f"artwork: {impressions:,} simulated impressions of random artwork -> {path}")
    return path


if __name__ == "__main__":  # ``python -m homepage.cli.serve``: the serve command alone (benchmarks)
    typer.run(serve)
