"""The Spark engine: the bundle and the replay of the local engine, with the heavy steps on Spark.

``train`` is ``homepage.bundle.train_bundle`` with a :class:`~homepage.engines.spark_fit.SparkFitter`
(statistics in Spark SQL, ALS in Spark MLlib, page-model training groups on partitions of
users; LightGBM on the driver, on the collected groups, as locally). ``replay`` builds and
scores pages on partitions of users (``homepage.engines.spark_pages``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from homepage.engines.spark_pages import SparkPages
from homepage.engines.spark_session import spark_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from homepage.bundle import ModelBundle
    from homepage.config import PipelineConfig
    from homepage.dataset import Dataset
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.replay.protocol import ReplayProtocol, Requests
    from homepage.replay.run import ReplayResult


class SparkEngine:
    """Train and replay with Spark on ``master`` (default ``local[2]``)."""

    name = "spark"

    def __init__(self, dataset: Path, master: str | None = None, spark: SparkSession | None = None) -> None:
        self.dataset = Path(dataset)
        self.master = master
        self._spark = spark
        self._own = spark is None

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()  # e.g. a test's session: use it, leave it running
            self._own = active is None
            self._spark = active if active is not None else spark_session(self.master)
        return self._spark

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
        """``workers`` is the local engine's; Spark's parallelism is its master's."""
        from homepage.bundle import train_bundle
        from homepage.catalog import Catalog
        from homepage.engines.spark_fit import SparkFitter

        catalog = Catalog.from_frames(dataset.titles, dataset.variants)
        fitter = SparkFitter(self.spark, self.dataset, catalog, SparkPages(self.spark, self.dataset))
        try:
            return train_bundle(dataset, out, config, until=until, progress=progress, fitter=fitter, artwork_logs=artwork_logs)
        finally:
            fitter.stats.unpersist()

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
        pages = SparkPages(self.spark, self.dataset)
        return pages.replay(bundle, models, policies, requests, protocol, half_life, split_time, progress=progress)

    def close(self) -> None:
        if self._own and self._spark is not None:
            self._spark.stop()
            self._spark = None
