"""Page-model training data and replay pages on Spark, one task per partition of users.

Requests (sampled on the driver with the local ``sample_requests``) are grouped by user into
partitions; ``groupBy(part).applyInPandas`` runs, on each, the very code the local engine
runs: ``homepage.pagebuilder.training.stage_data`` for training groups and
``homepage.replay.run.score_requests`` (``build_page``) for replay pages, on an
``EventLog`` built by ``EventLog.from_frame`` from the dataset. Each Python worker loads the
dataset and models once and keeps them while it is reused. Results come back pickled and are
put in request order, so they equal the local engine's exactly.

Workers read the dataset and the models from the paths the driver gives: on a cluster these
must be on storage every executor can read (``HOMEPAGE_SPARK_WORKDIR`` for the temporary
model files, the dataset and bundle paths as given on the command line).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from homepage.replay.protocol import ReplayProtocol, Requests

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from homepage.catalog import Catalog
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.pagebuilder.model import PageModel
    from homepage.pagebuilder.training import StageData
    from homepage.replay.run import ReplayResult

EVENT_COLUMNS = ["user_id", "title_id", "kind", "ts", "progress", "stars"]
_WORKER: dict[str, Any] = {}  # per Python worker: the loaded log and models, reused across tasks


# ---------------------------------------------------------------------- worker side
def _cached(slot: str, key: object, build: Callable[[], Any]) -> Any:
    """The value in ``slot`` if it was built for ``key``, else build it (dropping the old one first)."""
    got = _WORKER.get(slot)
    if got is not None and got[0] == key:
        return got[1]
    _WORKER.pop(slot, None)
    value = build()
    _WORKER[slot] = (key, value)
    return value


def _worker_log(dataset: str, bundle: str | None) -> tuple[EventLog, Catalog]:
    """The dataset's event log and the catalog indexing it: the bundle's (replay) or the dataset's own (training)."""

    def build() -> tuple[EventLog, Catalog]:
        from homepage.catalog import Catalog
        from homepage.dataset import load_dataset
        from homepage.eventlog import EventLog

        ds = load_dataset(Path(dataset), columns=EVENT_COLUMNS)
        catalog = _worker_bundle(bundle).catalog if bundle else Catalog.from_frames(ds.titles, ds.variants)
        return EventLog.from_frame(ds.events, catalog, ds.users), catalog

    return _cached("log", (dataset, bundle), build)


def _worker_bundle(bundle: str) -> Any:
    from homepage.bundle import load_bundle

    return _cached("bundle", bundle, lambda: load_bundle(Path(bundle)))


@dataclass(frozen=True)
class StageSpec:
    """What a stage-data task needs (pickled into the task)."""

    dataset: str
    models_dir: str  # rankers/<i>/ artifacts, models.pkl (version, hash, rules), follow/ (optional page model)
    requests: Requests
    half_life: float
    rows: int
    cols: int


def _stage_models(spec: StageSpec) -> tuple[PageModels, PageModel | None]:
    """The inner-split rankers (and the page model to follow, if any) the driver saved for this call."""

    def build() -> tuple[PageModels, PageModel | None]:
        from homepage.page import PageModels
        from homepage.pagebuilder.model import PageModel
        from rankers.registry import ranker_class

        meta = pickle.loads((Path(spec.models_dir) / "models.pkl").read_bytes())
        _, catalog = _worker_log(spec.dataset, None)
        rankers = tuple(ranker_class(name).load(Path(spec.models_dir) / "rankers" / str(i)) for i, name in enumerate(meta["rankers"]))
        models = PageModels(meta["version"], meta["config_hash"], catalog, rankers, rules=meta["rules"])
        follow_dir = Path(spec.models_dir) / "follow"
        follow = PageModel.load(follow_dir) if follow_dir.is_dir() else None
        return models, follow

    return _cached("stage-models", spec.models_dir, build)


def _by_time(requests: Requests, idx: np.ndarray) -> np.ndarray:
    """``idx`` ordered by request time (then index): consecutive requests share the hourly world state.

    Every request's result depends only on the request, so the order changes speed, not results.
    """
    idx = np.asarray(idx, np.int64)
    return idx[np.lexsort((idx, requests.times[idx]))]


def _subset(requests: Requests, idx: np.ndarray) -> Requests:
    resumes = tuple(requests.resumes[int(i)] for i in idx) if requests.resumes else ()
    return Requests(requests.user_ids[idx], requests.times[idx], tuple(requests.targets[int(i)] for i in idx), requests.cold[idx], resumes)


def stage_task(pdf: pd.DataFrame, spec: StageSpec) -> pd.DataFrame:
    """One partition's training groups: ``stage_data`` on its requests, owners mapped to global request indices."""
    from homepage.pagebuilder.training import stage_data

    idx = _by_time(spec.requests, pdf["i"].to_numpy(np.int64))
    log, _ = _worker_log(spec.dataset, None)
    models, follow = _stage_models(spec)
    d = stage_data(log, models, _subset(spec.requests, idx), spec.half_life, spec.rows, spec.cols, follow=follow)
    payload = pickle.dumps(d.with_requests(idx), protocol=5)
    return pd.DataFrame({"part": [int(pdf["part"].iloc[0])], "payload": [payload]})


@dataclass(frozen=True)
class ReplaySpec:
    """What a replay task needs (pickled into the task)."""

    dataset: str
    bundle: str
    policies: list[str]
    requests: Requests
    protocol: ReplayProtocol
    half_life: float


def replay_task(pdf: pd.DataFrame, spec: ReplaySpec) -> pd.DataFrame:
    """One partition's replay: every policy's page for its requests, scored by ``score_requests``."""
    from homepage.page import PageModels
    from homepage.replay.run import ReplayJob, score_requests

    idx = _by_time(spec.requests, pdf["i"].to_numpy(np.int64))
    log, _ = _worker_log(spec.dataset, spec.bundle)
    models = _cached("replay-models", spec.bundle, lambda: PageModels.from_bundle(_worker_bundle(spec.bundle)))
    job = ReplayJob(log, models, spec.policies, spec.requests, spec.protocol, spec.half_life)
    scores = score_requests(job, [int(i) for i in idx])
    return pd.DataFrame({"i": idx, "payload": [pickle.dumps(s, protocol=5) for s in scores]})


# ---------------------------------------------------------------------- driver side
class SparkPages:
    """Runs stage data and replay on Spark partitions of users."""

    def __init__(self, spark: SparkSession, dataset: Path, partitions: int | None = None) -> None:
        self.spark = spark
        self.dataset = str(Path(dataset).resolve())
        self.partitions = partitions or 4 * spark.sparkContext.defaultParallelism

    def _parts(self, requests: Requests) -> Any:
        """A Spark DataFrame of (request index, user partition)."""
        n = len(requests)
        part = (requests.user_ids.astype(np.int64) * 2654435761) % (2**32) % self.partitions  # a user's requests share a partition
        return self.spark.createDataFrame(pd.DataFrame({"i": np.arange(n, dtype=np.int64), "part": part.astype(np.int64)}))

    def stage_data(
        self,
        log: EventLog,
        models: PageModels,
        requests: Requests,
        half_life: float,
        rows: int,
        cols: int,
        world_granularity: int = 3600,
        progress: Callable[[int], None] | None = None,
        follow: PageModel | None = None,
    ) -> StageData:
        """``homepage.pagebuilder.training.stage_data`` with the requests spread over Spark partitions of users."""
        from homepage.pagebuilder.training import StageData

        if world_granularity != 3600:
            raise ValueError("the Spark engine builds stage data at the default world granularity (3600 s)")
        work = Path(tempfile.mkdtemp(prefix="homepage-spark-models-", dir=os.environ.get("HOMEPAGE_SPARK_WORKDIR")))
        try:
            for i, r in enumerate(models.rankers):
                r.save(work / "rankers" / str(i))
            meta = {"rankers": [r.name for r in models.rankers], "version": models.version, "config_hash": models.config_hash, "rules": models.rules}
            (work / "models.pkl").write_bytes(pickle.dumps(meta))
            if follow is not None:
                follow.save(work / "follow")
            spec = StageSpec(self.dataset, str(work), requests, half_life, rows, cols)
            out = self._parts(requests).groupBy("part").applyInPandas(lambda pdf: stage_task(pdf, spec), "part long, payload binary")
            chunks = [pickle.loads(p) for p in out.toPandas()["payload"]]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if progress is not None:
            progress(len(requests))
        return StageData.in_request_order(chunks)

    def replay(
        self,
        bundle: Path,
        models: PageModels,
        policies: list[str],
        requests: Requests,
        protocol: ReplayProtocol,
        half_life: float,
        split_time: int,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayResult:
        """``homepage.replay.run.replay`` with the requests spread over Spark partitions of users."""
        import time

        from homepage.replay.run import collect

        started = time.perf_counter()
        spec = ReplaySpec(self.dataset, str(Path(bundle).resolve()), list(policies), requests, protocol, half_life)
        out = self._parts(requests).groupBy("part").applyInPandas(lambda pdf: replay_task(pdf, spec), "i long, payload binary").toPandas()
        out = out.sort_values("i")
        results = [pickle.loads(p) for p in out["payload"]]
        if len(results) != len(requests):
            raise RuntimeError(f"Spark replay returned {len(results)} of {len(requests)} requests")
        if progress is not None:
            progress(len(requests))
        workers = int(self.spark.sparkContext.defaultParallelism)
        return collect(results, models, policies, requests, protocol, split_time, time.perf_counter() - started, workers)
