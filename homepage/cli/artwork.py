"""Artwork commands: ``homepage artwork evaluate`` (off-policy evaluation from logs), ``train`` (the selector
from logged impressions) and ``simulate`` (uniform-random artwork logs from a synthetic world)."""

from __future__ import annotations

import json
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from homepage.cli import app
from homepage.cli.outputs import table_console
from homepage.errors import HomepageError
from homepage.replaced_file import swap_in_dir
from homepage.strict_json import strict_dumps

if TYPE_CHECKING:
    from artwork.page_artwork import PageArtwork


class Resample(str, Enum):
    """The bootstrap's unit in ``artwork evaluate``."""

    users = "users"
    rows = "rows"


artwork_app = typer.Typer(help="Artwork personalisation: simulate logs, train the selector, evaluate policies off-line.", no_args_is_help=True)
app.add_typer(artwork_app, name="artwork")


@artwork_app.command("evaluate")
def evaluate(
    logs: Path = typer.Argument(..., help="Logged feedback: Parquet (action, reward, propensity[, position, ...]) or an Open Bandit CSV."),
    policy: str = typer.Option(..., "--policy", help="uniform | logged:PATH | probs:PATH | model:PATH\\[@EPS]"),
    dataset: Path | None = typer.Option(None, "--dataset", help="Dataset directory (catalog) for a model policy."),
    n_boot: int = typer.Option(200, "--n-boot", min=0, max=100_000, help="Bootstrap replicates."),
    replay_runs: int = typer.Option(20, "--replay-runs", min=1, max=1000, help="Replay runs averaged (stochastic targets)."),
    seed: int = typer.Option(0, "--seed", min=0),
    resample: Resample = typer.Option(
        "users", "--resample",
        help="Bootstrap unit: users (a user's rows together; logs without user ids fall back to rows) or rows.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Estimate a policy's reward rate from logs with replay, IPS, SNIPS and DR, with 95% bootstrap intervals.

    The bootstrap resamples users by default: served logs repeat a user's artwork on every page of a
    stability period, so their rows are not independent and resampling rows gives too narrow intervals."""
    from artwork.ope import evaluate_policy
    from artwork.reward_model import cross_fitted_q
    from artwork.target_policy import needs_dataset_contexts, read_logs, read_model_logs, resolve_policy

    catalog = None
    not_in_catalog = 0  # served impressions of titles or variants --dataset does not have (a log spans catalog versions)
    if dataset is not None and needs_dataset_contexts(logs, policy):
        # `homepage artwork simulate`'s feedback and served logs carry no contexts: build them as training does
        from homepage.catalog import Catalog
        from homepage.dataset import load_dataset
        from homepage.eventlog import EventLog

        ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
        catalog = Catalog.from_frames(ds.titles, ds.variants)
        feedback, read = read_model_logs(logs, policy, catalog, EventLog.from_frame(ds.events, catalog, ds.users))
        not_in_catalog = read.n_not_in_catalog
        if not_in_catalog:  # left out as training leaves them out, but said: the estimates are over the rest only
            typer.echo(
                f"{logs}: left out {not_in_catalog:,} impressions of titles or artwork variants {dataset} does not have "
                f"(first: {read.first_not_in_catalog}); the estimates are over the other {len(feedback):,}",
                err=True,
            )
    else:
        feedback = read_logs(logs)
        if dataset is not None:
            from homepage.catalog import Catalog
            from homepage.dataset import load_dataset

            ds = load_dataset(dataset, columns=["user_id"])
            catalog = Catalog.from_frames(ds.titles, ds.variants)
    dist = resolve_policy(policy, feedback, catalog)
    q = cross_fitted_q(feedback, seed=seed)
    unit = "users" if resample is Resample.users and feedback.user_id is not None else "rows"
    groups = feedback.user_id if unit == "users" else None
    estimates = evaluate_policy(feedback, dist, q, n_boot=n_boot, seed=seed, replay_runs=replay_runs, groups=groups)
    logged = float(feedback.reward.mean())
    # no logged row took an action the policy would: IPS says 0 and DR only its reward model, both with tight intervals
    unsupported = [e.estimator for e in estimates if not e.support > 0]
    if as_json:
        out = {
            "logs": str(logs),
            "policy": policy,
            "n": len(feedback),
            "skipped_not_in_catalog": not_in_catalog,
            "logged_reward_rate": logged,
            "bootstrap_unit": unit,
            "unsupported": unsupported,
            "estimates": {
                e.estimator: {"estimate": e.value, "low": e.low, "high": e.high, "support": e.support} for e in estimates
            },
        }
        typer.echo(strict_dumps(out, indent=2))  # an estimate over no kept rows is null, not a bare NaN
        return
    table = Table(
        title=f"{logs.name}: {len(feedback):,} logged rows, logged rate {logged:.5f}",
        caption=f"policy {policy}; 95% percentile bootstrap over {unit} ({n_boot} replicates)",
    )
    table.add_column("estimator")
    table.add_column("estimate", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("support", justify="right")
    for e in estimates:
        table.add_row(e.estimator, f"{e.value:.5f}", f"[{e.low:.5f}, {e.high:.5f}]", f"{e.support:,.0f}")
    table_console().print(table)
    if unsupported:
        typer.echo(
            f"warning: no logged row supports this policy for {', '.join(unsupported)} (support 0): "
            "those estimates and intervals say nothing about it",
            err=True,
        )


@artwork_app.command("train")
def train(
    logs: Path = typer.Argument(..., help="Logged impressions: a served-log Parquet (`homepage logs export`, `homepage simulate-logs`) or artwork feedback Parquet (`homepage artwork simulate`)."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset directory: the catalog and the histories the users' contexts come from."),
    out: Path = typer.Option(..., "--out", help="Directory to write the trained selector into (selector.json, selector.npz, training.json)."),
    epsilon: float = typer.Option(0.05, "--epsilon", min=0.0, max=1.0, help="Exploration rate the trained selector serves with."),
    stable_days: float = typer.Option(7.0, "--stable-days", min=0.001, max=365.0, help="A user keeps a title's artwork this long."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the validation split."),
) -> None:
    """Train the artwork selector from logged impressions, weighted by their propensities.

    The regularisation is chosen on a validation split of the logs."""
    from artwork.page_artwork import PageArtwork
    from artwork.training_logs import read_training_logs
    from artwork.tuning import train_selector
    from homepage.catalog import Catalog
    from homepage.dataset import load_dataset
    from homepage.eventlog import EventLog

    if Path(out).exists() and (not Path(out).is_dir() or (any(Path(out).iterdir()) and not (Path(out) / "training.json").is_file())):
        raise HomepageError(f"--out {out}: exists and is not an artwork selector directory; refusing to write into it")
    ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    period = max(int(stable_days * 86_400), 1)
    data = read_training_logs(logs, catalog, EventLog.from_frame(ds.events, catalog, ds.users), period)
    summary = data.summary()
    typer.echo(f"{logs}: {summary['impressions']:,} impressions ({summary['kind']}), {summary['users']:,} users, play rate {summary['play_rate']:.4f}")
    if data.n_not_in_catalog:
        typer.echo(
            f"{logs}: left out {data.n_not_in_catalog:,} impressions of titles or artwork variants {dataset} does not have "
            f"(first: {data.first_not_in_catalog})",
            err=True,
        )
    selector, report = train_selector(data, catalog, epsilon, period, seed=seed, progress=typer.echo)
    training = {"logs": str(logs), "dataset": str(dataset), "data": summary, "training": report.to_json()}
    _write_selector_dir(Path(out), PageArtwork.of(selector, catalog), training)
    typer.echo(
        f"{out}: selector trained (ridge {report.ridge:g}, bias_prior {report.bias_prior:g}, user_prior {report.user_prior:g}), "
        f"epsilon {epsilon:g}"
    )


def _write_selector_dir(out: Path, page_artwork: PageArtwork, training: dict[str, object]) -> None:
    """Write the selector and ``training.json`` into a directory beside ``out``, then swap it in with renames.

    Written in place, a run that failed part-way (a full disk, a kill) left a truncated
    ``selector.npz`` that the next run refused to write over, or an old selector's json beside
    a new one's arrays.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        page_artwork.save(tmp)
        (tmp / "training.json").write_text(json.dumps(training, indent=2))
        swap_in_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@artwork_app.command("simulate")
def simulate(
    world: Path = typer.Argument(..., help="Synthetic world directory (from `homepage generate`), with truth.npz."),
    out: Path = typer.Option(..., "--out", help="Artwork feedback Parquet file to write."),
    impressions: int = typer.Option(200_000, "--impressions", min=1, max=50_000_000, help="Impressions to log."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Log a uniformly random artwork policy on the world's users (propensity 1/K), plays drawn by the browsing simulator."""
    from artwork.logs import write_simulated_feedback
    from fixtures.simulator import BrowsingSimulator, WorldTruth

    sim_logs = write_simulated_feedback(BrowsingSimulator(WorldTruth.load(world)), impressions, out, seed=seed)
    typer.echo(f"{out}: {impressions:,} impressions, play rate {sim_logs.logs.reward.mean():.4f}")
