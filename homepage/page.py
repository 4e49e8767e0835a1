"""``build_page``: the one code path from a user's state to a page, used by the API and by replay.

Online the state comes from Redis, offline from the event log as of t; either way this
function sees only plain data and fitted models, and does no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from homepage.catalog import Catalog
from homepage.domain import CandidateRow, Page, PlacedRow, RequestContext, RowReason
from homepage.errors import HomepageError
from homepage.log_throttle import LogThrottle
from homepage.pagebuilder.candidates import CandidateMatrix, TitleLookup, TitleStats
from homepage.pagebuilder.features import DEVICES, UserSignals
from homepage.pagebuilder.loop import assemble
from homepage.pagebuilder.model import PageModel
from homepage.pagebuilder.policies import policy as get_policy
from homepage.pagebuilder.rules import PageRules, unmet_rules
from homepage.state import GlobalState, UserState
from rankers.base import Ranker, RankRequest, row_id_problem, row_problem

log = logging.getLogger(__name__)

KIND_VOCAB: tuple[str, ...] = (
    "continue_watching",
    "top_picks",
    "genre",
    "top_n",
    "top_n_region",
    "trending",
    "trending_region",
    "because_you_watched",
    "single_list",
)


@dataclass(eq=False)
class PageModels:
    """Everything ``build_page`` needs from a model bundle, loaded once per version."""

    version: str
    config_hash: str
    catalog: Catalog
    rankers: tuple[Ranker, ...]
    page_model: PageModel | None = None
    artwork: Any | None = None  # artwork.page_artwork.PageArtwork
    rules: PageRules = field(default_factory=PageRules)
    shape: tuple[int, int] = (10, 10)  # the bundle's page.rows x page.cols: the page a request gets unless it asks for another
    # id(world) -> (world, its stats): holding the world keeps its id from going to another state
    _stats: dict[int, tuple[GlobalState, TitleStats]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_bundle(cls, bundle: Any, rules: PageRules | None = None) -> PageModels:
        """The page-building view of a ``homepage.bundle.ModelBundle`` (page model and artwork if present)."""
        components = bundle.manifest.get("components", {})
        page_model = None
        if "page_model" in components:
            page_model = PageModel.load(bundle.path / components["page_model"]["dir"])
        artwork = None
        if "artwork" in components:
            from artwork.page_artwork import PageArtwork

            artwork = PageArtwork.load(bundle.path / components["artwork"]["dir"], bundle.catalog)
        return cls(
            version=bundle.version,
            config_hash=bundle.manifest.get("config_hash", ""),
            catalog=bundle.catalog,
            rankers=bundle.rankers,
            page_model=page_model,
            artwork=artwork,
            rules=rules if rules is not None else bundle.config.page.rules,
            shape=(bundle.config.page.rows, bundle.config.page.cols),
        )

    def __post_init__(self) -> None:
        self.rules.check({r.name for r in self.rankers}, stored=True)  # new configs are checked in full by PipelineConfig
        self.allowed = self.rules.allowed_titles(self.catalog.maturity)
        self._lookup: TitleLookup | None = None

    @property
    def title_lookup(self) -> TitleLookup:
        """Title id -> catalog index under the maturity rules, built on first use."""
        if self._lookup is None:
            self._lookup = TitleLookup(self.catalog, self.allowed)
        return self._lookup

    def candidate_matrix(self, rows: Sequence[CandidateRow], user: UserState, world: GlobalState) -> CandidateMatrix:
        """``rows`` as a padded matrix of the titles ``user`` may be shown under ``world``: allowed by the rules, seen by someone."""
        return CandidateMatrix.build(
            list(rows), self.catalog, self.ranker_vocab, self.kind_vocab, self.allowed, self.title_lookup,
            unseen=self.title_stats(world).unseen, own=user.known_titles,
        )

    @property
    def ranker_vocab(self) -> tuple[str, ...]:
        if self.page_model is not None:
            return self.page_model.ranker_vocab
        return tuple(sorted({r.name for r in self.rankers}))

    @property
    def kind_vocab(self) -> tuple[str, ...]:
        return self.page_model.kind_vocab if self.page_model is not None else KIND_VOCAB

    @property
    def personal(self) -> Ranker | None:
        for r in self.rankers:
            if hasattr(r, "score_titles"):
                return r
        return None

    def title_stats(self, world: GlobalState) -> TitleStats:
        """Per-title statistics, cached per world state (online the world changes every few seconds).

        Keyed by the state object, not its time: states of one time differ (another half-life, another log).
        """
        hit = self._stats.get(id(world))
        if hit is not None and hit[0] is world:
            return hit[1]
        if len(self._stats) > 8:
            self._stats.clear()
        stats = TitleStats.compute(world, self.catalog)
        self._stats[id(world)] = (world, stats)
        return stats


RANKER_LOG = LogThrottle(period=60.0)  # one log line a minute per ranker and kind of failure, per process


def _held_back(n: int) -> str:
    return f" (and {n:,} times since the last line; they are logged once a minute)" if n else ""


def collect_candidates(
    rankers: Sequence[Ranker], request: RankRequest, slow_seconds: float | None = None
) -> tuple[list[CandidateRow], list[str]]:
    """Every ranker's rows; a failing ranker is skipped and noted, never fails the page (logged at most once a minute per kind).

    With ``slow_seconds`` (serving: the page deadline) a ranker whose ``rows()`` takes longer is
    logged: pages are built on the event loop and the deadline covers only the Redis read, so one
    slow call holds every request of its worker. Not a page note: replay's pages must not depend
    on timing.
    """
    rows: list[CandidateRow] = []
    notes: list[str] = []
    owners: dict[str, str] = {}  # row id -> the ranker whose row has it
    instances: dict[str, int] = {}
    for r in rankers:
        instances[r.name] = instances.get(r.name, 0) + 1
        # one ranker configured twice: the second's row ids get "@2", so served logs tell the rows apart
        suffix = f"@{instances[r.name]}" if instances[r.name] > 1 else ""
        started = time.perf_counter()
        try:
            got = r.rows(request)
        except Exception as e:  # a plug-in can fail in any way; the page must still be built
            held = RANKER_LOG.admit((r.name, type(e).__name__))
            if held is not None:
                log.exception("ranker %s failed%s", r.name, _held_back(held))
            notes.append(f"ranker {r.name} failed: {type(e).__name__}")
            continue
        finally:
            took = time.perf_counter() - started
            if slow_seconds is not None and took > slow_seconds and (held := RANKER_LOG.admit((r.name, "slow"))) is not None:
                log.warning(
                    "ranker %s took %.0f ms for one page (the deadline is %.0f ms, and it holds every request on this worker)%s",
                    r.name, took * 1000, slow_seconds * 1000, _held_back(held),
                )
        if not isinstance(got, (list, tuple)):  # None, or one row not in a list: nothing to iterate
            held = RANKER_LOG.admit((r.name, "not a list"))
            if held is not None:
                log.error("ranker %s: rows() returned a %s, not a list of CandidateRow%s", r.name, type(got).__name__, _held_back(held))
            notes.append(f"ranker {r.name} failed: rows() returned a {type(got).__name__}, not a list")
            continue
        for row in got:
            problem = row_problem(row)
            if problem is None and suffix:
                row = dataclasses.replace(row, row_id=row.row_id + suffix)
                problem = row_id_problem(row.row_id)  # "@2" can take a long id past the events API's 128 characters
            if problem is None and row.row_id in owners:
                owner = owners[row.row_id]
                problem = f"{row.row_id}: row_id already used by " + (f"ranker {owner}'s row (start it with the ranker's name)" if owner != r.name else "another of its rows")
            if problem is None:
                rows.append(row)
                owners[row.row_id] = r.name
            else:
                held = RANKER_LOG.admit((r.name, "row dropped"))
                if held is not None:
                    log.error("ranker %s: row dropped: %s%s", r.name, problem, _held_back(held))
                notes.append(f"ranker {r.name}: row dropped: {problem}")
    return rows, notes


def ranker_problem(note: str) -> tuple[str, str] | None:
    """(ranker, "failed" or "rows dropped") of a candidate note from ``collect_candidates``, else None."""
    m = re.match(r"ranker ([^\s:]+)(?: failed|: row dropped)", note)
    if m is None:
        return None
    return m.group(1), "failed" if note[m.end(1) :].startswith(" failed") else "rows dropped"


def ranker_problem_counts(found: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Ranker -> {"failed": n, "rows dropped": n} from (ranker, kind) pairs, each pair given once per request."""
    out: dict[str, dict[str, int]] = {}
    for ranker, kind in sorted(found):
        out.setdefault(ranker, {"failed": 0, "rows dropped": 0})[kind] += 1
    return out


def user_signals(user: UserState, models: PageModels, request: RequestContext) -> tuple[UserSignals, np.ndarray | None]:
    """Per-request features shared by all rows, and the raw personalised scores (None if cold and silent)."""
    raw: np.ndarray | None = None
    personal = models.personal
    if personal is not None and len(user.known_titles):
        raw = np.asarray(personal.score_titles(user), dtype=np.float32)  # type: ignore[attr-defined]
    elif personal is not None and user.favourite_genres and hasattr(personal, "stated_genre_scores"):
        stated = personal.stated_genre_scores(user, models.catalog)  # a new user's taste is what they said
        raw = None if stated is None else np.asarray(stated, dtype=np.float32)
    days = (request.now - int(user.ts[-1])) / 86_400 if len(user) else float("nan")
    device = DEVICES.index(request.device) if request.device in DEVICES else -1
    hour = request.hour if request.hour is not None else -1
    value = UserSignals.rank_value(raw, user.known_titles)
    return UserSignals(UserSignals.standardise(raw), value, len(user), days, device, hour), raw


def single_list_rows(
    user: UserState, world: GlobalState, raw: np.ndarray | None, catalog: Catalog, rows: int, cols: int, allowed: np.ndarray | None = None
) -> list[CandidateRow]:
    """The personalised top R x C unseen titles cut into rows (popularity for cold users), of the ``allowed`` titles if given."""
    scores = (raw if raw is not None else world.counts.astype(np.float32)).astype(np.float64, copy=True)
    scores[user.known_titles] = -np.inf
    scores[world.counts == 0] = -np.inf  # not shown before anyone has watched it (CandidateMatrix.build)
    if allowed is not None:  # the maturity rules: chosen among the titles the page may show, not dropped after
        scores[~allowed] = -np.inf
    n = min(rows * cols, int(np.isfinite(scores).sum()))
    if n == 0:
        return []
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.lexsort((top, -scores[top]))]
    return [
        CandidateRow(
            row_id=f"single_list:{i}",
            ranker="personalized",
            display_title="Top picks for you" if i == 0 else f"More top picks ({i + 1})",
            title_ids=catalog.title_ids[top[i * cols : (i + 1) * cols]],
            scores=scores[top[i * cols : (i + 1) * cols]].astype(np.float32),
            reason=RowReason(kind="single_list"),
        )
        for i in range((n + cols - 1) // cols)
    ]


def page_id_for(user_id: int, now: int, policy: str, version: str, nonce: str = "") -> str:
    return hashlib.sha1(f"{user_id}:{now}:{policy}:{version}:{nonce}".encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class PreparedRequest:
    """The per-request work every policy shares: candidate rows and user signals."""

    candidates: tuple[CandidateRow, ...]
    notes: tuple[str, ...]
    signals: UserSignals
    raw_personal: np.ndarray | None


def prepare_request(
    user: UserState, world: GlobalState, models: PageModels, request: RequestContext, slow_seconds: float | None = None
) -> PreparedRequest:
    """Run the rankers and compute the user's signals once for a request (``slow_seconds``: see ``collect_candidates``)."""
    signals, raw = user_signals(user, models, request)
    cands, notes = collect_candidates(models.rankers, RankRequest(user, world, models.catalog, request), slow_seconds)
    return PreparedRequest(tuple(cands), tuple(notes), signals, raw)


def build_page(
    user: UserState,
    world: GlobalState,
    models: PageModels,
    request: RequestContext,
    *,
    policy: str = "stage-wise",
    explain: bool = False,
    nonce: str = "",
    prepared: PreparedRequest | None = None,
    slow_seconds: float | None = None,
) -> Page:
    """Build the page for ``request`` from ``user``'s state and the ``world`` state.

    ``prepared`` lets replay share one ``prepare_request`` between the policies it
    compares; it must come from the same user, world, models and request. ``slow_seconds``
    (serving) logs a ranker slower than that.
    """
    for name in ("rows", "cols"):
        if getattr(request, name) < 1:
            raise HomepageError(f"request.{name}: {getattr(request, name)}; a page has at least one row and one column")
    spec = get_policy(policy)
    catalog = models.catalog
    prep = prepared if prepared is not None else prepare_request(user, world, models, request, slow_seconds)
    if spec.single_list:
        cands = single_list_rows(user, world, prep.raw_personal, catalog, request.rows, request.cols, models.allowed)
    else:
        cands = list(prep.candidates)
    cm = models.candidate_matrix(cands, user, world)
    scorer = spec.make_scorer(models.page_model, cm)
    rules = models.rules.content_only() if spec.single_list else models.rules
    stats = models.title_stats(world)
    placed, _ = assemble(cm, catalog, stats, prep.signals, scorer, rules, models.ranker_vocab, request.rows, request.cols, explain)
    placed = distinct_headings(placed)
    if models.artwork is not None and placed:
        placed = choose_artwork(models, user, request, placed)
    return Page(
        page_id=page_id_for(user.user_id, request.now, policy, models.version, nonce),
        user_id=user.user_id,
        rows=tuple(placed),
        policy=policy,
        model_version=models.version,
        config_hash=models.config_hash,
        notes=(*prep.notes, *unmet_rules(rules, cm, models.ranker_vocab, placed, catalog, request.rows)),
    )


def distinct_headings(placed: list[PlacedRow]) -> list[PlacedRow]:
    """No two rows of a page under one heading: a repeated title gets " (2)", " (3)" in page order.

    ("More picks for you" rows all carry the same title; the page decides their order.)
    """
    seen: dict[str, int] = {}
    used: set[str] = set()
    out = []
    for r in placed:
        n = seen[r.display_title] = seen.get(r.display_title, 0) + 1
        heading = r.display_title if n == 1 else f"{r.display_title} ({n})"
        while heading in used:  # a ranker's own heading already reads "X (2)": take the next number
            n = seen[r.display_title] = n + 1
            heading = f"{r.display_title} ({n})"
        used.add(heading)
        out.append(r if heading == r.display_title else replace(r, display_title=heading))
    return out


def choose_artwork(models: PageModels, user: UserState, request: RequestContext, placed: list[PlacedRow]) -> list[PlacedRow]:
    """Pick a variant for every title on the page in one vectorised call."""
    lengths = np.array([len(r.title_ids) for r in placed], dtype=np.int64)
    grid = np.full((len(placed), int(lengths.max())), -1, dtype=np.int64)
    grid[np.arange(grid.shape[1]) < lengths[:, None]] = models.catalog.index_of(np.concatenate([np.asarray(r.title_ids, dtype=np.int64) for r in placed]))
    choice = models.artwork.choose_for_user(user, grid, request.now)
    ids, props = choice.variant_ids.tolist(), choice.propensity.tolist()
    return [replace(r, variant_ids=tuple(ids[i][:n]), propensities=tuple(props[i][:n])) for i, (r, n) in enumerate(zip(placed, lengths.tolist()))]
