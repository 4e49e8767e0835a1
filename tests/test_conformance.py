"""Every registered ranker (built-in, or plug-in through the entry-point group) passes the public suite."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import Field

from homepage.domain import CandidateRow, RowReason
from rankers import registry
from rankers.base import Ranker, RankerConfig, StateNeed
from rankers.registry import (
    GROUP,
    RankerNotFound,
    load_entry_point,
    ranker_class,
    registered,
)
from rankers.testing import check_id, ranker_checks

NAMES = sorted(registered())


@pytest.mark.parametrize("check", ranker_checks(), ids=check_id)
@pytest.mark.parametrize("name", NAMES)
def test_registered_ranker_conforms(name: str, check) -> None:
    check(ranker_class(name))


def test_builtins_are_registered() -> None:
    for name in ("top_n", "trending", "continue_watching", "video_to_video"):
        assert ranker_class(name).name == name


def test_example_plugin_is_registered_through_its_entry_point() -> None:
    """``pip install -e examples/new_releases_ranker`` registers it; the suite above then covers it."""
    eps = registered()
    assert "new_releases" in eps, f"install the example: pip install -e examples/new_releases_ranker (group {GROUP})"
    assert eps["new_releases"].value == "new_releases_ranker:NewReleasesRanker"
    cls = ranker_class("new_releases")
    assert cls.__module__ == "new_releases_ranker"


def test_suite_catches_a_broken_ranker() -> None:
    """The suite is not vacuous: a ranker returning unsorted scores and repeated titles fails."""
    import numpy as np

    from homepage.domain import CandidateRow, RowReason
    from rankers.base import Ranker
    from rankers.testing import check_valid_rows

    class Broken(Ranker):
        name = "broken"

        def rows(self, request):  # type: ignore[no-untyped-def]
            ids = request.catalog.title_ids[[0, 1, 1]]
            return [CandidateRow("broken", "broken", "Broken", ids, np.array([1.0, 2.0, 0.5], np.float32), RowReason("x"))]

    with pytest.raises(AssertionError, match="appears twice"):
        check_valid_rows(Broken)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("int_scores", "scores must be a float numpy array"),
        ("list_ids", "title_ids must be a 1-D integer numpy array, not a list"),
        ("float_ids", "title_ids must be a 1-D integer numpy array, not a 1-D float64 array"),
        ("nan_row_score", "row_score must be a finite number"),
        ("inf_score", "NaN or infinite score"),
        ("inf_row_score", "row_score must be a finite number, not inf"),
    ],
)
def test_suite_fails_rows_the_page_builder_would_drop(mistake: str, message: str) -> None:
    """Integer scores, Python lists, a NaN row score: the page builder drops such rows, so the contract check fails them."""
    import numpy as np

    from homepage.domain import CandidateRow, RowReason
    from rankers.base import Ranker
    from rankers.testing import check_valid_rows

    class Sloppy(Ranker):
        name = "sloppy"

        def rows(self, request):  # type: ignore[no-untyped-def]
            ids = request.catalog.title_ids[:3]
            scores = np.array([3.0, 2.0, 1.0], np.float32)
            if mistake == "int_scores":
                scores = np.array([3, 2, 1])
            if mistake == "list_ids":
                ids = ids.tolist()
            if mistake == "float_ids":
                ids = ids.astype(np.float64)
            if mistake == "inf_score":
                scores = np.array([np.inf, 2.0, 1.0], np.float32)
            row_score = {"nan_row_score": float("nan"), "inf_row_score": float("inf")}.get(mistake, 0.0)
            return [CandidateRow("sloppy", "sloppy", "Sloppy", ids, scores, RowReason("x"), row_score=row_score)]

    with pytest.raises(AssertionError, match=f"would drop this row: sloppy: {message}"):
        check_valid_rows(Sloppy)


def test_suite_names_catalog_indices_returned_as_title_ids() -> None:
    """MovieLens ids (1..193609 over 9,742 titles) make most catalog indices valid ids, so a ranker returning indices
    served the wrong titles with no error anywhere; the conformance world's ids are far from its indices."""
    import numpy as np

    from homepage.domain import CandidateRow, RowReason
    from rankers.base import Ranker
    from rankers.testing import check_valid_rows

    class Indices(Ranker):
        name = "indices"

        def rows(self, request):  # type: ignore[no-untyped-def]
            idx = np.array([3, 6, 9], np.int64)  # indices that happened to be ids in a world of ids 3, 6, 9, ...
            return [CandidateRow("indices", "indices", "Indices", idx, np.array([3.0, 2.0, 1.0], np.float32), RowReason("x"))]

    with pytest.raises(AssertionError, match=r"titles not in the catalog \[3 6 9\] \(catalog indices\? a row holds title ids: catalog.title_ids\[idx\]\)"):
        check_valid_rows(Indices)


def test_rows_as_a_tuple_and_unsigned_ids_pass_as_the_page_builder_takes_them() -> None:
    """The page builder takes a tuple of rows and uint64 ids; the contract check said 'must return a list' and
    'must be a 1-d integer array' for them."""
    import numpy as np

    from homepage.domain import CandidateRow, RowReason
    from rankers.base import Ranker
    from rankers.testing import check_valid_rows

    class Unsigned(Ranker):
        name = "unsigned"

        def rows(self, request):  # type: ignore[no-untyped-def]
            ids = request.catalog.title_ids[:3].astype(np.uint64)
            return (CandidateRow("unsigned", "unsigned", "Unsigned", ids, np.array([3.0, 2.0, 1.0], np.float32), RowReason("x")),)

    check_valid_rows(Unsigned)


def test_an_entry_point_named_unlike_its_class_says_which_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import rankers.registry as registry
    from rankers.registry import RankerNotFound, ranker_class

    ep = EntryPoint(name="highly_rated", value="rankers.top_n:TopNRanker", group=registry.GROUP)
    monkeypatch.setattr(registry, "registered", lambda: {"highly_rated": ep})
    with pytest.raises(RankerNotFound, match=r"declares name 'top_n': the entry-point name and the class's `name` must be equal \(rename the entry point in pyproject.toml, or set name = 'highly_rated'\)"):
        ranker_class("highly_rated")


def test_an_artifact_numpy_would_pickle_is_refused_at_save(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """None or ragged lists in ``arrays()`` became pickled object arrays that no bundle load accepts: refused when saved, by key."""
    from rankers.base import ArtifactError

    class Ragged(_PopularAbove):
        name = "ragged"

        def arrays(self):  # type: ignore[no-untyped-def]
            return {**super().arrays(), "lists": np.array([[1, 2], [3]], dtype=object)}

    from rankers.testing import fitted

    with pytest.raises(ArtifactError, match=r"ragged.arrays\(\)\['lists'\] is not a plain numpy array"):
        fitted(Ragged).save(tmp_path / "r")
    assert not (tmp_path / "r" / "arrays.npz").exists()


def test_suite_catches_a_ranker_that_mutates_its_inputs_even_after_other_checks() -> None:
    """The no-mutation check builds its own world: earlier checks sharing the cached one cannot hide a mutation."""
    from rankers.testing import check_no_mutation, check_valid_rows, small_world

    class Mutating(_PopularAbove):
        name = "mutating"

        def rows(self, request):  # type: ignore[no-untyped-def]
            g = request.catalog.genre_matrix
            g.setflags(write=True)  # read-only, but a determined plug-in can still write
            g[0] = True  # idempotent: once the shared world has it, no later snapshot sees a change
            return super().rows(request)

    shared = small_world().catalog.genre_matrix
    saved = shared[0].copy()
    assert not saved.all()
    try:
        check_valid_rows(Mutating)  # changes the shared world before the no-mutation check runs
        with pytest.raises(AssertionError, match="mutated catalog.genre_matrix"):
            check_no_mutation(Mutating)
    finally:
        shared.setflags(write=True)
        shared[0] = saved  # the shared world as the other tests expect it
        shared.setflags(write=False)


class _PopularAboveConfig(RankerConfig):
    min_count: int = Field(default=10**6, ge=1, description="plays and ratings a title needs")


class _PopularAbove(Ranker):
    """One row of titles with at least ``min_count`` interactions: none with the defaults on a small world."""

    name = "popular_above"
    Config = _PopularAboveConfig
    needs = frozenset({StateNeed.POPULARITY})
    conformance_config: ClassVar[dict[str, Any]] = {"min_count": 3}

    def fit(self, data):  # type: ignore[no-untyped-def]
        super().fit(data)
        counts = data.world.counts
        keep = np.flatnonzero(counts >= self.config.min_count)
        order = keep[np.lexsort((keep, -counts[keep]))][: self.config.row_length]
        self.order_, self.scores_ = order.astype(np.int64), counts[order].astype(np.float32)
        return self

    def arrays(self):  # type: ignore[no-untyped-def]
        return {"order": self.order_, "scores": self.scores_}

    def restore(self, arrays):  # type: ignore[no-untyped-def]
        self.order_, self.scores_ = arrays["order"], arrays["scores"]

    def rows(self, request):  # type: ignore[no-untyped-def]
        keep = self.order_ < len(request.catalog)
        if not keep.any():
            return []
        ids = request.catalog.title_ids[self.order_[keep]].astype(np.int64)
        return [CandidateRow("popular_above", self.name, "Popular", ids, self.scores_[keep], RowReason("top_n"), 1.0)]


class _PopularAboveNoOverride(_PopularAbove):
    conformance_config: ClassVar[dict[str, Any]] = {}


class _HashOrdered(Ranker):
    """One row of the titles in the order of their names' ``hash()``: a different row in each process."""

    name = "hash_ordered"

    def rows(self, request):  # type: ignore[no-untyped-def]
        cat = request.catalog
        order = np.array(sorted(range(len(cat)), key=lambda i: hash(cat.names[i]))[: self.config.row_length], np.int64)
        scores = np.linspace(1.0, 0.5, order.size).astype(np.float32)
        return [CandidateRow("hash_ordered", "hash_ordered", "By hash", cat.title_ids[order], scores, RowReason("hash"))]


def test_suite_catches_rows_that_depend_on_the_hash_seed() -> None:
    """Serving and replay workers each have their own string-hash seed; the check runs a second process."""
    from rankers.testing import check_deterministic, check_same_in_another_process

    check_deterministic(_HashOrdered)  # the same in one process ...
    with pytest.raises(AssertionError, match="another PYTHONHASHSEED"):
        check_same_in_another_process(_HashOrdered)  # ... not across processes


def test_cross_process_check_names_a_class_it_cannot_import() -> None:
    from rankers.testing import check_same_in_another_process

    class Local(_HashOrdered):
        name = "local"

    with pytest.raises(AssertionError, match="define it at module level"):
        check_same_in_another_process(Local)


@pytest.mark.parametrize("check", ranker_checks(), ids=check_id)
def test_conformance_config_is_what_the_checks_fit_with(check) -> None:  # type: ignore[no-untyped-def]
    """A ranker whose defaults give no rows on the conformance world passes through its conformance_config."""
    check(_PopularAbove)


def test_without_conformance_config_the_strict_defaults_fail() -> None:
    from rankers.testing import check_valid_rows, fitted, small_world

    assert _PopularAbove().config.min_count == 10**6  # the defaults are untouched ...
    assert fitted(_PopularAbove).config.min_count == 3  # ... the checks fit with the overrides
    with pytest.raises(AssertionError, match="no rows for any of"):
        check_valid_rows(_PopularAboveNoOverride)
    assert not any(fitted(_PopularAboveNoOverride).rows(small_world().request(u)) for u in small_world().user_ids)


def test_invalid_conformance_config_is_reported() -> None:
    from rankers.testing import check_name_and_config

    class Typo(_PopularAbove):
        conformance_config: ClassVar[dict[str, Any]] = {"min_cuont": 3}

    with pytest.raises(AssertionError, match="conformance_config .* is not a valid config"):
        check_name_and_config(Typo)


def test_conformance_world_has_reliably_well_rated_titles() -> None:
    """Stars follow a hidden per-title quality: some titles have 5+ ratings averaging 4+ stars, some 5+ under 3."""
    from rankers.testing import small_world

    w = small_world().world
    rc, rs = w.rating_count.astype(np.float64), w.rating_sum.astype(np.float64)
    mean = np.divide(rs, rc, out=np.zeros_like(rs), where=rc > 0)
    assert np.sum((rc >= 5) & (mean >= 4.0)) >= 3
    assert np.sum((rc >= 5) & (mean < 3.0)) >= 3


# ------------------------------------------------------------------------------ registry errors
def test_missing_attribute_names_the_module_file_and_the_entry_point() -> None:
    import json

    ep = EntryPoint(name="ghost", value="json:NoSuchClass", group=GROUP)
    with pytest.raises(RankerNotFound) as e:
        load_entry_point(ep)
    msg = str(e.value)
    assert "'ghost'" in msg and "NoSuchClass" in msg and repr(json.__file__) in msg
    # a regular module that imports is not shadowed: the entry point names the wrong thing
    assert "check the entry point's value" in msg and "shadowed" not in msg


def test_shadowing_namespace_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual cause: a folder named like the package (no __init__.py) in the current directory."""
    (tmp_path / "shadowed_ranker_pkg_xyz").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "registered", lambda: {"shadowed": EntryPoint("shadowed", "shadowed_ranker_pkg_xyz:R", GROUP)})
    try:
        with pytest.raises(RankerNotFound) as e:
            ranker_class("shadowed")
    finally:
        sys.modules.pop("shadowed_ranker_pkg_xyz", None)
    msg = str(e.value)
    assert str(tmp_path / "shadowed_ranker_pkg_xyz") in msg and "namespace package" in msg
    assert "directory named like the package" in msg


def test_module_failing_to_import_names_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_ranker_mod_xyz.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(RankerNotFound) as e:
            load_entry_point(EntryPoint("broken", "broken_ranker_mod_xyz:R", GROUP))
        with pytest.raises(RankerNotFound, match="failed to import module 'no_such_module_xyz'"):
            load_entry_point(EntryPoint("absent", "no_such_module_xyz:R", GROUP))
    finally:
        sys.modules.pop("broken_ranker_mod_xyz", None)
    msg = str(e.value)
    assert "failed to import" in msg and "boom at import" in msg
    assert str(tmp_path / "broken_ranker_mod_xyz.py") in msg


def test_shared_request_inputs_are_read_only() -> None:
    """Catalog and world arrays are shared by every request: a ranker writing into them gets an error, not a changed page."""
    from rankers.testing import small_world

    w = small_world()
    for a in (w.catalog.title_ids, w.catalog.years, w.catalog.genre_matrix, w.world.counts, w.world.decayed, w.world.rating_sum):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = a[0]
    with pytest.raises(TypeError):
        w.world.region_counts["nowhere"] = w.world.counts  # type: ignore[index]
    for counts in w.world.region_counts.values():
        assert not counts.flags.writeable


class _Leaky(_PopularAbove):
    """Counts every interaction in the log, including those after ``until``: the mistake the check is for."""

    name = "leaky"

    def fit(self, data):  # type: ignore[no-untyped-def]
        super().fit(data)
        _, titles, _, _ = data.log.interactions()  # no ``until``: the held-out future leaks in
        counts = np.bincount(titles, minlength=len(data.catalog))
        order = np.argsort(-counts, kind="stable")[: self.config.row_length]
        self.order_, self.scores_ = order.astype(np.int64), counts[order].astype(np.float32)
        return self


def test_suite_catches_a_ranker_that_learns_from_after_until() -> None:
    from rankers.testing import check_learns_only_up_to_until, check_valid_rows

    check_valid_rows(_Leaky)  # its rows are valid: only the leak is wrong
    with pytest.raises(AssertionError, match=r"arrays\(\)\['order'\] changes when only events after FitInput.until change"):
        check_learns_only_up_to_until(_Leaky)
    check_learns_only_up_to_until(_PopularAbove)


def test_a_plugin_registering_a_built_in_name_is_refused_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed plug-in registering ``top_n`` (its own class): the registry kept whichever entry point came
    last, so the plug-in silently never ran (or silently replaced the built-in on another machine)."""
    (tmp_path / "top_n_again_xyz.py").write_text(
        "from rankers.base import Ranker\nclass MyTopN(Ranker):\n    name = 'top_n'\n    def rows(self, request):\n        return []\n"
    )
    dist = tmp_path / "top_n_again_xyz-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: top-n-again-xyz\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\ntop_n = top_n_again_xyz:MyTopN\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.registered.cache_clear()
    registry.collisions.cache_clear()
    try:
        with pytest.raises(RankerNotFound) as e:
            ranker_class("top_n")
        assert ranker_class("trending").name == "trending"  # the other names are unaffected
    finally:
        monkeypatch.undo()
        registry.registered.cache_clear()
        registry.collisions.cache_clear()
        sys.modules.pop("top_n_again_xyz", None)
    msg = str(e.value)
    assert "more than one installed package" in msg and "top_n_again_xyz:MyTopN" in msg and "rankers.top_n:TopNRanker" in msg
    assert ranker_class("top_n").__module__ == "rankers.top_n"


@pytest.mark.parametrize("row_id", ["top_n", "video_to_video:527", "top_n:pop@2", "a.b-c_d", "top_n: new releases", "Neuheiten", "", "x" * 129, "genre/Action"])
def test_the_row_ids_the_page_builder_takes_are_the_ones_the_events_api_takes(row_id: str) -> None:
    """A play names its row by row_id; a row served under an id POST /events refuses could never be credited."""
    from pydantic import ValidationError

    from homepage.api.schemas import EventIn
    from rankers.base import ROW_ID

    try:
        EventIn(user_id=1, title_id=1, kind="play", row_id=row_id)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(ROW_ID.match(row_id))
