"""Every registered ranker (built-in, or plug-in through the entry-point group) passes the public suite."""

from __future__ import annotations

import pytest

from rankers.registry import GROUP, ranker_class, registered
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

    with pytest.raises(AssertionError, match="repeated titles|non-increasing"):
        check_valid_rows(Broken)
