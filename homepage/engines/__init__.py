"""Offline engines: where ``homepage train`` and ``homepage replay`` run their heavy steps.

``local`` runs everything in this process (and ``--workers`` forked processes for replay);
``spark`` runs statistics, ALS and per-user page work on a Spark cluster or ``local[n]``
(``homepage.engines.spark_engine``, the only importer of pyspark, through its submodules).
Both produce the same bundle layout and the same replay report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from homepage.errors import HomepageError

if TYPE_CHECKING:
    from homepage.bundle import ModelBundle
    from homepage.config import PipelineConfig
    from homepage.dataset import Dataset
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.replay.protocol import ReplayProtocol, Requests
    from homepage.replay.run import ReplayResult

ENGINES = ("local", "spark")


class Engine(Protocol):
    """Trains bundles and replays pages; every engine gives the local engine's results."""

    name: str

    def train(
        self,
        dataset: Dataset,
        out: Path,
        config: PipelineConfig,
        until: int | None,
        progress: bool,
        artwork_logs: Path | None = None,
        workers: int = 1,
    ) -> ModelBundle:
        """Fit the rankers and the page model, and write one bundle under ``out`` (``workers``: local processes)."""
        ...

    def replay(
        self,
        log: EventLog,
        bundle: Path,
        models: PageModels,
        policies: list[str],
        requests: Requests,
        protocol: ReplayProtocol,
        half_life: float,
        split_time: int,
        progress: Callable[[int], None] | None,
        workers: int,
    ) -> ReplayResult:
        """Build and score every policy's page for every request."""
        ...

    def close(self) -> None:
        """Release what the engine started."""
        ...


class LocalEngine:
    """Everything in this process: ``homepage.bundle.train_bundle`` and ``homepage.replay.run.replay``."""

    name = "local"

    def train(
        self,
        dataset: Dataset,
        out: Path,
        config: PipelineConfig,
        until: int | None,
        progress: bool,
        artwork_logs: Path | None = None,
        workers: int = 1,
    ) -> ModelBundle:
        from homepage.bundle import train_bundle

        return train_bundle(dataset, out, config, until=until, progress=progress, artwork_logs=artwork_logs, workers=workers)

    def replay(
        self,
        log: EventLog,
        bundle: Path,
        models: PageModels,
        policies: list[str],
        requests: Requests,
        protocol: ReplayProtocol,
        half_life: float,
        split_time: int,
        progress: Callable[[int], None] | None,
        workers: int,
    ) -> ReplayResult:
        from homepage.replay.run import replay

        return replay(log, models, policies, requests, protocol, half_life, split_time, progress=progress, workers=workers)

    def close(self) -> None:
        return None


def get_engine(name: str, master: str | None = None, dataset: Path | None = None) -> Engine:
    """The engine called ``name``; ``master`` is Spark's master URL (``--master``)."""
    if name == "local":
        if master is not None:
            raise HomepageError("--master: only meaningful with --engine spark")
        return LocalEngine()
    if name == "spark":
        from homepage.engines.spark_session import require_spark

        require_spark()
        from homepage.engines.spark_engine import SparkEngine

        if dataset is None:
            raise HomepageError("--engine spark: needs the dataset directory")
        return SparkEngine(dataset, master)
    raise HomepageError(f"--engine: unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
