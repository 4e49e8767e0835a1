"""Reading logged artwork impressions for training: served-page logs or artwork feedback files.

Two kinds of Parquet file are accepted, told apart by their columns:

- **served logs** (``homepage logs export`` / ``homepage simulate-logs``, the schema of
  :mod:`homepage.servedlogs.schema`): one row per title shown on a served page. The arm is
  the variant's position among its title's variants, the reward ``played`` and the
  propensity ``artwork_propensity``. Impressions without an artwork choice (null
  ``variant_id``, e.g. degraded pages) carry no artwork information and are left out, and so
  are impressions of a title or variant the dataset's catalog no longer has (withdrawn, or
  re-genred since the page was served: a log spans catalog versions), counted and named;
- **artwork feedback** (:func:`artwork.feedback.write_feedback`, e.g. from
  ``homepage artwork simulate``): ``action``, ``reward``, ``propensity``, ``title_idx``,
  ``user_id`` and an optional ``ts``.

Contexts are the users' histories in the dataset as of the start of each impression's
stability period, exactly as serving builds them (:mod:`artwork.page_artwork`); a feedback
file without ``ts`` is read as of the end of the dataset's history. Bad input raises a
:class:`HomepageError` naming the file and the first offending row (0-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from artwork.context import UserContextBuilder
from artwork.feedback import LoggedFeedback
from artwork.training import MIN_TRAINING_PROPENSITY
from homepage.catalog import Catalog
from homepage.errors import HomepageError
from homepage.eventlog import EventLog

SERVED = "served-log"
FEEDBACK = "artwork-feedback"


@dataclass(frozen=True, eq=False)
class TrainingLogs:
    """Impressions ready for :meth:`ArtworkSelector.fit`: row i's context is ``contexts[context_row[i]]``."""

    logs: LoggedFeedback  # title_idx = catalog index, action = variant position, user_id = real user id
    contexts: np.ndarray  # float32 (n_contexts, d)
    context_row: np.ndarray  # int64 (n,)
    kind: str  # SERVED or FEEDBACK
    n_skipped: int  # impressions without an artwork choice, left out
    n_not_in_catalog: int = 0  # impressions of a title or variant the catalog no longer has, left out
    first_not_in_catalog: str = ""  # the first of them, as "row R: title_id T, variant_id 'V'"

    def summary(self) -> dict[str, object]:
        """What was trained on, for the bundle manifest and the command's report."""
        lg = self.logs
        return {
            "kind": self.kind,
            "impressions": len(lg),
            "skipped_without_artwork": self.n_skipped,
            "skipped_not_in_catalog": self.n_not_in_catalog,
            "users": int(np.unique(lg.user_id).size) if lg.user_id is not None else 0,
            "titles": int(np.unique(lg.title_idx).size) if lg.title_idx is not None else 0,
            "play_rate": float(lg.reward.mean()) if len(lg) else 0.0,
            "min_propensity": float(lg.propensity.min()) if len(lg) else 0.0,
            "propensities_clipped": int((lg.propensity < MIN_TRAINING_PROPENSITY).sum()),  # weighted as 1 / MIN_TRAINING_PROPENSITY
        }


def _read(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise HomepageError(f"{path}: artwork logs file not found")
    try:
        return pq.read_table(path).to_pandas()
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise HomepageError(f"{path}: not a readable Parquet file ({e.__class__.__name__})") from e


def _show(value: object) -> str:
    """A cell as the user wrote it: numpy scalars shown as plain Python values."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)


def _first_bad(where: str, bad: np.ndarray, message: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HomepageError(f"{where}: row {i}: {message.format(i=i)}")


def _need(frame: pd.DataFrame, where: str, columns: tuple[str, ...], kind: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HomepageError(f"{where}: missing column {missing[0]!r} ({kind} needs {', '.join(columns)})")
    for c in columns:
        _first_bad(where, frame[c].isna().to_numpy(), f"column {c!r} is empty")


def _int_col(frame: pd.DataFrame, where: str, name: str) -> np.ndarray:
    col = frame[name]
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(np.int64)
    vals = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(vals) | (vals != np.round(vals))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HomepageError(f"{where}: row {i}: {name} = {_show(col.iloc[i])} is not an integer")
    return vals.astype(np.int64)


def _propensity(frame: pd.DataFrame, where: str, name: str, present: np.ndarray | None = None) -> np.ndarray:
    """The column as probabilities; rows outside ``present`` (impressions without a choice) are not checked."""
    p = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
    bad = ~((p > 0) & (p <= 1))
    if present is not None:
        bad &= present
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HomepageError(f"{where}: row {i}: {name} = {_show(frame[name].iloc[i])} is not a probability in (0, 1]")
    return p


def _reward(frame: pd.DataFrame, where: str, name: str) -> np.ndarray:
    r = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
    bad = ~np.isin(r, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HomepageError(f"{where}: row {i}: {name} = {_show(frame[name].iloc[i])} is not 0 or 1")
    return r


def _in_catalog(catalog: Catalog, title_idx: np.ndarray, variant_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each (title, variant) is in the catalog, and the variant's position within its title's variants (-1 if not)."""
    pos_of = {v.variant_id: (i, j) for i, vs in enumerate(catalog.variants) for j, v in enumerate(vs)}
    pos = np.full(title_idx.size, -1, np.int64)
    for k, (t, v) in enumerate(zip(title_idx.tolist(), variant_ids.tolist())):
        at = pos_of.get(v)
        if t >= 0 and at is not None and at[0] == t:
            pos[k] = at[1]
    return pos >= 0, pos


def _served(frame: pd.DataFrame, where: str, catalog: Catalog) -> tuple[LoggedFeedback, np.ndarray, int, int, str]:
    """The impressions with an artwork choice of titles and variants in ``catalog``, their times, and what was left out.

    Returns (logs, ts, impressions without a choice, impressions not in the catalog, the first of
    those). A served log spans catalog versions: a title withdrawn since, or a variant gone with a
    genre change, is no longer the catalog's to train; a log none of whose impressions are in the
    catalog is an error (the wrong ``--dataset``).
    """
    _need(frame, where, ("user_id", "ts", "title_id", "played"), "a served log")
    for c in ("variant_id", "artwork_propensity"):
        if c not in frame.columns:
            raise HomepageError(f"{where}: missing column {c!r} (a served log needs it to train artwork)")
    has_variant = frame["variant_id"].notna().to_numpy()
    has_prop = frame["artwork_propensity"].notna().to_numpy()
    _first_bad(where, has_variant != has_prop, "variant_id and artwork_propensity must be both set or both empty")
    reward_all = _reward(frame, where, "played")
    prop_all = _propensity(frame, where, "artwork_propensity", has_prop)
    users_all, ts_all = _int_col(frame, where, "user_id"), _int_col(frame, where, "ts")
    chosen = np.flatnonzero(has_variant)
    title_ids = _int_col(frame, where, "title_id")[chosen]
    variant_ids = frame["variant_id"].iloc[chosen].astype(str).to_numpy()
    known, pos = _in_catalog(catalog, catalog.index_of(title_ids), variant_ids)
    first = ""
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        first = f"row {int(chosen[i])}: title_id {int(title_ids[i])}, variant_id {variant_ids[i]!r}"
        if not known.any():
            raise HomepageError(
                f"{where}: none of its {chosen.size} impressions with artwork is of a title and variant in the dataset's catalog "
                f"({first} is not); is it the dataset these pages were served from?"
            )
    rows = chosen[known]
    title_idx = catalog.index_of(title_ids[known])
    action = pos[known]
    n_choices = np.array([len(catalog.variants[t]) for t in title_idx.tolist()], np.int64)
    logs = LoggedFeedback(
        action=action,
        reward=reward_all[rows],
        propensity=prop_all[rows],
        n_actions=max(int(n_choices.max(initial=1)), int(action.max(initial=0)) + 1),
        title_idx=title_idx,
        user_id=users_all[rows],
        n_choices=n_choices,
    )
    return logs, ts_all[rows], int(frame.shape[0] - chosen.size), int(chosen.size - rows.size), first


def _feedback(frame: pd.DataFrame, where: str, catalog: Catalog, default_ts: int) -> tuple[LoggedFeedback, np.ndarray]:
    _need(frame, where, ("action", "reward", "propensity", "title_idx", "user_id"), "an artwork feedback file")
    title_idx = _int_col(frame, where, "title_idx")
    _first_bad(where, (title_idx < 0) | (title_idx >= len(catalog)), "title_idx is not an index of the dataset's catalog")
    n_choices = np.array([len(catalog.variants[t]) for t in title_idx.tolist()], np.int64)
    action = _int_col(frame, where, "action")
    _first_bad(where, (action < 0) | (action >= n_choices), "action is not a variant position of its title")
    ts = _int_col(frame, where, "ts") if "ts" in frame.columns else np.full(len(frame), default_ts, np.int64)
    logs = LoggedFeedback(
        action=action,
        reward=_reward(frame, where, "reward"),
        propensity=_propensity(frame, where, "propensity"),
        n_actions=max((len(v) for v in catalog.variants), default=1),
        title_idx=title_idx,
        user_id=_int_col(frame, where, "user_id"),
        n_choices=n_choices,
    )
    return logs, ts


def contexts_at(
    events: EventLog, catalog: Catalog, user_ids: np.ndarray, ts: np.ndarray, stable_period: int
) -> tuple[np.ndarray, np.ndarray]:
    """One context per distinct (user, period start), as serving builds it; and each row's index into them."""
    start = (np.asarray(ts, np.int64) // stable_period) * stable_period
    keys = np.stack([np.asarray(user_ids, np.int64), start], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    builder = UserContextBuilder().prepare(catalog)
    ctx = np.zeros((uniq.shape[0], builder.layout_.dim), np.float32)
    for j, (u, t) in enumerate(uniq.tolist()):
        ctx[j] = builder.build(events.user_state(int(u), int(t)))
    return ctx, inverse.reshape(-1).astype(np.int64)


def read_training_logs(path: Path, catalog: Catalog, events: EventLog, stable_period: int, until: int | None = None) -> TrainingLogs:
    """Read ``path`` (either kind) into impressions and contexts against ``catalog`` and ``events``.

    With ``until`` (a bundle's training cut) served-log impressions after it are left out, and
    feedback rows without a time get their users' contexts as of ``until``, not as of the end of
    the log. Feedback rows with a time are taken whole (the synthetic world's simulated feedback,
    which the demo trains on, is stamped at the end of its period, after the default cut).
    """
    where = str(path)
    frame = _read(Path(path))
    if len(frame) == 0:
        raise HomepageError(f"{where}: no rows")
    if "page_id" in frame.columns:
        logs, ts, skipped, gone, first_gone = _served(frame, where, catalog)
        kind = SERVED
        if len(logs) == 0:
            raise HomepageError(f"{where}: none of its {skipped} impressions has an artwork choice (variant_id is empty)")
        if until is not None and (ts > until).any():
            keep = np.flatnonzero(ts <= until)
            if keep.size == 0:
                raise HomepageError(f"{where}: every impression is after the training cut {until}")
            logs, ts = logs.take(keep), ts[keep]
    elif "action" in frame.columns:
        # artwork feedback (simulated or from an experiment) is taken whole: the synthetic world's
        # logs are stamped at the end of its period, after a default training cut
        end = int(events.last_ts) if events.last_ts is not None else 0
        if until is not None:
            end = min(end, int(until))
        logs, ts = _feedback(frame, where, catalog, end)
        kind, skipped, gone, first_gone = FEEDBACK, 0, 0, ""
    else:
        raise HomepageError(
            f"{where}: neither a served log (page_id, title_id, variant_id, artwork_propensity, played) "
            "nor artwork feedback (action, reward, propensity, title_idx, user_id)"
        )
    ctx, row = contexts_at(events, catalog, logs.user_id, ts, stable_period)
    return TrainingLogs(logs, ctx, row, kind, skipped, gone, first_gone)
