"""Spark SQL over a dataset's Parquet: the world statistics and the interaction pairs rankers fit on.

Every query reads ``events.parquet`` with Spark and keeps what ``EventLog`` keeps: plays and
ratings of catalog titles, in the log's stable time order (``ts``, then the row's position in
the file, ``_metadata.row_index``), so ties resolve exactly as the local engine resolves them.
Results come back to the driver as numpy arrays indexed like the catalog, in the very shapes
the local code produces (``GlobalState``, the capped user x title pairs, the popularity prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from homepage.catalog import Catalog
from homepage.state import PLAY, RATING, GlobalState, frozen

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True, eq=False)
class Pairs:
    """Distinct (user, title) pairs with the time order of each pair's last event, oldest first."""

    user_ids: np.ndarray  # int64
    title_idx: np.ndarray  # int64 catalog index
    ts: np.ndarray  # int64, the pair's last event time


class SparkStats:
    """Spark SQL statistics of one dataset's events against one catalog."""

    def __init__(self, spark: SparkSession, dataset: Path, catalog: Catalog) -> None:
        from pyspark.sql import functions as F

        self.spark = spark
        self.catalog = catalog
        titles = spark.createDataFrame(
            pd.DataFrame({"title_id": catalog.title_ids.astype(np.int64), "idx": np.arange(len(catalog), dtype=np.int64)})
        )
        users = spark.read.parquet(str(Path(dataset) / "users.parquet")).select("user_id", "region").where(F.col("region").isNotNull())
        self.users = users
        ev = (
            spark.read.parquet(str(Path(dataset) / "events.parquet"))
            .select("user_id", "title_id", "kind", "ts", "stars", F.col("_metadata.row_index").alias("row"))
            .where(F.col("kind").isin(int(PLAY), int(RATING)))
        )
        # known titles only, as EventLog's by-time arrays; the user's region (or null) from users.parquet
        self.events: DataFrame = ev.join(F.broadcast(titles), "title_id").join(users, "user_id", "left").cache()
        self._cache: dict[tuple[str, int, float], object] = {}

    def unpersist(self) -> None:
        """Drop the cached events."""
        self.events.unpersist()

    # ------------------------------------------------------------------ world
    def global_state(self, t: int, half_life: float) -> GlobalState:
        """``EventLog.global_state(t, half_life)`` computed with Spark SQL: counts, decayed counts, ratings, regions."""
        key = ("world", int(t), float(half_life))
        if key not in self._cache:
            self._cache[key] = self._global_state(int(t), float(half_life))
        return self._cache[key]  # type: ignore[return-value]

    def _global_state(self, t: int, half_life: float) -> GlobalState:
        from pyspark.sql import functions as F

        from pyspark.sql import Window

        n = len(self.catalog)
        ev = self.events.where(F.col("ts") <= t).withColumn("w", F.pow(F.lit(2.0), -((F.lit(t) - F.col("ts")).cast("double") / F.lit(half_life))))
        is_rating = F.col("kind") == int(RATING)
        # a viewer counts once per title (``eventlog.first_of_pairs``): the pair's earliest event, its earliest rating
        pair = Window.partitionBy("user_id", "idx")
        first = F.row_number().over(pair.orderBy("ts", "row")) == 1
        first_rating = F.row_number().over(pair.orderBy((~is_rating).cast("int"), "ts", "row")) == 1
        ev = ev.withColumn("first", first).withColumn("first_rating", first_rating & is_rating)
        counted = ev.where(F.col("first"))
        per_title = ev.groupBy("idx").agg(
            F.sum(F.when(F.col("first"), 1).otherwise(0)).alias("c"),
            F.sum(F.when(F.col("first"), F.col("w")).otherwise(0.0)).alias("d"),
            F.sum(F.when(F.col("first_rating"), F.col("stars").cast("double")).otherwise(0.0)).alias("rs"),
            F.sum(F.when(F.col("first_rating"), 1).otherwise(0)).alias("rc"),
        ).toPandas()
        per_region = counted.where(F.col("region").isNotNull()).groupBy("region", "idx").agg(F.count(F.lit(1)).alias("c"), F.sum("w").alias("d")).toPandas()
        n_users = int(ev.select(F.countDistinct("user_id")).first()[0])  # type: ignore[index]
        idx = per_title["idx"].to_numpy(np.int64)
        counts, decayed = np.zeros(n, np.int64), np.zeros(n)
        rsum, rcount = np.zeros(n), np.zeros(n, np.int64)
        counts[idx] = per_title["c"].to_numpy(np.int64)
        decayed[idx] = per_title["d"].to_numpy(np.float64)
        rsum[idx] = per_title["rs"].to_numpy(np.float64)
        rcount[idx] = per_title["rc"].to_numpy(np.int64)
        rcounts: dict[str, np.ndarray] = {}
        rdecayed: dict[str, np.ndarray] = {}
        for region in sorted(self.regions()):
            part = per_region[per_region["region"] == region]
            c, d = np.zeros(n, np.int64), np.zeros(n)
            c[part["idx"].to_numpy(np.int64)] = part["c"].to_numpy(np.int64)
            d[part["idx"].to_numpy(np.int64)] = part["d"].to_numpy(np.float64)
            rcounts[region], rdecayed[region] = frozen(c), frozen(d)
        return GlobalState(
            as_of=t,
            half_life=half_life,
            counts=frozen(counts),
            decayed=frozen(decayed),
            rating_sum=frozen(rsum),
            rating_count=frozen(rcount),
            region_counts=rcounts,
            region_decayed=rdecayed,
            n_users=n_users,
        )

    def regions(self) -> list[str]:
        """Every region a user has in users.parquet, like ``EventLog.regions``."""
        key = ("regions", 0, 0.0)
        if key not in self._cache:
            self._cache[key] = [str(r[0]) for r in self.users.select("region").distinct().collect()]
        return self._cache[key]  # type: ignore[return-value]

    # ------------------------------------------------------------------ fitting inputs
    def popularity_prior(self, until: int, half_life_days: float) -> np.ndarray:
        """Per title, the sum of 2^-(age in days / half-life) over each user's earliest event of it with ts <= until (the personalised prior's input)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        age_days = (F.lit(int(until)) - F.col("ts")).cast("double") / F.lit(86_400.0)
        w = F.pow(F.lit(2.0), -(age_days / F.lit(float(half_life_days))))
        first = F.row_number().over(Window.partitionBy("user_id", "idx").orderBy("ts", "row")) == 1
        ev = self.events.where(F.col("ts") <= int(until)).withColumn("first", first)
        got = ev.where(F.col("first")).groupBy("idx").agg(F.sum(w).alias("p")).toPandas()
        out = np.zeros(len(self.catalog))
        out[got["idx"].to_numpy(np.int64)] = got["p"].to_numpy(np.float64)
        return out

    def pairs(self, until: int, max_per_user: int | None = None) -> Pairs:
        """Distinct (user, title) pairs up to ``until``; with ``max_per_user`` only each user's latest titles.

        "Latest" follows the log's time order of each pair's last event, exactly as
        ``rankers.similarity.user_title_matrix`` orders them.
        """
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        last = (
            self.events.where(F.col("ts") <= int(until))
            .groupBy("user_id", "idx")
            .agg(F.max(F.struct("ts", "row")).alias("last"))
            .select("user_id", "idx", F.col("last.ts").alias("ts"), F.col("last.row").alias("row"))
        )
        if max_per_user is not None:
            newest = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("row").desc())
            last = last.withColumn("rank", F.row_number().over(newest)).where(F.col("rank") <= int(max_per_user))
        got = last.select("user_id", "idx", "ts", "row").toPandas()
        order = np.lexsort((got["row"].to_numpy(np.int64), got["ts"].to_numpy(np.int64)))
        return Pairs(
            user_ids=got["user_id"].to_numpy(np.int64)[order],
            title_idx=got["idx"].to_numpy(np.int64)[order],
            ts=got["ts"].to_numpy(np.int64)[order],
        )

    def pair_frame(self, until: int) -> DataFrame:
        """Distinct (user, idx) pairs up to ``until`` as a Spark DataFrame (ALS input)."""
        from pyspark.sql import functions as F

        return self.events.where(F.col("ts") <= int(until)).select("user_id", "idx").distinct()
