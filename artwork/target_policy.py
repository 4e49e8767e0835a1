"""Turning a policy description into action probabilities for every logged row (the OPE input).

Specs understood by :func:`resolve_policy` (and so by ``homepage artwork evaluate --policy``):

- ``uniform``: uniform over each row's choice set (``n_choices`` when logged, else all actions);
- ``logged:PATH``: a context-free policy whose per-position action distribution is read
  from its own log at PATH (Open Bandit CSV or feedback Parquet);
- ``probs:PATH``: a Parquet file with columns ``p_0..p_{K-1}``, one row per logged row;
- ``model:PATH``: a saved :class:`artwork.selector.ArtworkSelector` (needs the catalog and
  logs with ``title_idx`` and ``ctx_*`` columns); ``model:PATH@EPS`` overrides its epsilon.
  Logs without ``ctx_*`` columns (``homepage artwork simulate``'s feedback, served logs) get
  their contexts from the dataset's histories: :func:`read_model_logs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from artwork.feedback import CONTEXT_PREFIX, LoggedFeedback, read_feedback
from artwork.open_bandit import is_open_bandit_csv, position_action_dist, read_open_bandit_csv
from homepage.catalog import Catalog
from homepage.errors import HomepageError
from homepage.eventlog import EventLog

if TYPE_CHECKING:
    from artwork.training_logs import TrainingLogs


def uniform_dist(logs: LoggedFeedback) -> np.ndarray:
    """Uniform over each row's choice set."""
    k = logs.n_choices if logs.n_choices is not None else np.full(len(logs), logs.n_actions)
    valid = np.arange(logs.n_actions)[None, :] < k[:, None]
    return valid / k[:, None].astype(np.float64)


def read_logs(path: Path) -> LoggedFeedback:
    """A log file of either supported kind: Open Bandit CSV or feedback Parquet."""
    path = Path(path)
    if not path.exists():
        raise HomepageError(f"{path}: logs file not found")
    if is_open_bandit_csv(path):
        return read_open_bandit_csv(path, with_context=False)
    return read_feedback(path)


def needs_dataset_contexts(path: Path, spec: str) -> bool:
    """Whether a ``model:`` policy is evaluated on a Parquet log that carries no ``ctx_*`` columns of its own."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not spec.startswith("model:") or not path.is_file() or is_open_bandit_csv(path):
        return False
    try:
        names = pq.read_schema(path).names
    except Exception:  # not Parquet: the ordinary reader names the problem
        return False
    return not any(n.startswith(CONTEXT_PREFIX) for n in names)


def read_model_logs(path: Path, spec: str, catalog: Catalog, events: EventLog) -> tuple[LoggedFeedback, TrainingLogs]:
    """Logs without ``ctx_*`` columns, each row given the context the ``model:`` policy ``spec`` saw, and what was read.

    Either kind of training log is read (:func:`artwork.training_logs.read_training_logs`):
    each row's context is the user's history in the dataset as of the start of the row's
    stability period under the model's own period, exactly as training and serving build it.
    The ``TrainingLogs`` says what was left out (impressions of titles or variants the catalog
    does not have), which the caller must report: the estimates are over the rest only.
    """
    from artwork.selector import ArtworkSelector
    from artwork.training_logs import read_training_logs

    model = ArtworkSelector.load(Path(spec.partition(":")[2].partition("@")[0]))
    data = read_training_logs(Path(path), catalog, events, model.stable_period)
    lg = data.logs
    feedback = LoggedFeedback(
        lg.action, lg.reward, lg.propensity, lg.n_actions, position=lg.position, context=data.contexts[data.context_row],
        title_idx=lg.title_idx, user_id=lg.user_id, n_choices=lg.n_choices,
    )
    return feedback, data


def resolve_policy(spec: str, logs: LoggedFeedback, catalog: Catalog | None = None) -> np.ndarray:
    """The action distribution (n, n_actions) of the policy ``spec`` on the rows of ``logs``."""
    kind, _, arg = spec.partition(":")
    if kind == "uniform" and not arg:
        return uniform_dist(logs)
    if kind == "logged" and arg:
        other = read_logs(Path(arg))
        if other.n_actions != logs.n_actions:
            raise HomepageError(f"{arg}: {other.n_actions} actions, the evaluated logs have {logs.n_actions}")
        table = position_action_dist(other)
        pos = logs.position if logs.position is not None else np.zeros(len(logs), np.int64)
        if pos.max(initial=0) >= table.shape[0]:
            raise HomepageError(f"{arg}: has {table.shape[0]} positions, the evaluated logs have more")
        return table[pos]
    if kind == "probs" and arg:
        import pyarrow.parquet as pq

        p = Path(arg)
        if not p.exists():
            raise HomepageError(f"{p}: policy probabilities file not found")
        df = pq.read_table(p).to_pandas()
        cols = [f"p_{j}" for j in range(logs.n_actions)]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise HomepageError(f"{p}: missing column {missing[0]!r}")
        if len(df) != len(logs):
            raise HomepageError(f"{p}: {len(df)} rows, the logs have {len(logs)}")
        return df[cols].to_numpy(np.float64)
    if kind == "model" and arg:
        from artwork.selector import ArtworkSelector

        path, _, eps = arg.partition("@")
        if catalog is None:
            raise HomepageError("--dataset: a model policy needs the catalog it was trained on")
        if logs.title_idx is None or logs.context is None:
            raise HomepageError("logs: a model policy needs title_idx and ctx_* columns")
        sel = ArtworkSelector.load(Path(path), catalog)
        probs = sel.action_probabilities(
            logs.context, logs.title_idx, epsilon=float(eps) if eps else None, user_ids=logs.user_id
        )
        out = np.zeros((len(logs), logs.n_actions))
        k = min(probs.shape[1], logs.n_actions)
        out[:, :k] = probs[:, :k]
        return out
    raise HomepageError(f"--policy: {spec!r} is not one of uniform, logged:PATH, probs:PATH, model:PATH, model:PATH@EPS")
