"""Shared test fixtures: where the public data lives, and the rule for when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when absent, except in CI where it fails."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        msg = f"{p} not found: the public datasets live in ../shared/data beside the checkout (expected off CI; README, Data licences, says what goes there)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: these tests must run)")
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def mlsmall_dir() -> Path:
    """The ml-latest-small release."""
    return shared_path("movielens-latest-small")


# Real-Redis fixtures (``store`` on the embedded server and on REDIS_URL), shared by every
# test module so the session starts one embedded server.
from redis_cluster import *  # noqa: E402, F401, F403
from redis_fixtures import *  # noqa: E402, F401, F403


# The modules that take a minute or more (single process, 2-core machine), longest first. Under
# `-n 2 --dist loadfile` a long module collected last (alphabetical order puts Spark near the end) can keep
# one worker busy after the other has run out of work: starting them first evens the two.
LONG_MODULES = ("test_service_refresh.py", "test_spark_engine.py", "test_api_faults.py", "test_api_workers.py", "test_artwork_train.py")
assert all((REPO / "tests" / name).is_file() for name in LONG_MODULES), "a long module was renamed: update LONG_MODULES"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the long modules first; every other module, and the tests inside each, keep their order."""
    first = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: first.get(item.path.name, len(LONG_MODULES)))
