"""Spark job time against events: fitting every ranker with the Spark engine and with the local one.

For each dataset (e.g. the synthetic world at 1M, 5M and 25M events from
``bench/generate_scale.py --keep``), fits the default rankers on events up to the 0.8 quantile
twice: in this process (the local engine) and with the Spark engine on ``--master``, then
checks the artifacts agree (ALS factors excepted: see docs/spark.md) and prints wall time and
this process's CPU time for both. Spark's CPU is spent in the JVM and its Python workers, so
for Spark the wall time is the figure; on a shared machine, compare the ratio in one run.

    python bench/spark_scale.py /tmp/spark-world-1m /tmp/spark-world-5m --master 'local[2]'
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.dataset import load_dataset
from homepage.engines.spark_fit import SparkFitter
from homepage.engines.spark_pages import SparkPages
from homepage.engines.spark_session import spark_session
from homepage.eventlog import EventLog
from rankers.base import FitInput
from rankers.registry import build_rankers


def _timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    spark = spark_session(args.master)
    cfg = PipelineConfig()
    print(f"{'dataset':<28} {'events':>10} {'local wall':>10} {'local cpu':>10} {'spark wall':>10} {'spark cpu*':>10} {'ratio':>6}  same artifacts")
    for path in args.datasets:
        ds = load_dataset(path, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
        catalog = Catalog.from_frames(ds.titles, ds.variants)
        log = EventLog.from_frame(ds.events, catalog, ds.users)
        until = log.quantile_time(cfg.split_quantile)
        data = FitInput(log, catalog, until, log.global_state(until, cfg.half_life_seconds))
        local, remote = build_rankers(list(cfg.rankers)), build_rankers(list(cfg.rankers))
        lw, lc = _timed(lambda: [r.fit(data) for r in local])
        fitter = SparkFitter(spark, path, catalog, SparkPages(spark, path))
        sw, sc = _timed(lambda: [fitter.fit(r, data) for r in remote])
        fitter.stats.unpersist()
        same = all(
            np.allclose(a.arrays()[k], b.arrays()[k], rtol=1e-6, atol=0)
            for a, b in zip(local, remote)
            for k in a.arrays()
            if k != "item_factors"
        )
        print(f"{str(path):<28} {len(log):>10,} {lw:>9.1f}s {lc:>9.1f}s {sw:>9.1f}s {sc:>9.1f}s {sw / lw:>6.2f}  {same}", flush=True)
    print("* spark cpu: the driver process only (the JVM and Python workers are not counted)")
    spark.stop()


if __name__ == "__main__":
    main()
