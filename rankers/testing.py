"""The public conformance suite for rankers, like scikit-learn's ``check_estimator``.

A plug-in author checks a ranker against the contract with one parametrised test::

    import pytest
    from rankers.testing import ranker_checks, check_id

    @pytest.mark.parametrize("check", ranker_checks(), ids=check_id)
    def test_contract(check):
        check(MyRanker)

Every check builds (once per process) a small synthetic world in memory: a catalog with
genres, cast, directors, years and tags; users in two regions; plays with watch progress
and ratings over two months; a cold user with no history and a user whose history holds
titles the catalog does not know. Checks fit the ranker with its default config updated by
its ``conformance_config`` class attribute (empty by default: a ranker whose defaults are
too strict for a 120-title world, say a minimum of ratings, relaxes them there) and raise
``AssertionError`` naming what broke.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from homepage.catalog import Catalog
from homepage.domain import CandidateRow, RequestContext, RowReason
from homepage.eventlog import EventLog
from homepage.state import GlobalState, UserState
from rankers.base import ROW_ID, ArtifactError, FitInput, Ranker, RankerConfig, RankRequest, StateNeed, row_problem

DAY = 86_400
T0 = 1_700_000_000
COLD_USER = 999_999
UNKNOWN_TITLES_USER = 999_998
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SPEED_BUDGET_MS = 5.0

Check = Callable[[type[Ranker]], None]


# ---------------------------------------------------------------------------- the world
@dataclass(frozen=True, eq=False)
class ConformanceWorld:
    """A fitted-on world: the log, catalog, split time, global state and users to ask about."""

    catalog: Catalog
    log: EventLog
    until: int
    world: GlobalState
    user_ids: tuple[int, ...]

    def fit_input(self) -> FitInput:
        return FitInput(log=self.log, catalog=self.catalog, until=self.until, world=self.world)

    def user(self, user_id: int) -> UserState:
        return self.log.user_state(user_id, self.until)

    def request(self, user_id: int, region: str | None = None) -> RankRequest:
        ctx = RequestContext(user_id=user_id, now=self.until, region=region)
        return RankRequest(user=self.user(user_id), world=self.world, catalog=self.catalog, context=ctx)


def synthetic_frames(n_titles: int, n_users: int, events_per_user: int, seed: int, rich: bool = True) -> tuple[pd.DataFrame, ...]:
    """(titles, variants, users, events) of a random world with taste clusters and popularity skew.

    Popularity is Zipf-like (weight ~ rank^-0.8, boosted 5x in a user's favourite genre); stars
    are a hidden per-title quality ~ N(3.5, 0.7) clipped to 1..5, plus N(0, 0.6) noise, rounded to
    the half star and clipped to 0.5..5.
    """
    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation"]
    # far above any index, with gaps: a ranker returning catalog indices instead of ids fails here (MovieLens ids
    # 1..193609 over 9,742 titles take most indices for valid ids, so those rows were served as the wrong titles)
    title_ids = 1_000_000 + np.arange(1, n_titles + 1, dtype=np.int64) * 3
    g1 = rng.integers(0, len(genres), n_titles)
    g2 = rng.integers(0, len(genres), n_titles)
    n_people = max(10, n_titles // 4)
    titles = pd.DataFrame(
        {
            "title_id": title_ids,
            "name": [f"Title {i}" for i in title_ids],
            "year": rng.integers(1960, 2026, n_titles).astype(np.int32),
            "genres": [sorted({genres[a], genres[b]}) for a, b in zip(g1, g2)],
            "cast": [[f"actor{x}" for x in rng.integers(0, n_people, 2)] for _ in range(n_titles)] if rich else [[]] * n_titles,
            "director": [[f"director{x}"] for x in rng.integers(0, n_people // 2, n_titles)] if rich else [[]] * n_titles,
            "maturity": ["PG-13"] * n_titles,
            "tags": [[f"tag{x}" for x in rng.integers(0, 30, 2)] for _ in range(n_titles)] if rich else [[]] * n_titles,
        }
    )
    variants = pd.DataFrame(
        {
            "variant_id": [f"v{t}a" for t in title_ids],
            "title_id": title_ids,
            "emphasis_genre": [genres[a] for a in g1],
            "featured_cast": [None] * n_titles,
            "tone": ["neutral"] * n_titles,
            "image_url": [""] * n_titles,
        }
    )
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    users = pd.DataFrame({"user_id": user_ids, "region": np.where(user_ids % 2 == 0, "EU", "US-9"), "created": T0})
    # each user likes one genre; popularity is Zipf-like within the catalog
    pop = 1.0 / np.arange(1, n_titles + 1) ** 0.8
    taste = rng.integers(0, len(genres), n_users)
    users_col, titles_col = [], []
    for g in range(len(genres)):  # sample each taste group at once, with replacement, then dedupe
        members = user_ids[taste == g]
        w = pop * np.where((g1 == g) | (g2 == g), 5.0, 1.0)
        picks = rng.choice(n_titles, size=(members.size, events_per_user), p=w / w.sum())
        users_col.append(np.repeat(members, events_per_user))
        titles_col.append(picks.ravel())
    u_all, t_all = np.concatenate(users_col), np.concatenate(titles_col)
    _, first = np.unique(u_all * n_titles + t_all, return_index=True)
    u_all, t_all = u_all[np.sort(first)], t_all[np.sort(first)]
    n_ev = u_all.size
    kind = rng.integers(0, 2, n_ev).astype(np.int8)  # play or rating
    ts = rng.integers(T0, T0 + 60 * DAY, n_ev)
    progress = np.where(kind == 0, rng.choice([0.1, 0.4, 0.7, 1.0], n_ev), np.nan)
    # stars scatter around a hidden per-title quality, so some titles are reliably well rated
    # (what rating-based rankers look for) and others reliably poor; drawn last, so every
    # other column is what it was when stars were uniform
    quality = np.clip(rng.normal(3.5, 0.7, n_titles), 1.0, 5.0)
    stars = np.clip(np.round((quality[t_all] + rng.normal(0.0, 0.6, n_ev)) * 2.0) / 2.0, 0.5, 5.0)
    rows = [
        pd.DataFrame(
            {
                "user_id": u_all,
                "title_id": title_ids[t_all],
                "kind": kind,
                "ts": ts,
                "progress": progress,
                "stars": np.where(kind == 1, stars, np.nan),
            }
        )
    ]
    # the user whose history holds titles unknown to the catalog (and one known one)
    unknown = np.array([10**9 + 1, 10**9 + 2, title_ids[0], 10**9 + 3], np.int64)
    rows.append(
        pd.DataFrame(
            {
                "user_id": UNKNOWN_TITLES_USER,
                "title_id": unknown,
                "kind": np.array([0, 1, 1, 0], np.int8),
                "ts": T0 + np.arange(4) * DAY,
                "progress": [0.5, np.nan, np.nan, 1.0],
                "stars": [np.nan, 5.0, 4.5, np.nan],
            }
        )
    )
    events = pd.concat(rows, ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
    return titles, variants, users, events


@cache
def small_world(seed: int = 7) -> ConformanceWorld:
    """120 titles, 40 users (plus the cold and unknown-titles users), split at day 50."""
    return _world(n_titles=120, n_users=40, events_per_user=30, seed=seed, rich=True)


@cache
def large_world(seed: int = 11) -> ConformanceWorld:
    """60,000 titles and 2,000 users: the catalog size the speed budget is stated for."""
    return _world(n_titles=60_000, n_users=2_000, events_per_user=40, seed=seed, rich=False)


@cache
def small_world_other_future(seed: int = 7) -> ConformanceWorld:
    """``small_world`` with every event after its ``until`` moved to another title and given other stars,
    and users whose first event is after ``until`` (they exist only in the future)."""
    return _world(n_titles=120, n_users=40, events_per_user=30, seed=seed, rich=True, other_future=True)


def _world(n_titles: int, n_users: int, events_per_user: int, seed: int, rich: bool, other_future: bool = False) -> ConformanceWorld:
    titles, variants, users, events = synthetic_frames(n_titles, n_users, events_per_user, seed, rich)
    if other_future:  # the same up to the split; after it, other titles, other stars and new users
        later = events["ts"].to_numpy() > T0 + 50 * DAY
        ids = titles["title_id"].to_numpy()
        pos = np.searchsorted(ids, events.loc[later, "title_id"].to_numpy()).clip(0, ids.size - 1)
        events = events.copy()
        events.loc[later, "title_id"] = ids[(pos + ids.size // 2) % ids.size]
        events.loc[later, "stars"] = np.where(events.loc[later, "stars"].notna(), 5.5 - events.loc[later, "stars"].fillna(0), np.nan)
        # 8 users who first play after the split (a model sized by every user in the log differs)
        newcomers = events[later & events["user_id"].isin(users["user_id"][:8]).to_numpy()].copy()
        newcomers["user_id"] += int(users["user_id"].max())
        events = pd.concat([events, newcomers], ignore_index=True).sort_values(["ts", "user_id"], kind="stable", ignore_index=True)
        joined = users[:8].copy()
        joined["user_id"] += int(users["user_id"].max())
        users = pd.concat([users, joined], ignore_index=True)
    catalog = Catalog.from_frames(titles, variants)
    log = EventLog.from_frame(events, catalog, users)
    until = T0 + 50 * DAY
    ids = tuple(int(u) for u in users["user_id"][:12]) + (COLD_USER, UNKNOWN_TITLES_USER)
    return ConformanceWorld(catalog, log, until, log.global_state(until, 7 * DAY), ids)


# ---------------------------------------------------------------------------- helpers
def conformance_instance(cls: type[Ranker]) -> Ranker:
    """A fresh, unfitted ranker with its default config updated by ``cls.conformance_config``."""
    return cls(dict(cls.conformance_config))


def fitted(cls: type[Ranker], world: ConformanceWorld | None = None) -> Ranker:
    """A fresh ranker with its conformance config, fitted on ``world`` (the small world by default)."""
    world = world or small_world()
    ranker = conformance_instance(cls)
    out = ranker.fit(world.fit_input())
    assert out is ranker, f"{cls.__name__}.fit must return self"
    return ranker


def all_rows(ranker: Ranker, world: ConformanceWorld) -> list[list[CandidateRow]]:
    """Rows for every test user, and for the first user with a region override."""
    out = [ranker.rows(world.request(u)) for u in world.user_ids]
    out.append(ranker.rows(world.request(world.user_ids[0], region="EU")))
    return out


def row_key(rows: list[CandidateRow]) -> list[tuple]:
    """A comparable rendering of rows."""
    return [
        (r.row_id, r.ranker, r.display_title, r.reason, r.title_ids.tolist(), np.asarray(r.scores).tolist(), r.row_score)
        for r in rows
    ]


def validate_rows(rows: object, ranker: Ranker, catalog: Catalog) -> None:
    """Assert that ``rows`` obey the row contract for this ranker and catalog."""
    name = type(ranker).__name__
    cfg = ranker.config
    assert isinstance(rows, (list, tuple)), f"{name}.rows must return a list (or tuple), got {type(rows).__name__}"
    assert len(rows) <= cfg.max_rows, f"{name}: {len(rows)} rows, max_rows is {cfg.max_rows}"
    ids = [r.row_id for r in rows if isinstance(r, CandidateRow)]
    assert len(set(ids)) == len(ids), f"{name}: repeated row ids {ids}"
    for r in rows:
        assert isinstance(r, CandidateRow), f"{name}: a row is {type(r).__name__}, not CandidateRow"
        where = f"{name} row {r.row_id!r}"
        assert isinstance(r.row_id, str) and ROW_ID.match(r.row_id), f"{where}: row id must match {ROW_ID.pattern}"
        assert r.ranker == ranker.name, f"{where}: ranker field {r.ranker!r}, expected {ranker.name!r}"
        assert isinstance(r.display_title, str) and r.display_title.strip(), f"{where}: empty display title"
        assert isinstance(r.reason, RowReason) and r.reason.kind, f"{where}: reason missing"
        problem = row_problem(r)  # the page builder's own check: a row it would drop fails here
        assert problem is None, f"{where}: the page builder would drop this row: {problem}"
        t, s = np.asarray(r.title_ids), np.asarray(r.scores)
        assert t.ndim == 1 and t.dtype.kind in "iu", f"{where}: title_ids must be a 1-d integer array"
        assert s.shape == t.shape, f"{where}: {s.shape[0]} scores for {t.shape[0]} titles"
        assert 1 <= t.size <= cfg.row_length, f"{where}: {t.size} titles, must be 1..row_length={cfg.row_length}"
        assert np.unique(t).size == t.size, f"{where}: repeated titles"
        assert np.all(catalog.index_of(t) >= 0), f"{where}: titles not in the catalog {t[catalog.index_of(t) < 0][:5]}" + (
            " (catalog indices? a row holds title ids: catalog.title_ids[idx])" if np.all(t < len(catalog)) else ""
        )
        assert np.all(np.isfinite(s)), f"{where}: non-finite scores"
        assert np.all(np.diff(s.astype(np.float64)) <= 1e-9), f"{where}: scores must be non-increasing"
        assert np.isfinite(r.row_score), f"{where}: row_score must be finite"


def _snapshot(obj: object) -> dict[str, object]:
    """Copies of every array (and dict of arrays) field of a dataclass."""
    snap: dict[str, object] = {}
    for f in fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            snap[f.name] = v.copy()
        elif isinstance(v, dict):
            snap[f.name] = {k: (a.copy() if isinstance(a, np.ndarray) else a) for k, a in v.items()}
        else:
            snap[f.name] = v
    return snap


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# ---------------------------------------------------------------------------- checks
def check_name_and_config(cls: type[Ranker]) -> None:
    """A valid registered-style name; a frozen pydantic config with defaults that rejects unknown keys."""
    assert isinstance(getattr(cls, "name", None), str) and NAME.match(cls.name), f"{cls.__name__}.name must match {NAME.pattern}"
    assert issubclass(cls.Config, RankerConfig), f"{cls.__name__}.Config must subclass RankerConfig"
    r = cls()
    assert isinstance(r.config, cls.Config), f"{cls.__name__}() must hold a {cls.Config.__name__}"
    assert cls(r.config.model_dump()).config == r.config, f"{cls.__name__}: config must round-trip through a dict"
    assert r.config.config_hash() == cls().config.config_hash(), f"{cls.__name__}: config hash not stable"
    try:
        cls({"no_such_option_xyz": 1})
    except Exception:
        pass
    else:
        raise AssertionError(f"{cls.__name__}: unknown config keys must be rejected")
    try:
        r.config.row_length = 3  # type: ignore[misc]
    except Exception:
        pass
    else:
        raise AssertionError(f"{cls.__name__}: config must be frozen")
    overrides = getattr(cls, "conformance_config", None)
    assert isinstance(overrides, dict), f"{cls.__name__}.conformance_config must be a dict, got {type(overrides).__name__}"
    try:
        conformance_instance(cls)
    except Exception as e:
        raise AssertionError(f"{cls.__name__}.conformance_config {overrides!r} is not a valid config: {e}") from e


def check_needs(cls: type[Ranker]) -> None:
    """``needs`` is a frozenset of ``StateNeed`` members."""
    assert isinstance(cls.needs, frozenset), f"{cls.__name__}.needs must be a frozenset"
    bad = [n for n in cls.needs if not isinstance(n, StateNeed)]
    assert not bad, f"{cls.__name__}.needs holds non-StateNeed values {bad}"


def check_fit_returns_self(cls: type[Ranker]) -> None:
    """``fit`` returns self and records the training window."""
    world = small_world()
    r = fitted(cls, world)
    assert r.train_window_ is not None and r.train_window_[1] == world.until, f"{cls.__name__}: fit must record train_window_"


def check_valid_rows(cls: type[Ranker]) -> None:
    """Rows for every kind of user obey the row contract; some user gets at least one row."""
    world = small_world()
    r = fitted(cls, world)
    rows = all_rows(r, world)
    for user_rows in rows:
        validate_rows(user_rows, r, world.catalog)
    assert any(rows), f"{cls.__name__}: no rows for any of {len(rows)} users of the conformance world"


def check_cold_user(cls: type[Ranker]) -> None:
    """A user with no history (and one unknown to the log) gets valid rows, possibly none."""
    world = small_world()
    r = fitted(cls, world)
    cold = RankRequest(
        user=UserState.empty(COLD_USER, world.until, region="US-9"),
        world=world.world,
        catalog=world.catalog,
        context=RequestContext(user_id=COLD_USER, now=world.until),
    )
    validate_rows(r.rows(cold), r, world.catalog)
    validate_rows(r.rows(world.request(COLD_USER)), r, world.catalog)


def check_unknown_titles(cls: type[Ranker]) -> None:
    """History with titles the catalog does not know is tolerated; they are never recommended."""
    world = small_world()
    r = fitted(cls, world)
    req = world.request(UNKNOWN_TITLES_USER)
    assert np.any(req.user.title_idx < 0), "conformance world: the unknown-titles user lost its unknown titles"
    validate_rows(r.rows(req), r, world.catalog)


def check_deterministic(cls: type[Ranker]) -> None:
    """Same rows when asked twice, and from a second fit on the same data."""
    world = small_world()
    a, b = fitted(cls, world), fitted(cls, world)
    first = [row_key(x) for x in all_rows(a, world)]
    assert first == [row_key(x) for x in all_rows(a, world)], f"{cls.__name__}: rows differ when asked twice"
    assert first == [row_key(x) for x in all_rows(b, world)], f"{cls.__name__}: rows differ between two fits on the same data"


def check_same_in_another_process(cls: type[Ranker]) -> None:
    """Same rows from a fit in a fresh process with another string-hash seed.

    Serving workers, replay workers and the trainer are separate processes, each with its own
    ``PYTHONHASHSEED``: a ranker that orders by ``hash()`` of a string or by iterating a set of
    strings serves a different page from each worker and measures yet another offline. The class
    is imported in the child by its module path, so it must be defined at module level.
    """
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise AssertionError(
            f"{cls.__qualname__}: the cross-process check imports the class by its module path; define it at module level of an importable module"
        )
    world = small_world()
    here = {"world": world_digest(world), "rows": json.loads(json.dumps([row_key(x) for x in all_rows(fitted(cls, world), world)], default=repr))}
    seed = os.environ.get("PYTHONHASHSEED", "")
    other = str((int(seed) + 1) % 4_294_967_295) if seed.isdigit() else "1"
    env = {**os.environ, "PYTHONHASHSEED": other, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = f"import rankers.testing as t; t._print_rows_of({cls.__module__!r}, {cls.__qualname__!r})"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        raise AssertionError(f"{cls.__name__}: the child process (PYTHONHASHSEED={other}) failed:\n{tail}")
    there = json.loads(run.stdout.strip().splitlines()[-1])
    assert there["world"] == here["world"], "conformance world differs between processes: a bug in rankers.testing, not in the ranker"
    assert there["rows"] == here["rows"], (
        f"{cls.__name__}: rows differ in a process with another PYTHONHASHSEED ({other}): does it order by hash() "
        "of a string, or iterate a set or frozenset of strings? Sort by a stable key instead"
    )


def world_digest(world: ConformanceWorld) -> str:
    """A digest of the conformance world's arrays, to tell a ranker's nondeterminism from the world's."""
    h = hashlib.sha256()
    for a in (world.catalog.title_ids, world.catalog.genre_matrix, world.log.t_ts, world.log.u_title_ids, world.world.counts):
        h.update(np.ascontiguousarray(a).tobytes())
    c = world.catalog
    h.update(json.dumps([c.names, c.genres, c.cast, c.director, c.tags]).encode())
    return h.hexdigest()


def _print_rows_of(module: str, qualname: str) -> None:
    """The child side of ``check_same_in_another_process``: the world's digest and the rows, as one JSON line."""
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, type) and issubclass(obj, Ranker)
    world = small_world()
    print(json.dumps({"world": world_digest(world), "rows": [row_key(x) for x in all_rows(fitted(obj, world), world)]}, default=repr))


def check_learns_only_up_to_until(cls: type[Ranker]) -> None:
    """``fit`` learns from events up to ``data.until`` only: changing what was played after it changes nothing learned.

    A fit that reads the whole log (``log.interactions()`` without ``until``) looks better
    offline than it can serve: it has seen the very plays it is scored against.
    """
    a, b = fitted(cls, small_world()).arrays(), fitted(cls, small_world_other_future()).arrays()
    assert sorted(a) == sorted(b), f"{cls.__name__}.arrays() keys depend on events after FitInput.until"
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        same = x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
        assert same, (
            f"{cls.__name__}.arrays()[{k!r}] changes when only events after FitInput.until change: "
            "fit must learn from events up to data.until (log.interactions(data.until), data.world)"
        )


def check_save_load_roundtrip(cls: type[Ranker]) -> None:
    """An artifact saved and loaded (manifest.json + arrays.npz, no pickle) gives the same rows."""
    world = small_world()
    r = fitted(cls, world)
    with tempfile.TemporaryDirectory() as tmp:
        r.save(Path(tmp) / "artifact")
        assert (Path(tmp) / "artifact" / "manifest.json").is_file(), f"{cls.__name__}: save wrote no manifest.json"
        loaded = cls.load(Path(tmp) / "artifact")
    assert type(loaded) is cls, f"{cls.__name__}.load returned {type(loaded).__name__}"
    assert loaded.config == r.config, f"{cls.__name__}: config changed through save/load"
    before = [row_key(x) for x in all_rows(r, world)]
    after = [row_key(x) for x in all_rows(loaded, world)]
    assert before == after, f"{cls.__name__}: rows differ after a save/load round trip"


def check_refuses_foreign_artifact(cls: type[Ranker]) -> None:
    """``load`` refuses an artifact whose manifest names another ranker."""
    r = fitted(cls)
    with tempfile.TemporaryDirectory() as tmp:
        d = r.save(Path(tmp) / "artifact")
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["ranker"] = cls.name + "_other"
        (d / "manifest.json").write_text(json.dumps(manifest))
        try:
            cls.load(d)
        except ArtifactError:
            return
        raise AssertionError(f"{cls.__name__}.load accepted an artifact of ranker {manifest['ranker']!r}")


def check_no_mutation(cls: type[Ranker]) -> None:
    """Neither fit nor rows changes the log, catalog, global state or user state."""
    world = small_world.__wrapped__()  # a fresh world: the shared one may have been changed by an earlier check already
    before = {"log": _snapshot(world.log), "catalog": _snapshot(world.catalog), "world": _snapshot(world.world)}
    r = fitted(cls, world)
    users = [world.user(u) for u in world.user_ids]
    user_before = [_snapshot(u) for u in users]
    for u in users:
        r.rows(RankRequest(user=u, world=world.world, catalog=world.catalog, context=RequestContext(u.user_id, world.until)))
    after = {"log": _snapshot(world.log), "catalog": _snapshot(world.catalog), "world": _snapshot(world.world)}
    for part in before:
        for k in before[part]:
            assert _same(before[part][k], after[part][k]), f"{cls.__name__} mutated {part}.{k}"
    for u, snap in zip(users, user_before):
        now = _snapshot(u)
        for k in snap:
            assert _same(snap[k], now[k]), f"{cls.__name__} mutated UserState.{k} of user {u.user_id}"


def check_freed_without_the_cycle_collector(cls: type[Ranker]) -> None:
    """A loaded ranker, used and then dropped, is freed by reference counting alone.

    The service moves loaded models out of the cyclic garbage collector's reach (a full
    collection over them paused requests), so a reference cycle in a ranker, such as a bound
    method of the ranker kept on one of its own attributes, would stay in memory for good at
    each new version. Pass such a method where it is needed instead of keeping it.
    """
    world = small_world()
    r = fitted(cls, world)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = cls.load(r.save(Path(tmp) / "artifact"))
    all_rows(loaded, world)  # the caches a request fills
    ref = weakref.ref(loaded)
    was_enabled = gc.isenabled()
    gc.disable()  # an automatic collection would free a cycle and hide it
    try:
        del loaded
        assert ref() is None, (
            f"{cls.__name__}: a loaded ranker is not freed when dropped (a reference cycle, e.g. a bound method of "
            "the ranker kept on one of its attributes: pass it where it is called instead)"
        )
    finally:
        if was_enabled:
            gc.enable()


def check_speed(cls: type[Ranker]) -> None:
    """Median ``rows()`` cost on a 60k-title catalog is under the budget (a contract check, not a benchmark).

    It counts the process's CPU time, not wall time: on a shared machine (CI, a laptop running
    other work) wall time measures the neighbours as much as the ranker. BLAS runs one thread, as
    in a serving worker: a second one spin-waiting on a busy machine counted as the ranker's CPU.
    """
    world = large_world()
    r = fitted(cls, world)
    reqs = [world.request(u) for u in world.user_ids]
    for q in reqs:  # warm up caches and lazy properties, as a serving process would be
        r.rows(q)
    times = []
    with threadpool_limits(1):
        for _ in range(5):
            for q in reqs:
                t = time.process_time()
                r.rows(q)
                times.append((time.process_time() - t) * 1000.0)
    median = float(np.median(times))
    assert median < SPEED_BUDGET_MS, f"{cls.__name__}: median rows() {median:.2f} ms CPU on 60k titles, budget {SPEED_BUDGET_MS} ms"


def ranker_checks(include_speed: bool = True) -> list[Check]:
    """Every conformance check, to parametrise a test over; each takes the ranker class."""
    checks: list[Check] = [
        check_name_and_config,
        check_needs,
        check_fit_returns_self,
        check_valid_rows,
        check_cold_user,
        check_unknown_titles,
        check_deterministic,
        check_same_in_another_process,
        check_learns_only_up_to_until,
        check_save_load_roundtrip,
        check_refuses_foreign_artifact,
        check_no_mutation,
        check_freed_without_the_cycle_collector,
    ]
    if include_speed:
        checks.append(check_speed)
    return checks


def check_id(check: Check) -> str:
    """A readable pytest id for a check."""
    return getattr(check, "__name__", repr(check)).removeprefix("check_")


def check_ranker(cls: type[Ranker], include_speed: bool = True) -> None:
    """Run every check on ``cls``; the first failure raises."""
    for check in ranker_checks(include_speed):
        check(cls)
