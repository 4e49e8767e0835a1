"""Training the selector with its regularisation chosen on a validation split of the logs.

The logs are split at random by impression (serving meets the same users again, on new
impressions, so the per-user weights are judged on what they are for); each candidate setting is fitted on the fitting part, and its greedy policy's play rate on the
validation part is estimated by self-normalised IPS with the logged propensities. The
best setting is then refitted on all the logs. The simulator's truth is never consulted:
this works the same on the service's own logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from artwork.ope import evaluate_policy
from artwork.selector import ArtworkSelector
from artwork.training_logs import TrainingLogs
from homepage.catalog import Catalog
from homepage.errors import HomepageError

# (ridge, bias_prior, user_prior): the shared model's ridge, the per-variant offsets'
# shrinkage and the per-user weights' ridge; from little to much regularisation
DEFAULT_GRID: tuple[tuple[float, float, float], ...] = (
    (3.0, 50.0, 3.0),
    (30.0, 200.0, 10.0),
    (30.0, 200.0, 30.0),
    (300.0, 1000.0, 100.0),
)


@dataclass(frozen=True)
class Trial:
    """One candidate setting and its estimated greedy play rate on the validation rows."""

    ridge: float
    bias_prior: float
    user_prior: float
    validation_value: float


@dataclass(frozen=True)
class TrainingReport:
    """How the selector was trained: the chosen setting, every trial, and the split sizes."""

    ridge: float
    bias_prior: float
    user_prior: float
    n_fit: int
    n_validation: int
    trials: list[Trial] = field(default_factory=list)
    logged_play_rate: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "chosen": {"ridge": self.ridge, "bias_prior": self.bias_prior, "user_prior": self.user_prior},
            "selection": (
                "greedy policy's SNIPS play rate on a random validation split of the impressions, then refit on all rows"
                if self.trials
                else "one setting given: no validation, fitted on all rows"
            ),
            "n_fit": self.n_fit,
            "n_validation": self.n_validation,
            "logged_play_rate": self.logged_play_rate,
            "trials": [t.__dict__ for t in self.trials],
        }


def validation_split(n: int, share: float, seed: int) -> np.ndarray:
    """A boolean mask of validation rows, each impression held out with probability ``share``."""
    return np.random.default_rng(seed).random(n) < share


def greedy_value(selector: ArtworkSelector, data: TrainingLogs, rows: np.ndarray) -> float:
    """SNIPS estimate of ``selector``'s greedy play rate on the logged ``rows``."""
    logs = data.logs.take(rows)
    probs = selector.action_probabilities(
        data.contexts, logs.title_idx, data.context_row[rows], epsilon=0.0, user_ids=logs.user_id
    )
    dist = np.zeros((len(logs), logs.n_actions))
    k = min(probs.shape[1], logs.n_actions)
    dist[:, :k] = probs[:, :k]
    (e,) = evaluate_policy(logs, dist, estimators=("snips",), n_boot=0)
    return e.value


def best_trial(trials: list[Trial]) -> Trial:
    """The trial with the highest validation value; one without a value (no validation row
    matched its greedy choice: NaN) never wins, as ``max`` would let a NaN first trial do."""
    return max(trials, key=lambda t: t.validation_value if t.validation_value == t.validation_value else -np.inf)


def train_selector(
    data: TrainingLogs,
    catalog: Catalog,
    epsilon: float = 0.05,
    stable_period: int = 7 * 86_400,
    grid: tuple[tuple[float, float, float], ...] = DEFAULT_GRID,
    validation_share: float = 0.25,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[ArtworkSelector, TrainingReport]:
    """Choose the regularisation on a validation split, then fit the selector on every row."""
    say = progress or (lambda _m: None)
    if len(data.logs) == 0:
        raise HomepageError("artwork logs: no impressions to train on")
    if not grid:
        raise HomepageError("grid: no candidate settings")
    trials: list[Trial] = []
    n_val = 0
    if len(grid) > 1:
        held = validation_split(len(data.logs), validation_share, seed)
        n_val = int(held.sum())
        if n_val == 0 or n_val == held.size:
            raise HomepageError("artwork logs: too few impressions to hold out a validation split; pass one setting")
        fit_rows, val_rows = np.flatnonzero(~held), np.flatnonzero(held)
        fit_logs = data.logs.take(fit_rows)
        for ridge, bias_prior, user_prior in grid:
            sel = ArtworkSelector(0.0, stable_period, ridge, bias_prior, user_prior).fit(
                fit_logs, data.contexts, catalog, context_row=data.context_row[fit_rows]
            )
            value = greedy_value(sel, data, val_rows)
            trials.append(Trial(ridge, bias_prior, user_prior, value))
            say(f"ridge {ridge:g}, bias_prior {bias_prior:g}, user_prior {user_prior:g}: validation play rate {value:.4f}")
        best = best_trial(trials)
        chosen = (best.ridge, best.bias_prior, best.user_prior)
    else:
        chosen = grid[0]
    selector = ArtworkSelector(epsilon, stable_period, *chosen).fit(
        data.logs, data.contexts, catalog, context_row=data.context_row
    )
    report = TrainingReport(*chosen, n_fit=len(data.logs) - n_val, n_validation=n_val, trials=trials,
                            logged_play_rate=float(data.logs.reward.mean()))
    return selector, report
