"""The world written as a MovieLens release reads back through ingest as the same ratings and titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures.movielens_export import LAYOUTS, world_ratings, write_movielens
from homepage.dataset import read_table
from homepage.domain import EVENT_CODES, EventKind
from homepage.ingest import ingest_movielens

WORLD = Path(__file__).resolve().parents[1] / "fixtures" / "world-small"


@pytest.fixture(scope="module")
def world_events() -> pd.DataFrame:
    return read_table(WORLD, "events")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_release_ingests_back_to_one_rating_per_user_and_title(layout: str, tmp_path: Path, world_events: pd.DataFrame) -> None:
    n = write_movielens(WORLD, tmp_path / "release", layout)
    manifest, _ = ingest_movielens(tmp_path / "release", tmp_path / "dataset")  # raises at the first malformed row
    assert manifest.source == f"movielens-{layout}"
    ev = read_table(tmp_path / "dataset", "events")
    watched = world_events[world_events["kind"].isin([EVENT_CODES[EventKind.PLAY], EVENT_CODES[EventKind.RATING]])]
    pairs = watched.groupby(["user_id", "title_id"])["ts"].min()
    assert n == len(ev) == len(pairs)
    got = ev.set_index(["user_id", "title_id"])["ts"].sort_index()
    assert got.index.equals(pairs.sort_index().index)
    assert np.array_equal(got.to_numpy(), pairs.sort_index().to_numpy())  # stamped at the first play or rating
    stars = ev["stars"].to_numpy()
    if layout == "csv":
        assert stars.min() >= 0.5 and stars.max() <= 5.0 and np.array_equal(stars * 2, np.round(stars * 2))
    else:
        assert set(np.unique(stars)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_titles_keep_their_name_year_and_genres(layout: str, tmp_path: Path) -> None:
    write_movielens(WORLD, tmp_path / "release", layout)
    ingest_movielens(tmp_path / "release", tmp_path / "dataset")
    want = read_table(WORLD, "titles").set_index("title_id").sort_index()
    got = read_table(tmp_path / "dataset", "titles").set_index("title_id").sort_index()
    assert got.index.equals(want.index)
    assert (got["name"] == want["name"]).all()
    assert (got["year"] == want["year"]).all()
    assert [sorted(g) for g in got["genres"]] == [sorted(g) for g in want["genres"]]


def test_a_users_own_rating_is_kept_and_unrated_titles_are_graded_by_progress(world_events: pd.DataFrame) -> None:
    r = world_ratings(world_events, "dat", seed=0).set_index(["user_id", "title_id"])
    rated = world_events[world_events["kind"] == EVENT_CODES[EventKind.RATING]].sort_values("ts").groupby(["user_id", "title_id"])["stars"].last()
    assert np.array_equal(r.loc[rated.index, "stars"].to_numpy(), np.clip(np.round(rated.to_numpy()), 1, 5))
    plays = world_events[world_events["kind"] == EVENT_CODES[EventKind.PLAY]].groupby(["user_id", "title_id"])["progress"].max()
    unrated = plays[~plays.index.isin(rated.index)]
    s = r.loc[unrated.index, "stars"].to_numpy()
    p = unrated.to_numpy()
    assert s[p >= 0.9].mean() > s[p <= 0.3].mean() + 1.5  # a finished title rates higher than an abandoned one
    with pytest.raises(ValueError, match="layout"):
        write_movielens(WORLD, Path("/nonexistent"), "parquet")
