"""The homepage ranker contract, checked with the public conformance suite."""

import pytest

from new_releases_ranker import NewReleasesRanker
from rankers.testing import check_id, ranker_checks


@pytest.mark.parametrize("check", ranker_checks(), ids=check_id)
def test_contract(check):
    check(NewReleasesRanker)
