"""The synthetic-world experiment: train artwork policies on simulated logs, then check every
off-policy estimator against the simulator's exact truth.

Three target policies, all greedy (epsilon 0) so they differ only in what they know:
``random`` (uniform over a title's variants), ``non_contextual`` (the same learner with
the user context zeroed: per title, the variant that plays best on average, learnt from
the logs) and ``contextual`` (the trained :class:`ArtworkSelector`). The contextual
oracle (each user's truly best variant) and the non-contextual oracle are reported too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from artwork.context import UserContextBuilder
from artwork.logs import SimulatedLogs, oracle_dist, simulate_uniform_logs
from artwork.ope import Estimate, evaluate_policy
from artwork.selector import ArtworkSelector
from artwork.target_policy import uniform_dist
from artwork.training_logs import TrainingLogs
from artwork.tuning import DEFAULT_GRID, train_selector
from fixtures.simulator import BrowsingSimulator
from homepage.catalog import Catalog
from homepage.errors import HomepageError
from homepage.eventlog import EventLog

POLICIES = ("random", "non_contextual", "contextual")


@dataclass(frozen=True, eq=False)
class SyntheticResult:
    """Estimates and exact truths per policy, plus the oracles' true play rates."""

    estimates: dict[str, tuple[Estimate, ...]]
    truth: dict[str, float]
    oracle: float
    non_contextual_oracle: float
    n_eval: int
    n_train: int
    notes: list[str] = field(default_factory=list)
    training: dict[str, object] = field(default_factory=dict)  # how the contextual policy was trained


def world_contexts(log: EventLog, catalog: Catalog, user_ids: np.ndarray, as_of: int) -> np.ndarray:
    """Context vectors (len(user_ids), d) of the world's users from their histories as of ``as_of``."""
    builder = UserContextBuilder().prepare(catalog)
    return builder.build_many(log.user_states(user_ids.tolist(), as_of))


def check_alignment(sim: BrowsingSimulator, catalog: Catalog) -> None:
    """The catalog's variant positions must be the simulator's k order, title by title."""
    t = sim.truth
    if not np.array_equal(catalog.title_ids, t.title_ids):
        raise HomepageError("catalog: title ids differ from the world's truth")
    tv = t.title_variants
    for i, vs in enumerate(catalog.variants):
        ids = [v.variant_id for v in vs]
        if ids != [str(x) for x in t.variant_ids[tv[i][tv[i] >= 0]]]:
            raise HomepageError(f"catalog: variants of title {catalog.title_ids[i]} are not in the world's order")


def run_synthetic_experiment(
    sim: BrowsingSimulator,
    catalog: Catalog,
    contexts: np.ndarray,
    n_eval: int = 200_000,
    n_train: int = 100_000,
    seed: int = 0,
    n_boot: int = 200,
    grid: tuple[tuple[float, float, float], ...] = DEFAULT_GRID,
    progress: Callable[[str], None] | None = None,
) -> SyntheticResult:
    """Simulate ``n_train + n_eval`` uniform-random impressions; train on the first part, evaluate on the rest.

    The contextual policy is trained like ``homepage artwork train`` does it: regularisation
    chosen on a validation split of the training logs (never on the truth), then refitted.
    """
    say = progress or (lambda _msg: None)
    check_alignment(sim, catalog)
    say("simulating logs")
    sim_logs = simulate_uniform_logs(sim, n_train + n_eval, seed=seed)
    train = sim_logs.take(np.arange(n_train))
    ev: SimulatedLogs = sim_logs.take(np.arange(n_train, n_train + n_eval))
    say("training policies")
    data = TrainingLogs(train.logs, contexts, train.logs.user_id, "simulated", 0)
    ctx_sel, report = train_selector(data, catalog, epsilon=0.0, grid=grid, seed=seed, progress=say)
    flat = ArtworkSelector(epsilon=0.0, user_prior=np.inf).fit(
        train.logs, np.zeros((1, contexts.shape[1]), np.float32), catalog, context_row=np.zeros(n_train, np.int64)
    )
    logs = ev.logs
    k = logs.n_actions

    def pad(p: np.ndarray) -> np.ndarray:
        out = np.zeros((len(logs), k))
        out[:, : p.shape[1]] = p[:, :k]
        return out

    dists = {
        "random": uniform_dist(logs),
        "non_contextual": pad(flat.action_probabilities(np.zeros((1, contexts.shape[1])), logs.title_idx, np.zeros(len(logs), np.int64))),
        "contextual": pad(ctx_sel.action_probabilities(contexts, logs.title_idx, logs.user_id, user_ids=logs.user_id)),
    }
    # DR's reward model: the contextual model's predictions, clipped to probabilities
    raw_q = ctx_sel.scores(contexts, logs.user_id, logs.title_idx, user_ids=logs.user_id)
    q = pad(np.clip(np.nan_to_num(raw_q, neginf=0.0), 0.0, 1.0))
    say("evaluating")
    estimates = {name: evaluate_policy(logs, d, q, n_boot=n_boot, seed=seed) for name, d in dists.items()}
    truth = {name: ev.true_value(d) for name, d in dists.items()}
    oracle = ev.true_value(oracle_dist(sim, logs))
    best_single = sim.best_single_variants()
    single_pos = np.argmax(sim.truth.title_variants[logs.title_idx] == best_single[logs.title_idx][:, None], axis=1)
    non_ctx_oracle = ev.true_value(np.eye(k)[single_pos])
    return SyntheticResult(estimates, truth, oracle, non_ctx_oracle, n_eval, n_train, training=report.to_json())
