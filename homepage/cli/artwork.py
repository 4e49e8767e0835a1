"""Artwork commands: ``homepage artwork evaluate`` (off-policy evaluation of a policy from logs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from homepage.cli import app

artwork_app = typer.Typer(help="Artwork personalisation: off-policy evaluation.", no_args_is_help=True)
app.add_typer(artwork_app, name="artwork")


@artwork_app.command("evaluate")
def evaluate(
    logs: Path = typer.Argument(..., help="Logged feedback: Parquet (action, reward, propensity[, position, ...]) or an Open Bandit CSV."),
    policy: str = typer.Option(..., "--policy", help="uniform | logged:PATH | probs:PATH | model:PATH[@EPS]"),
    dataset: Path | None = typer.Option(None, "--dataset", help="Dataset directory (catalog) for a model policy."),
    n_boot: int = typer.Option(200, "--n-boot", min=0, max=100_000, help="Bootstrap replicates."),
    replay_runs: int = typer.Option(20, "--replay-runs", min=1, max=1000, help="Replay runs averaged (stochastic targets)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Estimate a policy's reward rate from logs with replay, IPS, SNIPS and DR, with 95% bootstrap intervals."""
    from artwork.ope import evaluate_policy
    from artwork.reward_model import cross_fitted_q
    from artwork.target_policy import read_logs, resolve_policy

    feedback = read_logs(logs)
    catalog = None
    if dataset is not None:
        from homepage.catalog import Catalog
        from homepage.dataset import load_dataset

        ds = load_dataset(dataset, columns=["user_id"])
        catalog = Catalog.from_frames(ds.titles, ds.variants)
    dist = resolve_policy(policy, feedback, catalog)
    q = cross_fitted_q(feedback, seed=seed)
    estimates = evaluate_policy(feedback, dist, q, n_boot=n_boot, seed=seed, replay_runs=replay_runs)
    logged = float(feedback.reward.mean())
    if as_json:
        out = {
            "logs": str(logs),
            "policy": policy,
            "n": len(feedback),
            "logged_reward_rate": logged,
            "estimates": {
                e.estimator: {"estimate": e.value, "low": e.low, "high": e.high, "support": e.support} for e in estimates
            },
        }
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(
        title=f"{logs.name}: {len(feedback):,} logged rows, logged rate {logged:.5f}",
        caption=f"policy {policy}; 95% percentile bootstrap over rows ({n_boot} replicates)",
    )
    table.add_column("estimator")
    table.add_column("estimate", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("support", justify="right")
    for e in estimates:
        table.add_row(e.estimator, f"{e.value:.5f}", f"[{e.low:.5f}, {e.high:.5f}]", f"{e.support:,.0f}")
    Console().print(table)
