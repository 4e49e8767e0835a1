"""The ranker contract: a named, configured row generator, fitted offline, pure online.

A ranker is fitted on the event log up to a time ``until`` (``fit``), saves a
self-describing artifact (``save``/``load``: ``manifest.json`` plus ``arrays.npz``, no
pickle), and turns one user's state into candidate rows (``rows``) with no I/O.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from homepage.catalog import Catalog
from homepage.domain import CandidateRow, RequestContext
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.state import GlobalState, UserState


# what the events API takes as a play's row_id (homepage.api.schemas.EventIn): a row served under another id
# could never be credited with its plays
ROW_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def row_id_problem(row_id: object) -> str | None:
    """Why the events API would refuse ``row_id`` (see ``ROW_ID``), or None: also for an id the page builder suffixes."""
    if not isinstance(row_id, str) or not ROW_ID.match(row_id):
        return f"row_id {row_id!r} does not match {ROW_ID.pattern} (the events API would refuse the plays from it)"
    return None


def safe_id(text: str) -> str:
    """``text`` with every character a row id may not hold (see ``ROW_ID``) replaced by ``_``: for data in row ids."""
    return re.sub(r"[^A-Za-z0-9_.:@-]", "_", text)


class StateNeed(StrEnum):
    """Parts of the state a ranker reads, declared for its readers and the conformance suite.

    The service does not narrow its reads by them: one pipelined round trip fetches the whole
    user state (history and profile), and the global counters live in memory.
    """

    HISTORY = "history"  # the user's plays and ratings
    PROGRESS = "progress"  # latest watch progress per title
    PROFILE = "profile"  # region, favourite genres
    POPULARITY = "popularity"  # global and per-region counts and rating sums
    TRENDING = "trending"  # global and per-region decayed counts


class RankerConfig(BaseModel):
    """Base configuration; subclasses add their own fields. Frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    row_length: int = Field(default=50, ge=1, le=1000, description="titles per candidate row")
    max_rows: int = Field(default=1, ge=0, le=100, description="most rows this ranker proposes")

    def config_hash(self) -> str:
        return config_blob_hash(self.model_dump(mode="json"))


def config_blob_hash(config: dict[str, Any]) -> str:
    """The hash of a ranker config as JSON (what artifacts and bundle manifests record)."""
    blob = json.dumps(config, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class FitInput:
    """What a ranker is fitted on: the log and catalog, using only events with ts <= until."""

    log: EventLog
    catalog: Catalog
    until: int
    world: GlobalState  # the global state as of ``until``

    def stars_on_scale(self, stars: float) -> float:
        """``stars``, or the best title's mean rating by ``until`` when the data's scale stops below it.

        Implicit feedback exported as ratings (every rating 1) would otherwise fall below any
        threshold on stars; on a 0.5-5 scale some title's ratings average 5 and ``stars`` holds.
        """
        w = self.world
        rated = w.rating_count > 0
        if not rated.any():
            return float(stars)
        return float(min(stars, float((w.rating_sum[rated] / w.rating_count[rated]).max())))


@dataclass(frozen=True, eq=False)
class RankRequest:
    """What a ranker sees at request time."""

    user: UserState
    world: GlobalState
    catalog: Catalog
    context: RequestContext


class ArtifactError(HomepageError):
    """A saved ranker artifact does not match the code loading it."""


class Ranker(ABC):
    """Base class of every ranker; see the module docstring for the contract."""

    name: ClassVar[str]
    Config: ClassVar[type[RankerConfig]] = RankerConfig
    needs: ClassVar[frozenset[StateNeed]] = frozenset()
    artifact_version: ClassVar[int] = 1
    # config overrides the conformance suite (rankers.testing) fits with, for defaults too strict for its small world
    conformance_config: ClassVar[dict[str, Any]] = {}
    # config fields added after artifacts were saved, with the value an artifact that lacks them keeps
    # (a new default may switch a feature on; a bundle trained before it must serve as it was measured)
    old_artifact_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: RankerConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config.model_validate(config)
        elif not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__}: config must be {self.Config.__name__}")
        self.config = config
        self.train_window_: tuple[int | None, int] | None = None

    # ------------------------------------------------------------- contract
    def fit(self, data: FitInput) -> Self:
        """Learn from ``data``; the base records the training window. Returns self."""
        self.train_window_ = (data.log.first_ts, int(data.until))
        return self

    @abstractmethod
    def rows(self, request: RankRequest) -> list[CandidateRow]:
        """Candidate rows for one user, best first; must be deterministic and pure."""

    def arrays(self) -> dict[str, np.ndarray]:
        """Learned arrays to save; empty for stateless rankers."""
        return {}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what ``arrays`` returned."""

    # ------------------------------------------------------------- artifacts
    def manifest(self) -> dict[str, Any]:
        return {
            "ranker": self.name,
            "artifact_version": self.artifact_version,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.config.config_hash(),
            "train_window": list(self.train_window_) if self.train_window_ else None,
            "created": time.time(),
        }

    def save(self, directory: Path) -> Path:
        """Write ``manifest.json`` and ``arrays.npz`` into ``directory``."""
        directory = Path(directory)
        arrays = {k: np.asarray(v) for k, v in self.arrays().items()}
        for k, v in arrays.items():  # numpy would pickle these, and loading (allow_pickle=False) would refuse them
            if v.dtype == object:
                raise ArtifactError(
                    f"{self.name}.arrays()[{k!r}] is not a plain numpy array (an object array, from None or ragged lists): "
                    "a bundle holding it could not be loaded"
                )
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "arrays.npz", **arrays)
        (directory / "manifest.json").write_text(json.dumps(self.manifest(), indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Load an artifact written by ``save``; refuses one from another ranker or version."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / "manifest.json").read_text())
        except FileNotFoundError as e:
            raise ArtifactError(f"{directory}: no manifest.json") from e
        if manifest.get("ranker") != cls.name:
            raise ArtifactError(f"{directory}: artifact of ranker {manifest.get('ranker')!r}, not {cls.name!r}")
        if manifest.get("artifact_version") != cls.artifact_version:
            raise ArtifactError(
                f"{directory}: {cls.name} artifact version {manifest.get('artifact_version')}, "
                f"code reads {cls.artifact_version}"
            )
        # a field the code gained after the artifact was written takes the value that keeps its behaviour
        ranker = cls(cls.Config.model_validate({**cls.old_artifact_config, **manifest["config"]}))
        window = manifest.get("train_window")
        ranker.train_window_ = tuple(window) if window else None  # type: ignore[assignment]
        with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
            ranker.restore({k: npz[k] for k in npz.files})
        return ranker


class RankerFitFailed(HomepageError):
    """A ranker's ``fit`` raised: the message names the ranker; the command line shows the cause's traceback above it."""

    show_cause = True


def fit_ranker(ranker: Ranker, data: FitInput, fit: Callable[[Ranker, FitInput], object] | None = None) -> None:
    """``ranker.fit(data)`` (or ``fit(ranker, data)``, e.g. on Spark); a failure names the ranker (``RankerFitFailed``)."""
    try:
        if fit is None:
            ranker.fit(data)
        else:
            fit(ranker, data)
    except Exception as e:  # a plug-in can fail in any way: say which ranker, keep the traceback as the cause
        raise RankerFitFailed(f"ranker {ranker.name}: fit() raised {type(e).__name__}: {e}") from e


def row_problem(row: object) -> str | None:
    """Why a ranker's row breaks the contract the page builder relies on, or None.

    Checked at the boundary so a plug-in's mistake drops its row with a note naming the
    ranker, instead of failing the page (or training) far away or serving repeats.
    """
    if not isinstance(row, CandidateRow):
        return f"a {type(row).__name__}, not a CandidateRow"
    if (problem := row_id_problem(row.row_id)) is not None:
        return problem
    ids, scores = row.title_ids, row.scores
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.ndim != 1:
        got = f"a {ids.ndim}-D {ids.dtype} array" if isinstance(ids, np.ndarray) else f"a {type(ids).__name__}"
        return f"{row.row_id}: title_ids must be a 1-D integer numpy array, not {got}"
    if not isinstance(scores, np.ndarray) or scores.dtype.kind != "f" or scores.shape != ids.shape:
        return f"{row.row_id}: scores must be a float numpy array as long as title_ids"
    if ids.size > 1 and len(set(ids.tolist())) != ids.size:  # faster than np.unique at row lengths
        return f"{row.row_id}: a title appears twice"
    if not np.isfinite(scores).all():  # an infinity is served as a null score (JSON has none), as the contract says finite
        return f"{row.row_id}: NaN or infinite score"
    if not isinstance(row.row_score, numbers.Real) or not np.isfinite(row.row_score):
        return f"{row.row_id}: row_score must be a finite number, not {row.row_score!r}"
    return None
