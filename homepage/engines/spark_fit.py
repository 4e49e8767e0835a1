"""Fitting the rankers with Spark: statistics from Spark SQL, the personalised ALS from Spark MLlib.

Artifacts are the local engine's, so the online rankers load them unchanged:

- ``top_n``, ``trending``, ``continue_watching`` learn nothing (they read the world state at
  request time); they are fitted on the world state computed by Spark SQL.
- ``video_to_video`` is fitted by its own code on the user x title pairs Spark selects (each
  user's latest ``max_user_titles`` distinct titles, in the log's time order): the same matrix
  the local engine builds, so the same neighbours.
- ``personalized``: item factors from Spark MLlib ALS (implicit preferences), the EASE item
  model from the distinct pairs Spark returns (the same matrix as locally, so the same
  weights), the popularity prior from a Spark SQL decayed count.
- Any other ranker (a plug-in) is fitted by its own code on the driver's event log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.engines.spark_stats import SparkStats
from homepage.eventlog import EventLog
from rankers.base import FitInput, Ranker
from rankers.factorization import fit_ease, interaction_matrix, prune_rows
from rankers.personalized import PersonalizedConfig, PersonalizedRanker
from rankers.video_to_video import VideoToVideoRanker

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True, eq=False)
class PairsLog:
    """What a pair-based ranker reads from the log while fitting: the user index, the first time, the pairs.

    ``interactions`` returns one row per selected (user, title) pair in the time order of its
    last event, which is all ``user_title_matrix`` and ``interaction_matrix`` use.
    """

    user_ids: np.ndarray
    first_ts: int | None
    user_pos: np.ndarray
    title_idx: np.ndarray
    ts: np.ndarray

    def interactions(self, until: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(user position, title index, ts, stars) of the pairs (already cut at the fit's ``until``)."""
        return self.user_pos, self.title_idx, self.ts, np.full(self.ts.size, np.nan, np.float32)


class SparkFitter:
    """The Spark engine's ``homepage.bundle.Fitter``: rankers and page-model training data on Spark."""

    def __init__(self, spark: SparkSession, dataset: Any, catalog: Catalog, pages: Any) -> None:
        self.spark = spark
        self.stats = SparkStats(spark, dataset, catalog)
        self.pages = pages  # homepage.engines.spark_pages.SparkPages

    def fit(self, ranker: Ranker, data: FitInput) -> None:
        """Fit ``ranker`` on events up to ``data.until`` with the Spark statistics (see the module docstring)."""
        world = self.stats.global_state(data.until, data.world.half_life)
        if isinstance(ranker, PersonalizedRanker):
            self.fit_personalized(ranker, FitInput(data.log, data.catalog, data.until, world))
        elif isinstance(ranker, VideoToVideoRanker):
            pairs = self.pairs_log(data.log, data.until, ranker.config.max_user_titles)
            ranker.fit(FitInput(pairs, data.catalog, data.until, world))  # type: ignore[arg-type]
        else:
            ranker.fit(FitInput(data.log, data.catalog, data.until, world))

    def pairs_log(self, log: EventLog, until: int, max_per_user: int | None) -> PairsLog:
        """The selected pairs as a :class:`PairsLog` indexed by the driver log's users."""
        p = self.stats.pairs(until, max_per_user)
        return PairsLog(log.user_ids, log.first_ts, np.searchsorted(log.user_ids, p.user_ids), p.title_idx, p.ts)

    def fit_personalized(self, ranker: PersonalizedRanker, data: FitInput) -> None:
        """ALS on Spark MLlib; the EASE item model and the prior from Spark-computed inputs, as ``PersonalizedRanker.fit``."""
        Ranker.fit(ranker, data)  # the training window
        c = ranker.config
        n_titles = len(data.catalog)
        pairs = self.pairs_log(data.log, data.until, None)
        x = interaction_matrix(pairs.user_pos, pairs.title_idx, int(data.log.user_ids.size), n_titles)
        ranker.item_factors_ = als_item_factors(self.spark, self.stats.pair_frame(data.until), data.log.user_ids, n_titles, c, x.nnz)
        items, b = fit_ease(x, c.ease_lambda, min_count=c.ease_min_count, max_items=c.ease_max_items)
        ranker.item_model_ = prune_rows(b, items, n_titles, ranker.kept_per_title(items.size), keep_negative=c.keep_negative)
        pop = np.log1p(self.stats.popularity_prior(data.until, c.popularity_half_life_days))
        ranker.prior_ = (pop / max(pop.max(initial=0.0), 1e-12)).astype(np.float32)
        ranker.genre_stars_ = data.stars_on_scale(c.genre_min_stars)
        ranker._reset_caches()  # as its own fit ends: every cache (fold-in, new users' pool, last scores) empty

    def fit_page_model(
        self, log: EventLog, catalog: Catalog, config: PipelineConfig, until: int, progress: bool, catalog_at: Callable[[int], Catalog] | None = None
    ) -> Any:
        """The local page-model training, with rankers fitted here and stage groups built on Spark partitions."""
        from homepage.pagebuilder.training import fit_page_model

        return fit_page_model(log, catalog, config, until, progress, fit=self.fit, stage_data_fn=self.pages.stage_data, catalog_at=catalog_at)


def als_regularization(c: PersonalizedConfig, n_users: int, nnz: int) -> float:
    """Spark's regParam for the local engine's lambda.

    ``implicit`` adds lambda to every user's normal equations; Spark MLlib adds regParam times
    the user's (and item's) number of interactions. Dividing lambda by the mean interactions
    per user makes the two agree for the average user.
    """
    return float(c.als_regularization) * max(n_users, 1) / max(nnz, 1)


def als_item_factors(spark: SparkSession, pairs: DataFrame, user_ids: np.ndarray, n_titles: int, c: PersonalizedConfig, nnz: int) -> np.ndarray:
    """Implicit-feedback ALS item factors (n_titles, factors) float32 from Spark MLlib; titles nobody played are zero."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    users = spark.createDataFrame(pd.DataFrame({"user_id": user_ids.astype(np.int64), "u": np.arange(user_ids.size, dtype=np.int32)}))
    data = pairs.join(F.broadcast(users), "user_id").select(
        F.col("u").cast("int").alias("u"), F.col("idx").cast("int").alias("i"), F.lit(1.0).cast("float").alias("r")
    )
    n_rated = data.select("u").distinct().count()
    blocks = max(2, int(spark.sparkContext.defaultParallelism))
    als = ALS(
        rank=c.factors,
        maxIter=c.als_iterations,
        regParam=als_regularization(c, n_rated, nnz),
        implicitPrefs=True,
        alpha=c.als_alpha,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        seed=c.seed,
        nonnegative=False,
        checkpointInterval=-1,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    model = als.fit(data)
    got = model.itemFactors.toPandas()
    out = np.zeros((n_titles, c.factors), np.float32)
    if len(got):
        out[got["id"].to_numpy(np.int64)] = np.stack(got["features"].to_numpy()).astype(np.float32)
    return np.ascontiguousarray(out)
