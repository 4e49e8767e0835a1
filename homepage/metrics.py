"""Prometheus metrics of the serving API, in a registry per app (tests may build several apps).

With several uvicorn workers each worker is its own process, so ``/metrics`` answered by
one worker would show only that worker's counts. ``homepage serve --workers N`` (N > 1)
therefore sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory it owns before the workers
start: prometheus_client then keeps every value in memory-mapped files there, and
``render`` aggregates the files of all workers (counters and histograms summed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# the methods the API answers (and HEAD, OPTIONS); any other is labelled "other": the HTTP parser passes
# some thirty (WebDAV's PROPFIND, MKCOL, ...; h11 any token), each a new series on every route a client names
LABELLED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# why a page was the fallback (``X-Degraded``); each series exists from the start, at 0
FALLBACK_REASONS = ("deadline", "redis_unavailable", "model_error", "not_published")


def method_label(method: str) -> str:
    """A request's method as a metric label: one of ``LABELLED_METHODS`` or ``"other"``, so clients cannot add series."""
    return method if method in LABELLED_METHODS else "other"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when running as one of several workers, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class ServingMetrics:
    """Request latency per endpoint, page outcomes, fallbacks, cache hits, rows and problems per ranker, events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "homepage_request_seconds", "Request latency by endpoint", ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.responses = Counter("homepage_responses", "Responses by endpoint and status", ["endpoint", "status"], registry=r)
        self.pages = Counter("homepage_pages", "Pages served by outcome (built, cache_hit, degraded)", ["outcome"], registry=r)
        self.fallbacks = Counter("homepage_fallbacks", "Fallback pages by reason", ["reason"], registry=r)
        for reason in FALLBACK_REASONS:  # a series born at its first increment hides that one from rate() and increase()
            self.fallbacks.labels(reason)
        self.cache_hits = Counter("homepage_page_cache_hits", "Page cache hits", registry=r)
        self.rows_served = Counter(
            "homepage_rows_served", "Rows by ranker in pages built and fallback pages (a cache hit repeats a page counted when built)", ["ranker"], registry=r
        )
        self.ranker_problems = Counter(
            "homepage_ranker_problems", "Pages built without some of a ranker's rows: it raised (failed) or broke the row contract (rows_dropped)",
            ["ranker", "kind"], registry=r,
        )
        self.events = Counter("homepage_events_ingested", "Events acknowledged (applied in Redis)", registry=r)
        self.events_duplicate = Counter("homepage_events_duplicate", "Events skipped by idempotency key", registry=r)
        self.events_rejected = Counter("homepage_events_unavailable", "Events refused with 503 (Redis unavailable)", registry=r)
        self.events_conflict = Counter(
            "homepage_events_idempotency_conflicts", "Events refused with 422 because their batch reused an idempotency key for a different event", registry=r
        )
        self.model_reloads = Counter("homepage_model_reloads", "Model versions loaded", registry=r)
        # state, one series per live worker (multiprocess: liveall): which version each serves, and whether it can
        self.serving = Gauge(
            "homepage_serving_info", "1 for the version this worker serves (one series per worker: the versions it served before leave)",
            ["store_version", "model_version", "policy"], registry=r, multiprocess_mode="liveall",
        )
        self.ready = Gauge("homepage_ready", "1 when this worker serves personal pages (what /health/ready says)", registry=r, multiprocess_mode="liveall")
        self.redis_up = Gauge("homepage_redis_up", "1 when Redis answered this worker's last refresh", registry=r, multiprocess_mode="liveall")
        self._serving_labels: tuple[str, str, str] | None = None
        # label children of the per-request counters, looked up once (a lookup takes a lock)
        self.pages_built = self.pages.labels("built")
        self.pages_cache_hit = self.pages.labels("cache_hit")
        self.pages_degraded = self.pages.labels("degraded")

    def set_state(self, serving: tuple[str, str, str] | None, ready: bool, redis_up: bool) -> None:
        """Record what a refresh found: the (store version, model version, policy) served, readiness, Redis."""
        if serving != self._serving_labels:
            if self._serving_labels is not None:  # a series per version ever served grew /metrics at every publish
                self.serving.labels(*self._serving_labels).set(0)  # a worker's file keeps it: ``render`` leaves zeros out
                if multiprocess_dir() is None:  # there prometheus_client only warns (two raw lines on stderr a switch)
                    self.serving.remove(*self._serving_labels)
            if serving is not None:
                self.serving.labels(*serving).set(1)
            self._serving_labels = serving
        self.ready.set(1 if ready else 0)
        self.redis_up.set(1 if redis_up else 0)

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's values summed in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        _forget_dead_workers(path)
        merged = CollectorRegistry()
        merged.register(_ServedNow(multiprocess.MultiProcessCollector(None, path=path)))
        return generate_latest(merged)


class _ServedNow:
    """The workers' merged metrics without the ``homepage_serving_info`` series of versions they no longer serve.

    A worker's memory-mapped file keeps every label set it ever wrote (``remove`` does not reach
    it), so each publish or rollback left one more series per worker, at 0, for good.
    """

    def __init__(self, inner: multiprocess.MultiProcessCollector) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        for m in self._inner.collect():
            if m.name == "homepage_serving_info":
                m.samples = [s for s in m.samples if s.value != 0]
            yield m


def _forget_dead_workers(path: str) -> None:
    """Drop the live-gauge files of worker processes that are gone (uvicorn replaces a dead worker under a new pid).

    Counters and histograms of a dead worker keep counting in the sums; its state gauges
    (``homepage_ready`` = 1 of a worker that no longer exists) must not.
    """
    for f in Path(path).glob("gauge_live*_*.db"):
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
