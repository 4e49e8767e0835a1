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
