"""Starting a SparkSession for the Spark engine; the only place that checks pyspark and Java are there.

``pyspark`` is an optional extra (``pip install -e ".[spark]"``); without it, or without a
Java runtime, the engine stops with a message saying what to install. Workers run this very
Python interpreter (``PYSPARK_PYTHON``), so they import the same ``homepage`` code.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from homepage.errors import HomepageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL_HINT = 'pip install -e ".[spark]"'


class SparkUnavailable(HomepageError):
    """The Spark engine was asked for, but pyspark or Java is missing."""


def java_available() -> bool:
    """True when a Java runtime can be found (JAVA_HOME or ``java`` on PATH)."""
    home = os.environ.get("JAVA_HOME")
    if home and os.path.isfile(os.path.join(home, "bin", "java")):
        return True
    return shutil.which("java") is not None


def require_spark() -> None:
    """Raise :class:`SparkUnavailable` naming what to install when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        raise SparkUnavailable(f"--engine spark: pyspark is not installed; install the extra with `{INSTALL_HINT}`") from e
    if not java_available():
        raise SparkUnavailable("--engine spark: no Java runtime found (set JAVA_HOME or put `java` on PATH); Spark 3.5 needs Java 8, 11 or 17")


def spark_session(master: str | None = None, shuffle_partitions: int | None = None, app: str = "homepage") -> SparkSession:
    """A SparkSession on ``master`` (default ``local[2]``): UI off, Arrow on, workers on this interpreter.

    ``HOMEPAGE_SPARK_DRIVER_MEMORY`` (default 4g) sizes the driver JVM in local mode.
    """
    require_spark()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    master = master or "local[2]"
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no network needed; avoids a hostname lookup warning
    parts = shuffle_partitions or _default_partitions(master)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(parts))
        .config("spark.default.parallelism", str(parts))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", os.environ.get("HOMEPAGE_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.python.worker.reuse", "true")
        .config("spark.driver.maxResultSize", "4g")
    )
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # the JVM failed to start: report it as a CLI error, not a traceback
        raise SparkUnavailable(f"--engine spark: could not start Spark on {master!r}: {e}") from e
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _default_partitions(master: str) -> int:
    """Shuffle partitions: twice the local cores for ``local[n]``, else 16."""
    if master.startswith("local["):
        inner = master[len("local[") : -1].split(",")[0]
        n = os.cpu_count() or 2 if inner == "*" else int(inner) if inner.isdigit() else 2
        return max(2, 2 * n)
    return 16
