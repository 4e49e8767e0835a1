"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis), over real HTTP.

Every operation gets generated requests (valid and invalid); no response may be a 5xx,
each status code must be one the schema documents, and documented bodies must match.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_fixtures import WORLD_SMALL, live_api_on_embedded

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

API_KEY = "fuzz-" + uuid.uuid4().hex
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance, checks.response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(request: pytest.FixtureRequest, serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_api_on_embedded(request, WORLD_SMALL, serving_bundle, tmp_path_factory.mktemp("fuzz-unpacked"), API_KEY) as (srv, _):
        yield srv.url


@pytest.fixture(scope="module")
def api_schema(fuzz_server: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")


def test_api_conforms_to_its_schema(api_schema: Any) -> None:
    """Each operation: ``max_examples`` generated cases (positive and negative), every check passing."""
    from hypothesis import given

    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for op, mode in [(op, mode) for op in operations for mode in GenerationMode]:

        @given(case=op.as_strategy(mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def check(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS, timeout=30)

        try:
            check()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # an operation without parameters has no invalid input
