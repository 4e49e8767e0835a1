"""Logged bandit feedback: what was shown, with what probability, and what happened.

One row is one impression: the logged action (arm index within the row's choice set),
the reward (1 for a play or click), the logging policy's probability of that action,
and optionally the slot position, the context vector, the title and the user. This is
the input of training (:mod:`artwork.training`) and off-policy evaluation
(:mod:`artwork.ope`). On disk it is one Parquet file; see :func:`read_feedback`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from homepage.errors import HomepageError
from homepage.replaced_file import replaced

REQUIRED_COLUMNS = ("action", "reward", "propensity")
CONTEXT_PREFIX = "ctx_"


@dataclass(frozen=True, eq=False)
class LoggedFeedback:
    """Impressions of a logging policy, column-wise; all arrays have the same length n."""

    action: np.ndarray  # int64 (n,), index of the shown arm within the row's choice set
    reward: np.ndarray  # float64 (n,), 0/1 play or click
    propensity: np.ndarray  # float64 (n,), logging probability of the shown arm, in (0, 1]
    n_actions: int  # size of the largest choice set
    position: np.ndarray | None = None  # int64 (n,), 0-based slot
    context: np.ndarray | None = None  # float32 (n, d)
    title_idx: np.ndarray | None = None  # int64 (n,), catalog index (the artwork case)
    user_id: np.ndarray | None = None  # int64 (n,)
    n_choices: np.ndarray | None = None  # int64 (n,), size of each row's choice set (variants of the title)

    def __post_init__(self) -> None:
        n = self.action.shape[0]
        for name in ("reward", "propensity", "position", "context", "title_idx", "user_id", "n_choices"):
            a = getattr(self, name)
            if a is not None and a.shape[0] != n:
                raise HomepageError(f"{name}: {a.shape[0]} rows, expected {n} like action")
        if n and (self.action.min() < 0 or self.action.max() >= self.n_actions):
            raise HomepageError(f"action: values must lie in [0, {self.n_actions})")
        if n and not ((self.propensity > 0) & (self.propensity <= 1)).all():
            raise HomepageError("propensity: values must lie in (0, 1]")

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.position.max()) + 1 if self.position is not None and len(self) else 1

    def take(self, rows: np.ndarray) -> LoggedFeedback:
        """The rows ``rows`` (a boolean mask or indices), as a new log."""

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return LoggedFeedback(
            action=self.action[rows],
            reward=self.reward[rows],
            propensity=self.propensity[rows],
            n_actions=self.n_actions,
            position=sub(self.position),
            context=sub(self.context),
            title_idx=sub(self.title_idx),
            user_id=sub(self.user_id),
            n_choices=sub(self.n_choices),
        )

    def to_frame(self) -> pd.DataFrame:
        """The Parquet layout: action, reward, propensity, then optional columns, then ctx_0..ctx_{d-1}."""
        cols: dict[str, np.ndarray] = {
            "action": self.action,
            "reward": self.reward,
            "propensity": self.propensity,
        }
        for name in ("position", "title_idx", "user_id", "n_choices"):
            a = getattr(self, name)
            if a is not None:
                cols[name] = a
        df = pd.DataFrame(cols)
        if self.context is not None:
            ctx = pd.DataFrame(self.context, columns=[f"{CONTEXT_PREFIX}{j}" for j in range(self.context.shape[1])])
            df = pd.concat([df, ctx], axis=1)
        df.attrs["n_actions"] = self.n_actions
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "frame", n_actions: int | None = None) -> LoggedFeedback:
        """Validate and convert a frame in the Parquet layout; errors name ``source`` and the column."""
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise HomepageError(f"{source}: missing column {missing[0]!r} (need {', '.join(REQUIRED_COLUMNS)})")
        for c in df.columns:
            if c in REQUIRED_COLUMNS or c in ("position", "title_idx", "user_id", "n_choices") or c.startswith(CONTEXT_PREFIX):
                bad = df[c].isna().to_numpy()
                if bad.any():
                    raise HomepageError(f"{source}: row {int(np.argmax(bad))}: column {c!r} is empty")
        action = df["action"].to_numpy(np.int64)
        k = int(n_actions if n_actions is not None else df.attrs.get("n_actions", action.max() + 1 if len(df) else 1))
        ctx_cols = [c for c in df.columns if c.startswith(CONTEXT_PREFIX)]
        ctx_cols.sort(key=lambda c: int(c[len(CONTEXT_PREFIX):]))

        def opt(name: str) -> np.ndarray | None:
            return df[name].to_numpy(np.int64) if name in df.columns else None

        prop = df["propensity"].to_numpy(np.float64)
        bad = ~((prop > 0) & (prop <= 1))
        if bad.any():
            raise HomepageError(f"{source}: row {int(np.argmax(bad))}: propensity {prop[bad][0]} is not in (0, 1]")
        if len(df) and (action.min() < 0 or action.max() >= k):
            row = int(np.argmax((action < 0) | (action >= k)))
            raise HomepageError(f"{source}: row {row}: action {action[row]} is not in [0, {k})")
        return cls(
            action=action,
            reward=df["reward"].to_numpy(np.float64),
            propensity=prop,
            n_actions=k,
            position=opt("position"),
            context=df[ctx_cols].to_numpy(np.float32) if ctx_cols else None,
            title_idx=opt("title_idx"),
            user_id=opt("user_id"),
            n_choices=opt("n_choices"),
        )


def write_feedback(logs: LoggedFeedback, path: Path) -> None:
    """Write ``logs`` as Parquet (``n_actions`` goes into the file's key-value metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(logs.to_frame(), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"artwork.n_actions"] = str(logs.n_actions).encode()
    with replaced(Path(path)) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_feedback(path: Path) -> LoggedFeedback:
    """Read a Parquet log written by :func:`write_feedback` (or any file with the same columns)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise HomepageError(f"{path}: logs file not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise HomepageError(f"{path}: not a readable Parquet file ({e.__class__.__name__})") from e
    meta = table.schema.metadata or {}
    k = meta.get(b"artwork.n_actions")
    return LoggedFeedback.from_frame(table.to_pandas(), source=str(path), n_actions=int(k) if k else None)
