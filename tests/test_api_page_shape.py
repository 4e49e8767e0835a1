"""A page asked for without ``rows``/``cols`` has the bundle's page shape (``page.rows`` x ``page.cols``), as in train, replay and explain."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest
from redis_fixtures import WORLD_SMALL, live_api_on_embedded

from homepage.bundle import train_bundle
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset

API_KEY = "test-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def shaped_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rankers only (cheap), trained for pages of 4 rows x 3 titles."""
    config = PipelineConfig(page=PageConfig(rows=4, cols=3, train_model=False))
    return train_bundle(load_dataset(WORLD_SMALL), tmp_path_factory.mktemp("shaped-models"), config).path


def test_a_page_without_rows_or_cols_has_the_bundles_shape(
    request: pytest.FixtureRequest, shaped_bundle: Path, recent_world: Path, tmp_path: Path
) -> None:
    user = int(pd.read_parquet(WORLD_SMALL / "users.parquet")["user_id"].iloc[3])
    with live_api_on_embedded(request, recent_world, shaped_bundle, tmp_path / "unpacked", API_KEY) as (srv, _), httpx.Client(
        base_url=srv.url, timeout=30
    ) as http:
        page = http.get(f"/homepage/{user}").json()
        assert (page["request"]["rows"], page["request"]["cols"]) == (4, 3)
        assert 1 <= len(page["rows"]) <= 4 and all(1 <= len(r["titles"]) <= 3 for r in page["rows"])
        page = http.get(f"/homepage/{user}", params={"cols": 2}).json()  # one given: the other is the bundle's
        assert (page["request"]["rows"], page["request"]["cols"]) == (4, 2)
        page = http.get(f"/homepage/{user}", params={"rows": 6, "cols": 5}).json()  # a client's own shape wins
        assert (page["request"]["rows"], page["request"]["cols"]) == (6, 5)
        assert len(page["rows"]) > 4 and max(len(r["titles"]) for r in page["rows"]) > 3
        viewer = http.get(f"/viewer/page/{user}").json()  # the viewer shows what clients are served
        assert (viewer["request"]["rows"], viewer["request"]["cols"]) == (4, 3)
        assert 1 <= len(viewer["rows"]) <= 4
