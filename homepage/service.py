"""The request service: the active models, the world state refreshed in the background, the deadline.

``PageService`` ties one page request together: one pipelined Redis read (page cache,
history, profile; in the thread pool), then ``build_page`` in process (on the event loop),
under a per-request deadline after which the in-memory fallback page is served instead.
See docs/serving-performance.md for why the work is split that way. It holds no request state; the
loaded models, world state and fallback are swapped atomically by ``refresh``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homepage.bundle import load_bundle
from homepage.domain import Event, Page, RequestContext
from homepage.errors import HomepageError
from homepage.fallback import FallbackPages, empty_page
from homepage.last_good import LastGood, load_last_good, save_last_good
from homepage.log_throttle import LogThrottle
from homepage.metrics import ServingMetrics
from homepage.model_erasure import erase_user_weights
from homepage.page import PageModels, build_page, ranker_problem
from homepage.page_json import TitleCards, dumps, page_json
from homepage.pagebuilder.policies import policy as get_policy
from homepage.state import GlobalState, UserState
from homepage.store import IdempotencyConflict, NotPublished, RedisStore, StoreError, StoreUnavailable
from homepage.unpacked import models_dir_lock, prune_unpacked

log = logging.getLogger(__name__)
MIN_WRITE_WAIT = 0.01  # seconds a built page waits for its cache write even past the deadline
BAD_BUNDLE_RETRY = (1.0, 60.0)  # seconds before retrying a version that failed to go live: first, cap (doubling)
MAX_BAD_VERSIONS = 16
ADMIN_THREADS = 2  # erasures and reloads at once; more wait their turn (each takes seconds: streams read through, a bundle loaded)


class NoModelLoaded(Exception):
    """Redis answers but this worker has no version live (none could be loaded; the refresh logs why): the page is ``model_error``, not a Redis outage."""


@dataclass(frozen=True)
class ServiceConfig:
    """How the service serves: deadline, cache TTL, policy, refresh period, where bundles are unpacked."""

    deadline_seconds: float = 0.05
    page_cache_seconds: int = 30
    cache_reads: bool = True  # False: the cache is still read (same round trip) and written, but ignored
    policy: str | None = None  # None: stage-wise when the bundle has a page model, else row-ranking
    refresh_seconds: float = 2.0  # the active version and Redis health
    world_refresh_seconds: float = 10.0  # the world state: ~5 ms of CPU per read on a 1,000-title world
    models_dir: Path = Path("var/serving-models")
    threads: int = 8
    log_served: bool = True
    # "wall": the service's time is the wall clock. "data": the published state's time (its
    # ``as_of``), advancing with the wall clock from the publish: a historical dataset (MovieLens)
    # is served as if its last event had just happened, as replay sees it
    clock: str = "wall"
    public_url: str | None = None  # site-relative image URLs are served under it (``TitleCards``)


@dataclass(frozen=True)
class PageParams:
    """What a client may ask of a page; ``rows``/``cols`` left out (None) are the bundle's page shape (``shaped``)."""

    rows: int | None = None
    cols: int | None = None
    device: str | None = None
    region: str | None = None
    explain: bool = False

    def shaped(self, models: PageModels | None) -> PageParams:
        """These parameters with ``rows``/``cols`` filled in from the bundle's ``page.rows`` x ``page.cols``, as replay builds."""
        if self.rows is not None and self.cols is not None:
            return self
        rows, cols = models.shape if models is not None else PageModels.shape
        return dataclasses.replace(self, rows=rows if self.rows is None else self.rows, cols=cols if self.cols is None else self.cols)

    def cache_field(self, policy: str) -> str:
        return f"{policy}|{self.rows}|{self.cols}|{self.device or ''}|{self.region or ''}|{int(self.explain)}"


@dataclass(frozen=True, eq=False)
class Loaded:
    """One published version, ready to serve: models, world state, fallback and display cards."""

    store_version: str
    models: PageModels
    policy: str
    cards: TitleCards
    world: GlobalState
    fallback: FallbackPages
    clock_offset: int = 0  # seconds added to the wall clock to get the service's time
    from_disk: bool = False  # the last-good copy a worker started with while Redis was down: reloaded from Redis once it answers


def region_note(world: GlobalState, region: str) -> str | None:
    """A note for a requested region the world has no regional counters for, else ``None``.

    Not a 422: regions are data, not a fixed list (a region gets counters with its first
    event, and profiles take any region), and a page without regional rows is still a page.
    But the client asked for regional rows and gets none, so the page says why.
    """
    if region in world.region_counts:
        return None
    return f"region {region!r}: no regional data here, so no regional rows"


@dataclass(frozen=True)
class Built:
    """A rendered page: the response body, its served-log line, the ranker of each row, and the rankers' problems."""

    body: bytes
    served: str | None
    rows_by_ranker: tuple[str, ...]
    ranker_problems: tuple[tuple[str, str], ...] = ()  # (ranker, "failed" | "rows dropped"), once each


@dataclass(frozen=True)
class PageResult:
    body: bytes
    degraded: bool
    cache_hit: bool
    reason: str = ""
    rows_by_ranker: tuple[str, ...] = field(default_factory=tuple)
    ranker_problems: tuple[tuple[str, str], ...] = ()


class PageService:
    """Serves pages and ingests events against a ``RedisStore``; see the module docstring."""

    def __init__(self, store: RedisStore, config: ServiceConfig, metrics: ServingMetrics | None = None) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics or ServingMetrics()
        self.loaded: Loaded | None = None
        self.redis_ok = False
        self.published = True  # False while Redis answers without the loaded version (restarted empty, flushed, gc'd)
        self.last_error: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="page")
        # slow admin work has its own threads: a batch of erasures on the page pool left no thread for the pages' reads
        self._admin_pool = ThreadPoolExecutor(max_workers=ADMIN_THREADS, thread_name_prefix="admin")
        self._refresh_lock = threading.Lock()
        self._closed = False  # set by close(): a refresh after it leaves the store alone
        self._reloads_seen: int | None = None  # the count of reload requests in Redis at the last refresh
        self._world_read_at = -float("inf")  # monotonic time of the last world-state read
        self._bad_versions: dict[str, _BadVersion] = {}  # versions that failed to load or to go live
        self._tried_last_good = False
        self._outage_logged = False  # an outage's start was logged and its end not yet
        self._retired: list[weakref.ref[Any]] = []  # the models replaced at the last version switch
        self._build_errors = LogThrottle(60.0)  # a failing page model would log a traceback per request

    def close(self) -> None:
        """Stop the thread pools and the refreshes, waiting for those running: the caller closes the store next.

        A refresh still running in its thread (the lifespan cancels only the task awaiting it) reconnected to
        the closed store and kept that connection open: ``homepage serve`` then saw a client left on its
        embedded Redis at its exit, and left the server running.
        """
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._admin_pool.shutdown(wait=True, cancel_futures=True)
        with self._refresh_lock:
            self._closed = True

    # ------------------------------------------------------------ state refresh (background)
    def refresh(self, force: bool = False, everywhere: bool = False) -> bool:
        """Follow the active version (loading a new bundle when it changes); re-read the world state when due.

        ``force``: reload the bundle and the world now, even a version in its retry delay.
        ``everywhere`` (``POST /admin/reload``): also ask the other workers, through Redis, to do so
        at their next refresh; a worker that sees the count of such requests change is forced.

        Each refresh also erases served-log lines of users erased in the last minute that
        landed after their erasure (``RedisStore.sweep_served_after_erasures``).

        The world state is re-read every ``world_refresh_seconds`` (and with a new version):
        reading and parsing it holds the GIL for a few ms in this background thread, which
        delays the requests running meanwhile, and the first page on a new world fills the
        per-world caches (title statistics, popularity orders); a throw-away page fills them
        here instead. Returns True when Redis answered. Never raises for Redis or bundle
        trouble: the service keeps serving what it has and notes the error (``/health/ready``).
        """
        with self._refresh_lock:
            if self._closed:  # the background refresh's last round, run after the lifespan closed the service
                return False
            try:
                if everywhere:
                    self._ask_all_workers_to_reload()
                return self._refresh(force or everywhere)
            finally:
                cur = self.loaded
                serving = (cur.store_version, cur.models.version, cur.policy) if cur is not None else None
                self.metrics.set_state(serving, self.ready, self.redis_ok)

    def _ask_all_workers_to_reload(self) -> None:
        """Count a reload request in Redis (under the refresh lock: this worker's own refresh then reads the new count)."""
        try:
            self.store.request_reload()
        except StoreUnavailable:
            pass  # the refresh that follows meets the outage, and reports it

    def _refresh(self, force: bool) -> bool:
        """``refresh``'s work, under its lock."""
        loading: str | None = None  # the version being put in, if any: its failure is remembered
        try:
            version, reloads = self.store.active_and_reloads()
            if self._reloads_seen is not None and reloads != self._reloads_seen:
                force = True  # POST /admin/reload taken by another worker
            self._reloads_seen = reloads
            held = self.loaded
            # the loaded version's keys must still be there: after a restart without persistence a
            # publish makes a new version active while this worker still serves the vanished one
            self.published = version is not None and (
                held is None or held.store_version == version or self.store.version_exists(held.store_version)
            )
            if version is None:
                if self.loaded is None:  # started after Redis came back empty: popular rows, as the workers running then keep
                    self._serve_last_good("Redis holds no published version at start-up", "a publish")
                raise StoreError("no published version: run `homepage publish`")
            self.store.sweep_served_after_erasures()  # pages logged late, after their user's erasure
            self._forget_in_models(self.store.recently_erased())  # an erasure another worker took
            cur = self.loaded
            same = cur is not None and cur.store_version == version
            offset = cur.clock_offset if cur is not None and same else self._clock_offset(version)
            now = int(time.time()) + offset
            if cur is None or force or not same or cur.from_disk:
                bad = self._bad_versions.get(version)
                if bad is not None and not force and time.monotonic() < bad.retry_at:
                    self._answered(bad.error)
                    return False  # keep serving what is loaded; retried when due or on /admin/reload
                loading = version
                models, bundle_dir = self._load_models(version)
                if models.artwork is not None:  # its stored bundle was rewritten, unless an erasure raced the load
                    models.artwork.forget_users(self.store.erasures())
                self.metrics.model_reloads.inc()
            else:
                models, bundle_dir = cur.models, None
            new_models = cur is None or cur.models is not models
            if not (new_models or force or time.monotonic() - self._world_read_at >= self.config.world_refresh_seconds):
                self._answered()
                return True
            policy = self.config.policy or ("stage-wise" if models.page_model is not None else "row-ranking")
            _check_policy(policy, models)  # not put live to serve model_error pages behind a ready /health/ready
            read_at = time.monotonic()
            world = self.store.read_global_state(now, models.catalog, version)
            cards = cur.cards if cur is not None and cur.models is models else TitleCards.from_catalog(models.catalog, self.config.public_url)
            _warm_up(models, world, policy)
            self.loaded = Loaded(
                store_version=version,
                models=models,
                policy=policy,
                cards=cards,
                world=world,
                fallback=FallbackPages.from_world(world, models.catalog, models.allowed, models.version),
                clock_offset=offset,
            )
            self.published = True  # what is loaded now is the active version
            if new_models:  # an erasure taken while these models loaded forgot the user in the ones they replace
                self._forget_in_models(self.store.recently_erased())
            self._world_read_at = read_at  # only once the new world is in: a failed swap is retried
            if loading is not None:
                self._bad_versions.pop(loading, None)
            if new_models:
                self._freeze_new_models(cur)
                log.info(
                    "serving version %s (bundle %s, policy %s)%s", version, models.version, policy,
                    f", replacing {cur.store_version}" if cur is not None else "",
                )
            if bundle_dir is not None:
                self._keep_last_good(LastGood(version, bundle_dir, world, offset, policy))
                self._prune_unpacked(bundle_dir)
            self._answered()
            return True
        except StoreUnavailable as e:
            if not self._outage_logged:  # once an outage (and once its end): on-call sees when, not every 2 s
                log.warning("store unavailable: %s; pages are the fallback and events get 503 until it answers (%s)", e, self.store.location)
                self._outage_logged = True
            self.redis_ok, self.last_error = False, str(e)
            if self.loaded is None:
                self._serve_last_good()
        except HomepageError as e:  # e.g. nothing published yet: one line, once while it lasts
            error = f"version {loading}: {e}" if loading is not None else str(e)
            if error != self.last_error:
                log.warning("refresh: %s (%s)", error, self.store.location)  # a wrong REDIS_URL or prefix looks like this
            self._answered(error)  # Redis answered (e.g. back empty after a restart): that outage is over
            if loading is not None:
                self._remember_bad(loading, self.last_error)
                self._unloadable_at_start(loading)
        except Exception as e:  # a bad bundle must not take the service down
            # which version, and where it is unpacked: "No space left on device" alone names neither
            where = f" putting version {loading} live (unpacked under {self.config.models_dir})" if loading is not None else ""
            log.exception("refresh failed%s", where)
            self._answered(f"version {loading}: {type(e).__name__}: {e}" if loading is not None else f"{type(e).__name__}: {e}")
            if loading is not None:
                self._remember_bad(loading, self.last_error)
                self._unloadable_at_start(loading)
        self._world_read_at = -float("inf")  # after any failure the next refresh reads the world again
        return False

    def _freeze_new_models(self, replaced: Loaded | None) -> None:
        """Freeze the heap with the new models in; collect fully once if the models replaced last time are still alive.

        ``_freeze_heap`` collects only what is not frozen, so a version that goes must be freed by
        reference counting. A plug-in ranker with a reference cycle would not be, and would stay
        for good at every switch: that is noticed one switch later, named, and collected.
        """
        kept = [obj for ref in self._retired if (obj := ref()) is not None]
        if kept:
            log.warning(
                "models replaced at the last version switch are still in memory (%s: a reference cycle?); "
                "collecting them with a full garbage collection", ", ".join(sorted({type(o).__name__ for o in kept}))
            )
            del kept
        _freeze_heap(full=bool(self._retired) and any(ref() is not None for ref in self._retired))
        old = replaced.models if replaced is not None else None
        self._retired = [weakref.ref(o) for o in (*old.rankers, old.page_model) if o is not None] if old is not None else []

    def _answered(self, error: str | None = None) -> None:
        """Redis answered this refresh (the end of an outage is logged once); ``error``: what is wrong all the same."""
        if self._outage_logged:
            log.warning("Redis answers again%s", f" (but: {error})" if error else ": pages and events are served as usual")
            self._outage_logged = False
        self.redis_ok, self.last_error = True, error

    def erase_user(self, user_id: int) -> int:
        """``DELETE /users``: the user's keys and stream entries, and their own weights in every bundle in Redis.

        The loaded model stops using them here; other workers do at their next refresh (they
        look at the erasures of the last minute), and a worker loading a bundle later gets the
        rewritten one. Returns how many keys, entries and bundle files went or were rewritten.
        """
        n = self.store.delete_user(user_id)
        n += erase_user_weights(self.store, users=[user_id])  # compare-and-set: a concurrent erasure keeps its own
        self._forget_in_models([user_id])
        return n

    def _forget_in_models(self, user_ids: list[int]) -> None:
        """Stop using these users' own weights in the loaded models (the artwork selector's)."""
        cur = self.loaded
        if user_ids and cur is not None and cur.models.artwork is not None:
            cur.models.artwork.forget_users(user_ids)

    def _clock_offset(self, version: str) -> int:
        """Seconds from the wall clock to the service's time under ``version`` (0 with the wall clock)."""
        if self.config.clock != "data":
            return 0
        m = self.store.meta(version)
        return int(m.as_of) - int(m.created)

    def now(self, cur: Loaded | None = None) -> int:
        """The service's time (Unix seconds) under ``cur`` (default: what is loaded now); never ``time.time()``.

        Callers that go on to use a loaded version pass it, so a version swap in between cannot
        pair one version's world with another's clock.
        """
        cur = cur if cur is not None else self.loaded
        return int(time.time()) + (cur.clock_offset if cur is not None else 0)

    def _remember_bad(self, version: str, error: str) -> None:
        """Note a version that failed to go live, so it is retried on a doubling delay (a few kept)."""
        self._bad_versions[version] = _BadVersion.after(self._bad_versions.get(version), version, error)
        while len(self._bad_versions) > MAX_BAD_VERSIONS:
            del self._bad_versions[min(self._bad_versions, key=lambda v: self._bad_versions[v].retry_at)]

    def _load_models(self, version: str) -> tuple[PageModels, Path]:
        """A version's models, from its bundle unpacked under the models directory (and that directory)."""
        bundle_dir = self.store.materialize_bundle(version, Path(self.config.models_dir))
        with models_dir_lock(Path(self.config.models_dir), exclusive=False):  # not replaced while it loads
            return PageModels.from_bundle(load_bundle(bundle_dir)), bundle_dir

    def _prune_unpacked(self, live: Path) -> None:
        """Delete the bundles unpacked for versions no longer live; a failure only costs disk."""
        try:
            gone = prune_unpacked(Path(self.config.models_dir), live, self._store_id())
        except OSError as e:
            log.warning("could not delete old bundles under %s: %s", self.config.models_dir, e)
            return
        if gone:
            log.info("deleted %d bundles unpacked for earlier versions from %s: %s", len(gone), self.config.models_dir, ", ".join(gone))

    def _keep_last_good(self, last: LastGood) -> None:
        """Note on disk the version just put live, for a worker that starts while Redis is down."""
        try:
            save_last_good(Path(self.config.models_dir), last, self._store_id())
        except OSError as e:  # a full or read-only disk costs only the start-up fallback
            log.warning("could not keep the served version on disk: %s", e)

    def _store_id(self) -> str:
        """Which store's versions these are (server and key prefix): another deployment's on a shared disk are not ours."""
        return self.store.store_id

    def _serve_last_good(self, why: str = "Redis unavailable at start-up", until: str = "it answers") -> None:
        """Redis is down, or holds no published version, and nothing is loaded: the last version served from this
        models directory, for the fallback page.

        Pages stay degraded (every read fails, or the version is not in Redis) but hold popular rows
        instead of none; once Redis answers with a version, the next refresh reads its state, and a
        different active version replaces this one.
        """
        if self._tried_last_good:
            return
        self._tried_last_good = True
        last = load_last_good(Path(self.config.models_dir), self._store_id())
        if last is None:
            return
        try:
            with models_dir_lock(Path(self.config.models_dir), exclusive=False):
                models = PageModels.from_bundle(load_bundle(last.bundle_dir))
            loaded = Loaded(
                store_version=last.store_version,
                models=models,
                policy=last.policy,
                cards=TitleCards.from_catalog(models.catalog, self.config.public_url),
                world=last.world,
                fallback=FallbackPages.from_world(last.world, models.catalog, models.allowed, models.version),
                clock_offset=last.clock_offset,
                from_disk=True,
            )
        except Exception as e:  # a damaged bundle on disk: empty fallback pages, as without one
            log.warning("%s, and the last served version %s does not load: %s", why, last.store_version, e)
            return
        self.loaded = loaded
        _freeze_heap()
        log.warning("%s: fallback pages from version %s (kept on disk) until %s", why, last.store_version, until)

    def _unloadable_at_start(self, version: str) -> None:
        """The active version fails to go live (its bundle or world counters gone from Redis, a bad bundle) and nothing is
        loaded: the last-good copy's rows rather than empty pages, as workers started before it keep serving theirs."""
        if self.loaded is None:
            self._serve_last_good(f"version {version} cannot go live at start-up", "a version goes live")

    async def refresh_forever(self) -> None:
        """The lifespan's background task: refresh every ``refresh_seconds`` (sooner while unhealthy)."""
        loop = asyncio.get_running_loop()
        while True:
            ok = await loop.run_in_executor(None, self.refresh)
            await asyncio.sleep(self.config.refresh_seconds if ok else min(0.5, self.config.refresh_seconds))

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self.redis_ok and self.last_error is None

    # ------------------------------------------------------------ pages
    def render(self, cur: Loaded, user: UserState, params: PageParams, now: int, nonce: str = "") -> Built:
        """Build and render a page from a user's state: pure CPU, no I/O (runs on the event loop)."""
        params = params.shaped(cur.models)
        hour = (now // 3600) % 24
        ctx = RequestContext(user.user_id, now, params.rows, params.cols, params.device, hour, params.region)
        page = build_page(
            user, cur.world, cur.models, ctx, policy=cur.policy, explain=params.explain, nonce=nonce,
            slow_seconds=self.config.deadline_seconds,
        )
        region = params.region if params.region is not None else user.region  # the request's, else the profile's
        if region is not None and (note := region_note(cur.world, region)):
            page = dataclasses.replace(page, notes=(*page.notes, note))  # in the body, so cached pages carry it
        page = _with_time(page, now)
        request = {"rows": params.rows, "cols": params.cols, "device": params.device, "region": params.region, "hour": hour, "now": now}
        body = dumps(page_json(page, cur.cards, store_version=cur.store_version, world_as_of=cur.world.as_of, request=request))
        served = _served_record(page, now) if self.config.log_served else None
        problems = tuple(sorted({f for n in page.notes if (f := ranker_problem(n))}))
        return Built(body, served, tuple(r.ranker for r in page.rows), problems)

    def fallback(self, user_id: int, params: PageParams, now: int, reason: str) -> PageResult:
        """The degraded page from memory: no I/O."""
        cur = self.loaded
        params = params.shaped(cur.models if cur is not None else None)
        request = {"rows": params.rows, "cols": params.cols, "device": params.device, "region": params.region, "hour": (now // 3600) % 24, "now": now}
        if cur is None:
            page = _with_time(empty_page(user_id, reason), now)
            body = page_json(page, _NO_CARDS, store_version=None, world_as_of=None, request=request)
        else:
            page = _with_time(cur.fallback.page(user_id, params.rows, params.cols, params.region, reason), now)
            if params.region is not None and (note := region_note(cur.world, params.region)):
                page = dataclasses.replace(page, notes=(*page.notes, note))
            body = page_json(page, cur.cards, store_version=cur.store_version, world_as_of=cur.fallback.as_of, request=request)
        return PageResult(dumps(body), degraded=True, cache_hit=False, reason=reason, rows_by_ranker=tuple(r.ranker for r in page.rows))

    async def page(self, user_id: int, params: PageParams, nonce: str | None = None) -> PageResult:
        """A page within the deadline: personalised when Redis and the model answer in time, else the fallback.

        Redis I/O runs in the thread pool under the deadline (a slow Redis cannot hold the
        event loop); building the page is CPU work and runs on the event loop itself. A
        build in a pool thread competes for the GIL with the loop thread that parses and
        answers HTTP, and each hand-over can wait the interpreter's 5 ms switch interval.
        """
        started = time.monotonic()
        cur = self.loaded
        params = params.shaped(cur.models if cur is not None else None)
        now = self.now(cur)
        deadline = self.config.deadline_seconds
        reason = ""
        try:
            result = await self._page(cur, user_id, params, nonce, now, started, deadline)
        except TimeoutError:
            reason = "deadline"
        except NotPublished:
            reason = "not_published"
        except NoModelLoaded:  # not "redis_unavailable" (it was, and marked Redis down until the next refresh)
            reason = "model_error"
        except StoreUnavailable:
            reason = "redis_unavailable"
            self.redis_ok = False
        except Exception:
            held = self._build_errors.admit("page")
            if held is not None:  # no user id: logs are kept longer and wider than the data
                log.exception("page build failed (%d more since the last logged)", held)
            reason = "model_error"
        if reason:
            result = self.fallback(user_id, params, now, reason)
            self.metrics.fallbacks.labels(reason).inc()
            self.metrics.pages_degraded.inc()
        elif result.cache_hit:
            self.metrics.cache_hits.inc()
            self.metrics.pages_cache_hit.inc()
        else:
            self.metrics.pages_built.inc()
        if result.rows_by_ranker:
            for ranker, n in Counter(result.rows_by_ranker).items():
                self.metrics.rows_served.labels(ranker).inc(n)
        for ranker, kind in result.ranker_problems:
            self.metrics.ranker_problems.labels(ranker, kind.replace(" ", "_")).inc()
        return result

    async def _page(self, cur: Loaded | None, user_id: int, params: PageParams, nonce: str | None, now: int, started: float, deadline: float) -> PageResult:
        if not self.published:
            # Redis answers without the loaded version's keys: a page from them would hold no history
            raise NotPublished("the loaded version is not in Redis")
        if cur is None:
            if self.redis_ok:
                raise NoModelLoaded("no version could be put live")
            raise StoreUnavailable("no model loaded yet")
        field_ = params.cache_field(cur.policy)
        read = self.run(
            functools.partial(self.store.read_request, use_cache=self.config.cache_reads),
            user_id, now, cur.models.catalog, field_, cur.store_version,
        )
        cached, user, as_read = await asyncio.wait_for(read, timeout=deadline)
        if user is None:
            assert cached is not None
            return PageResult(cached, degraded=False, cache_hit=True)
        if time.monotonic() - started >= deadline:
            raise TimeoutError  # the read took the whole budget (a queue of requests, a slow Redis)
        # the nonce tells apart two pages of one user in one second; drawn only for a page built
        built = self.render(cur, user, params, now, secrets.token_hex(4) if nonce is None else nonce)
        # wait for the cache write (bounded), so that a client's next request sees it; the write
        # is refused if an event or profile change came in since the read; a slow write only
        # loses the cache entry
        write = self.run(
            self.store.page_served, user_id, field_, built.body, self.config.page_cache_seconds, built.served, cur.store_version, as_read
        )
        try:
            await asyncio.wait_for(write, timeout=max(deadline - (time.monotonic() - started), MIN_WRITE_WAIT))
        except (TimeoutError, StoreUnavailable):
            pass  # the page is good; only its cache entry and log line are lost
        return PageResult(built.body, degraded=False, cache_hit=False, rows_by_ranker=built.rows_by_ranker, ranker_problems=built.ranker_problems)

    # ------------------------------------------------------------ writes
    def ingest(
        self, events: Sequence[Event], keys: Sequence[str | None], stamped_under: str | None = None, digests: Sequence[str | None] | None = None
    ) -> int:
        """Apply events in Redis (stream, user state, counters, cache invalidation); returns how many were new.

        ``stamped_under`` is the version whose clock validated and stamped the events. On the data
        clock, events go to Redis's active version, so a publish or rollback this worker has not
        followed yet (a different clock) refuses them with 503 until it has (``refresh_seconds``).
        """
        cur = self.loaded
        if cur is None:
            if self.redis_ok:
                raise NoModelLoaded("no version could be put live")
            raise StoreUnavailable("no model loaded yet")
        if self.config.clock == "data" and not (stamped_under == cur.store_version == self.store.active_version()):
            raise StoreUnavailable("the published version changed under the data clock; retry in a few seconds")
        try:
            n = self.store.append_events(events, cur.models.catalog, keys, digests)
        except IdempotencyConflict as e:
            self.metrics.events.inc(e.applied)  # other users' events a concurrent request left applied
            self.metrics.events_conflict.inc(len(events) - e.applied)  # the whole refused part: received = ingested + duplicates + refused
            raise
        self.metrics.events.inc(n)
        self.metrics.events_duplicate.inc(len(events) - n)
        return n

    def set_profile(self, user_id: int, region: str | None, genres: Sequence[str]) -> None:
        cur = self.loaded
        self.store.set_profile(user_id, region, genres, cur.store_version if cur is not None else None)

    def patch_profile(self, user_id: int, changes: Mapping[str, Any]) -> None:
        cur = self.loaded
        self.store.patch_profile(user_id, changes, cur.store_version if cur is not None else None)

    def get_profile(self, user_id: int) -> tuple[str | None, tuple[str, ...]] | None:
        cur = self.loaded
        return self.store.get_profile(user_id, cur.store_version if cur is not None else None)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run blocking store work in the service's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run_admin(self, fn: Any, *args: Any) -> Any:
        """Run slow admin work (an erasure, a reload) in its own threads, never the ones page reads and event writes wait for."""
        return await asyncio.get_running_loop().run_in_executor(self._admin_pool, fn, *args)


@dataclass(frozen=True)
class _BadVersion:
    """A published version that failed to go live (its bundle, its world state), and when to try it again.

    A bad version stays bad until it is republished, so it is not re-unpacked and re-loaded
    at every refresh: the retry delay doubles from ``BAD_BUNDLE_RETRY[0]`` to its cap.
    """

    version: str
    error: str
    delay: float
    retry_at: float

    @staticmethod
    def after(previous: _BadVersion | None, version: str, error: str) -> _BadVersion:
        first, cap = BAD_BUNDLE_RETRY
        delay = min(previous.delay * 2, cap) if previous is not None and previous.version == version else first
        return _BadVersion(version, error, delay, time.monotonic() + delay)


def _check_policy(policy: str, models: PageModels) -> None:
    """Refuse a policy (``HOMEPAGE_POLICY``) that is not registered, or that needs the page model the bundle lacks.

    Put live, such a version built no page (each one ``model_error``, the fallback) while
    ``/health/ready`` said ready: a restart with a mistyped policy passed every readiness check.
    """
    if get_policy(policy).needs_model and models.page_model is None:
        raise HomepageError(f"policy {policy!r} (HOMEPAGE_POLICY) needs a page model; bundle {models.version} has none")


def _warm_up(models: PageModels, world: GlobalState, policy: str) -> None:
    """Build a throw-away page so lazy first-use work (caches, compiled predictors) is not paid by a client."""
    from homepage.state import UserState

    user = UserState.empty(0, int(world.as_of))
    try:
        build_page(user, world, models, RequestContext(0, int(world.as_of)), policy=policy)
    except Exception:
        log.exception("warm-up page failed")


def _freeze_heap(full: bool = False) -> None:
    """Move the objects alive now (the loaded models: ~140k on the small world) out of the cyclic GC's reach.

    A full collection walks every tracked object: 200 ms on a busy 2-core box, a pause that
    lands on whichever request is running. Models live until the next version, so they are
    frozen once. The collection before walks only what is not frozen yet (the new version's
    objects), 70 to 90 ms less than unfreezing first: a version that goes is freed by reference
    counting, since loaded models hold no reference cycles (``tests/test_service_refresh.py``
    checks that replacing them leaves no cyclic garbage behind).
    """
    if full:  # what is frozen too: reference cycles among objects frozen before
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def _with_time(page: Page, now: int) -> Page:
    from dataclasses import replace

    return replace(page, generated_at=float(now))


def _served_record(page: Page, now: int) -> str:
    """The served-page log line (JSON): ids, rows, columns, artwork and propensities."""
    return dumps(
        {
            "page_id": page.page_id,
            "user_id": page.user_id,
            "ts": now,
            "policy": page.policy,
            "model_version": page.model_version,
            "rows": [
                {
                    "row_id": r.row_id,
                    "ranker": r.ranker,
                    "titles": list(r.title_ids),
                    "variants": list(r.variant_ids),
                    "propensities": list(r.propensities),
                }
                for r in page.rows
            ],
        }
    ).decode()


class _NoCards:
    """Display cards when nothing is loaded: the fallback has no rows, so nothing is looked up."""

    catalog: Any = None


_NO_CARDS: Any = _NoCards()
