"""The personalised ranker: fold-in at request time, rows, determinism, artifact round trip."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from homepage.catalog import Catalog  # noqa: E402
from homepage.domain import RequestContext  # noqa: E402
from homepage.eventlog import EventLog  # noqa: E402
from homepage.state import UserState, frozen  # noqa: E402
from rankers.base import FitInput, RankRequest  # noqa: E402
from rankers.personalized import PersonalizedRanker, genre_row_title  # noqa: E402
from rankers.testing import check_id, ranker_checks  # noqa: E402

N_TITLES = 60
GENRES = ["Comedy", "Horror", "Drama"]
SMALL = dict(factors=8, als_iterations=5, ease_lambda=5.0, ease_min_count=1, neighbours=20, row_length=10)


def two_taste_world(seed: int = 0) -> tuple[Catalog, EventLog, int]:
    """Titles 0-29 are comedies, 30-59 horror (every 3rd also drama); users like one block each."""
    rng = np.random.default_rng(seed)
    genres = [["Comedy"] if i < 30 else ["Horror"] for i in range(N_TITLES)]
    for i in range(0, N_TITLES, 3):
        genres[i] = genres[i] + ["Drama"]
    titles = pd.DataFrame({"title_id": np.arange(N_TITLES) + 100, "name": [f"t{i}" for i in range(N_TITLES)],
                           "year": 2000, "genres": genres})
    catalog = Catalog.from_frames(titles)
    rows = []
    for u in range(40):
        block = 0 if u % 2 == 0 else 30
        for j, t in enumerate(rng.choice(30, size=12, replace=False)):
            rows.append((u, 100 + block + int(t), 1, 1_000 + 10 * u + j, 4.0))
    ev = pd.DataFrame(rows, columns=["user_id", "title_id", "kind", "ts", "stars"])
    log = EventLog.from_frame(ev, catalog)
    return catalog, log, int(ev.ts.max())


def fitted(config: dict | None = None) -> tuple[PersonalizedRanker, Catalog, EventLog, int]:
    catalog, log, until = two_taste_world()
    r = PersonalizedRanker({**SMALL, **(config or {})})
    r.fit(FitInput(log=log, catalog=catalog, until=until, world=log.global_state(until)))
    return r, catalog, log, until


def request(user: UserState, catalog: Catalog, log: EventLog, now: int) -> RankRequest:
    return RankRequest(user, log.global_state(now), catalog, RequestContext(user_id=user.user_id, now=now))


def with_plays(user: UserState, title_ids: list[int], catalog: Catalog, t0: int) -> UserState:
    """The user after playing ``title_ids`` (no refit): history arrays extended."""
    n = len(title_ids)
    ids = np.asarray(title_ids, np.int64)
    return UserState(
        user_id=user.user_id, as_of=t0 + n, region=user.region,
        title_ids=frozen(np.concatenate([user.title_ids, ids])),
        title_idx=frozen(np.concatenate([user.title_idx, catalog.index_of(ids)])),
        ts=frozen(np.concatenate([user.ts, t0 + np.arange(1, n + 1)])),
        kinds=frozen(np.concatenate([user.kinds, np.zeros(n, np.int8)])),
        stars=frozen(np.concatenate([user.stars, np.full(n, np.nan, np.float32)])),
        progress=frozen(np.concatenate([user.progress, np.ones(n, np.float32)])),
    )


def test_rows_follow_the_users_taste_and_exclude_seen() -> None:
    r, catalog, log, until = fitted()
    user = log.user_state(0, until)  # a comedy user
    rows = r.rows(request(user, catalog, log, until))
    top = rows[0]
    assert top.reason.kind == "top_picks" and top.display_title == "Top picks for you"
    assert len(top) == 10
    assert not np.isin(top.title_ids, user.title_ids).any()
    assert (catalog.index_of(top.title_ids[:5]) < 30).all(), "a comedy fan's best picks are comedies"
    assert np.all(np.diff(top.scores) <= 0)
    genre_rows = [row for row in rows[1:] if row.reason.kind == "genre"]
    assert genre_rows and genre_rows[0].reason.genre == "Comedy"
    assert genre_rows[0].display_title == genre_row_title("Comedy") == "Comedies for you"
    g = catalog.genre_index["Comedy"]
    assert catalog.genre_matrix[catalog.index_of(genre_rows[0].title_ids), g].all()
    assert len({row.row_id for row in rows}) == len(rows) <= r.config.max_rows


def test_more_picks_rows_continue_the_list_wherever_the_page_places_them() -> None:
    r, catalog, log, until = fitted({"more_picks": 2, "max_rows": 4, "row_length": 8})
    user = log.user_state(0, until)
    req = RankRequest(user, log.global_state(until), catalog, RequestContext(user_id=0, now=until, rows=4, cols=5))
    rows = r.rows(req)
    top, more = rows[0], rows[1:3]
    assert [m.display_title for m in more] == ["More picks for you"] * 2 and len({m.row_id for m in rows}) == len(rows) <= 4
    assert all(m.reason.kind == "top_picks" for m in more)
    # More picks j: the list from its top to row_length past j page widths (5 columns here)
    longest = more[1].title_ids
    assert [len(m) for m in more] == [5 + 8, 10 + 8] and (top.title_ids == longest[:8]).all() and (more[0].title_ids == longest[:13]).all()
    # a page showing top picks' first 5 and then one "More picks" row shows ranks 6-10 in it, whichever it is
    shown = set(top.title_ids[:5].tolist())
    for m in more:
        assert [t for t in m.title_ids.tolist() if t not in shown][:5] == longest[5:10].tolist()
    plain = fitted({"max_rows": 4, "row_length": 8})[0]  # off by default
    assert [row.reason.kind for row in plain.rows(req)].count("top_picks") == 1


def test_exclude_seen_can_be_turned_off() -> None:
    r, catalog, log, until = fitted({"exclude_seen": False, "row_length": 30})
    user = log.user_state(0, until)
    top = r.rows(request(user, catalog, log, until))[0]
    assert np.isin(top.title_ids, user.title_ids).any()


def test_one_new_play_changes_top_picks_without_refit() -> None:
    r, catalog, log, until = fitted()
    before_arrays = {k: v.copy() for k, v in r.arrays().items()}
    user = log.user_state(0, until)  # comedy fan
    before = r.rows(request(user, catalog, log, until))[0]
    horror = [100 + 30 + i for i in range(30) if 100 + 30 + i not in set(user.title_ids)][:1]
    after_user = with_plays(user, horror, catalog, until)
    after = r.rows(request(after_user, catalog, log, until + 1))[0]
    assert not np.array_equal(before.title_ids, after.title_ids)
    assert not np.array_equal(r.user_vector(user), r.user_vector(after_user))
    assert horror[0] not in after.title_ids  # the new play is now seen
    s0, s1 = r.score_titles(user), r.score_titles(after_user)
    assert s1[30:].mean() > s0[30:].mean(), "a horror play raises horror scores"
    for k, v in r.arrays().items():  # nothing was refitted or mutated
        np.testing.assert_array_equal(v, before_arrays[k])


def test_a_long_history_is_cut_to_its_most_recent_titles() -> None:
    """``max_history`` keeps the titles played last (a replay is the latest interaction), and recency weights fall with age."""
    r, catalog, log, until = fitted({"max_history": 3, "history_half_life": 2.0})
    user = log.user_state(1, until)  # a horror fan
    comedies = [100 + i for i in range(30) if 100 + i not in set(user.title_ids)][:3]
    later = with_plays(with_plays(user, comedies, catalog, until), [int(user.title_ids[0])], catalog, until + 3)
    items, w = r.history(later)
    assert list(catalog.title_ids[items]) == [int(user.title_ids[0]), comedies[2], comedies[1]]
    assert np.all(np.diff(w) < 0) and w[0] == 1.0
    assert list(later.known_titles[:4]) == list(catalog.index_of(np.array([user.title_ids[0], *comedies[::-1]])))


def test_titles_seen_before_the_scored_history_stay_excluded() -> None:
    """max_history keeps the most recent titles for scoring; older ones must still never be proposed."""
    r, catalog, log, until = fitted({"max_history": 3, "row_length": 40})
    user = log.user_state(0, until)
    assert len(user.known_titles) > 3
    shown = np.concatenate([row.title_ids for row in r.rows(request(user, catalog, log, until))])
    assert not np.isin(shown, user.title_ids).any()


def test_a_user_without_history_gets_rows_of_the_most_popular_genres() -> None:
    """A first page gets the popular titles of the popular genres, not only the top-N and trending rows."""
    r, catalog, log, until = fitted()
    cold = UserState.empty(999, until)
    rows = r.rows(request(cold, catalog, log, until))
    mass = {g: float(r.prior_[catalog.genre_matrix[:, j]].sum()) for j, g in enumerate(catalog.genres)}
    assert [row.reason.genre for row in rows] == sorted(mass, key=lambda g: -mass[g])  # every genre has a row here
    assert all(row.reason.kind == "genre" and row.display_title.startswith("Popular ") for row in rows)
    assert rows[0].display_title == {"Comedy": "Popular comedies", "Horror": "Popular horror films", "Drama": "Popular dramas"}[rows[0].reason.genre]
    for row in rows:
        idx = catalog.index_of(row.title_ids)
        assert catalog.genre_matrix[idx, catalog.genre_index[row.reason.genre]].all()
        assert np.array_equal(row.scores, r.prior_[idx]) and np.all(np.diff(row.scores) <= 0)  # the most popular first
    assert fitted({"max_rows": 1})[0].rows(request(cold, catalog, log, until))[0].row_id == rows[0].row_id
    assert fitted({"popular_genres": False})[0].rows(request(cold, catalog, log, until)) == []


def test_a_genre_named_with_spaces_or_quotes_gets_a_row_id_the_events_api_takes() -> None:
    """A MovieLens-format catalog may name a genre "Science Fiction" or "Children's": its row id held the name as it
    was, and the page builder drops a row whose id the events API refuses (its plays could never be credited)."""
    from rankers.base import row_problem

    catalog, log, until = two_taste_world()
    names = {"Comedy": "Children's", "Horror": "Science Fiction", "Drama": "Drama"}
    titles = pd.DataFrame({"title_id": catalog.title_ids, "name": [f"t{i}" for i in range(N_TITLES)], "year": 2000,
                           "genres": [[names[g] for g in catalog.genres if catalog.genre_matrix[i, catalog.genre_index[g]]]
                                      for i in range(N_TITLES)]})
    renamed = Catalog.from_frames(titles)
    r = PersonalizedRanker(SMALL)
    r.fit(FitInput(log=log, catalog=renamed, until=until, world=log.global_state(until)))
    cold = UserState.empty(999, until)
    rows = r.rows(RankRequest(cold, log.global_state(until), renamed, RequestContext(user_id=999, now=until)))
    assert {row.reason.genre for row in rows} == set(names.values())
    assert all(row_problem(row) is None for row in rows), [row.row_id for row in rows]
    assert len({row.row_id for row in rows}) == len(rows)
    assert "personalized:genre:Science_Fiction" in {row.row_id for row in rows}


def test_cold_user_scores_exist() -> None:
    r, catalog, log, until = fitted()
    cold = UserState.empty(999, until)
    s = r.score_titles(cold)
    assert s.dtype == np.float32 and s.shape == (N_TITLES,)
    assert r.user_vector(cold).shape == (8,)


def test_a_user_without_history_gets_rows_of_the_genres_they_stated() -> None:
    r, catalog, log, until = fitted({"popular_genres": False})
    cold = UserState.empty(999, until, favourite_genres=("Horror", "Western", "Drama", "Horror"))  # Western: not in the catalog
    rows = r.rows(request(cold, catalog, log, until))
    assert [row.reason.genre for row in rows] == ["Horror", "Drama"] and all(row.reason.kind == "genre" for row in rows)
    assert [row.display_title for row in rows] == [genre_row_title("Horror"), genre_row_title("Drama")]
    for row, g in zip(rows, ("Horror", "Drama")):
        idx = catalog.index_of(row.title_ids)
        assert catalog.genre_matrix[idx, catalog.genre_index[g]].all()
        assert np.all(np.diff(row.scores) <= 0)  # the most popular first
        assert np.array_equal(row.scores, r.prior_[idx])
    off = PersonalizedRanker({**SMALL, "favourite_genres": False, "popular_genres": False})
    off.fit(FitInput(log=log, catalog=catalog, until=until, world=log.global_state(until)))
    assert off.rows(request(cold, catalog, log, until)) == []
    alone = fitted({"popular_beside_stated": False})[0].rows(request(cold, catalog, log, until))
    assert [(row.row_id, row.display_title) for row in alone] == [(row.row_id, row.display_title) for row in rows]


def test_a_new_user_who_stated_one_genre_also_gets_the_other_popular_genres_after_it() -> None:
    """Stating a genre used to cost a first page its popular-genre rows: one genre row, with top-N and trending three rows
    in all, where a user who said nothing got ten. The stated genres come first, then the popular ones not stated."""
    r, catalog, log, until = fitted()
    said_nothing = r.rows(request(UserState.empty(999, until), catalog, log, until))
    popular = [row.reason.genre for row in said_nothing]
    stated = popular[-1]  # the least popular genre: its row must still come first
    rows = r.rows(request(UserState.empty(999, until, favourite_genres=(stated,)), catalog, log, until))
    assert [row.reason.genre for row in rows] == [stated, *(g for g in popular if g != stated)]
    assert rows[0].display_title == genre_row_title(stated) and rows[0].row_id == f"personalized:genre:{stated}"
    assert all(row.display_title.startswith("Popular ") for row in rows[1:])
    assert len({row.row_id for row in rows}) == len(rows)
    capped = fitted({"max_rows": 2})[0].rows(request(UserState.empty(999, until, favourite_genres=(stated,)), catalog, log, until))
    assert [row.reason.genre for row in capped] == [stated, popular[0]]  # max_rows counts both kinds


def test_a_new_user_is_scored_by_the_genres_they_stated() -> None:
    """The page builder's personal features of a new user who stated genres: popularity, plus the item model's top weight
    on titles of those genres. Without them its model could not tell their rows from the popular-genre rows beside them."""
    r, catalog, log, until = fitted()
    horror = catalog.genre_matrix[:, catalog.genre_index["Horror"]].astype(bool)
    s = r.stated_genre_scores(UserState.empty(999, until, favourite_genres=("Horror", "Western")), catalog)
    assert s is not None and s.dtype == np.float32
    base = r.prior_ * np.float32(2.0)  # weight_pop
    assert np.allclose(s[horror], base[horror] + 1.0) and np.array_equal(s[~horror], base[~horror])  # weight_item 1
    assert s[horror].min() > base[~horror].min()
    for silent in ((), ("Western",)):  # nothing stated the catalog knows
        assert r.stated_genre_scores(UserState.empty(999, until, favourite_genres=silent), catalog) is None
    off = fitted({"popular_beside_stated": False})[0]
    assert off.stated_genre_scores(UserState.empty(999, until, favourite_genres=("Horror",)), catalog) is None


def test_a_stated_niche_genre_gets_its_row_from_beyond_the_pool() -> None:
    """A stated genre with too few titles among the ``genre_pool`` best (Film-Noir on ml-latest-small) is filled from the
    whole catalog by the same scores, for a new user and in a known user's spare slots; history's weaker genres are not."""
    r, catalog, log, until = fitted({"genre_pool": 10, "min_genre_titles": 8, "max_rows": 4})
    drama = catalog.genre_matrix[:, catalog.genre_index["Drama"]]
    assert drama[np.argsort(-r.prior_, kind="stable")[:10]].sum() < 8 <= drama.sum()  # too few dramas in the pool
    cold = UserState.empty(999, until, favourite_genres=("Drama",))
    (row,) = r.rows(request(cold, catalog, log, until))
    idx = catalog.index_of(row.title_ids)
    assert row.row_id == "personalized:genre:Drama" and len(row) == 10 and drama[idx].all()
    assert np.array_equal(row.scores, np.sort(r.prior_[drama])[::-1][:10])  # the genre's most popular, in order
    fan = log.user_state(0, until)  # a comedy fan: a third of their titles are dramas too, too few in the pool for a row
    assert "personalized:genre:Drama" not in [row.row_id for row in r.rows(request(fan, catalog, log, until))]
    for genre in ("Drama", "Horror"):  # stated: Drama as well as a genre history lacks
        stated = dataclasses.replace(fan, favourite_genres=(genre,))
        got = {row.row_id: row for row in r.rows(request(stated, catalog, log, until))}[f"personalized:genre:{genre}"]
        column = catalog.genre_matrix[:, catalog.genre_index[genre]]
        assert column[catalog.index_of(got.title_ids)].all() and not np.isin(got.title_ids, fan.title_ids).any()
        assert len(got) >= 8 and np.all(np.diff(got.scores) <= 0)



def test_the_genre_a_user_leans_to_most_gets_its_row_even_when_niche() -> None:
    """Five documentaries rated 5 on ml-latest-small: nine among the user's 1,000 best, so no "Documentaries for you"
    while Comedy and Drama got rows. The strongest history genre is filled from the whole catalog, as a stated one is."""
    r, catalog, log, until = fitted({"genre_pool": 10, "min_genre_titles": 8, "max_rows": 4})
    drama = catalog.genre_matrix[:, catalog.genre_index["Drama"]]
    new = with_plays(UserState.empty(999, until), [100, 103, 106, 130, 133], catalog, until)  # dramas only (comedy or horror too)
    scores = r.score_titles(new)
    scores[new.known_titles] = -np.inf
    assert drama[np.argsort(-scores, kind="stable")[:10]].sum() < 8 <= drama.sum() - 5  # too few dramas in the pool
    rows = {row.row_id: row for row in r.rows(request(new, catalog, log, until + 10))}
    got = rows["personalized:genre:Drama"]
    assert drama[catalog.index_of(got.title_ids)].all() and not np.isin(got.title_ids, new.title_ids).any()
    assert len(got) >= 8 and np.all(np.diff(got.scores) <= 0)
    assert list(rows).index("personalized:genre:Drama") == 1  # first of the genre rows, right after top picks

def test_stated_genres_fill_only_the_genre_rows_history_leaves_free() -> None:
    r, catalog, log, until = fitted({"max_rows": 4})
    comedy_fan = log.user_state(0, until)
    plain = [row.row_id for row in r.rows(request(comedy_fan, catalog, log, until))]
    stated = dataclasses.replace(comedy_fan, favourite_genres=("Horror", "Comedy"))
    got = [row.row_id for row in r.rows(request(stated, catalog, log, until))]
    assert len(plain) < 4 and "personalized:genre:Horror" not in plain  # a slot is free; history has no horror
    assert got == [*plain, "personalized:genre:Horror"]  # history's rows first, unchanged; Comedy not twice


def test_a_genre_row_too_short_to_propose_leaves_its_slot_to_a_stated_genre() -> None:
    r, catalog, log, until = fitted({"max_rows": 3, "row_length": 20, "min_genre_titles": 17})
    fan = dataclasses.replace(log.user_state(0, until), favourite_genres=("Horror",))
    plain = [row.row_id for row in r.rows(request(log.user_state(0, until), catalog, log, until))]
    assert plain == ["personalized:top_picks", "personalized:genre:Comedy"]  # Drama's row was too short
    assert [row.row_id for row in r.rows(request(fan, catalog, log, until))] == [*plain, "personalized:genre:Horror"]


def test_an_artifact_saved_before_the_switch_keeps_serving_without_it(tmp_path: Path) -> None:
    """A bundle trained before favourite-genre rows existed serves as it was measured: the switch is off."""
    import json

    r, *_ = fitted()
    d = r.save(tmp_path / "new")
    assert PersonalizedRanker.load(d).config.favourite_genres is True
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["config"]["favourite_genres"], manifest["config"]["popular_genres"]  # as the code before the fields wrote it
    del manifest["config"]["popular_beside_stated"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    old = PersonalizedRanker.load(d)
    assert old.config.favourite_genres is False and old.config.popular_genres is False
    assert old.config.popular_beside_stated is False


def with_ratings(user: UserState, rated: list[tuple[int, float]], catalog: Catalog, t0: int) -> UserState:
    """The user after rating ``rated`` ((title id, stars), in that order; no refit)."""
    n = len(rated)
    ids = np.asarray([t for t, _ in rated], np.int64)
    return dataclasses.replace(
        user, as_of=t0 + n,
        title_ids=frozen(np.concatenate([user.title_ids, ids])),
        title_idx=frozen(np.concatenate([user.title_idx, catalog.index_of(ids)])),
        ts=frozen(np.concatenate([user.ts, t0 + np.arange(1, n + 1)])),
        kinds=frozen(np.concatenate([user.kinds, np.ones(n, np.int8)])),
        stars=frozen(np.concatenate([user.stars, np.asarray([s for _, s in rated], np.float32)])),
        progress=frozen(np.concatenate([user.progress, np.full(n, np.nan, np.float32)])),
    )


def test_titles_the_user_rated_low_make_no_genre_row_for_them() -> None:
    """A comedy fan who rated three horror titles 1 star gets no "Horror films for you"; the last rating counts."""
    r, catalog, log, until = fitted({"max_rows": 6, "genre_min_stars": 3.0})
    fan = log.user_state(0, until)
    assert "personalized:genre:Horror" not in [row.row_id for row in r.rows(request(fan, catalog, log, until))]
    hated = with_ratings(fan, [(130, 1.0), (131, 1.0), (132, 1.5)], catalog, until)
    assert "personalized:genre:Horror" not in [row.row_id for row in r.rows(request(hated, catalog, log, until + 3))]
    came_round = with_ratings(hated, [(130, 4.5), (131, 4.0)], catalog, until + 3)  # re-rated: they like two now
    assert "personalized:genre:Horror" in [row.row_id for row in r.rows(request(came_round, catalog, log, until + 5))]
    off = fitted({"max_rows": 6})[0]  # the default, 0: every title counts (3 cost ndcg_2d on ml-latest-small)
    assert "personalized:genre:Horror" in [row.row_id for row in off.rows(request(hated, catalog, log, until + 3))]


def test_genre_threshold_follows_the_datas_scale_and_old_artifacts_keep_every_title(tmp_path: Path) -> None:
    """Implicit feedback exported as ratings of 1 keeps its genre rows; a bundle from before the field counts every title."""
    import json

    catalog, log, until = two_taste_world()
    ones = log.global_state(until)
    ones = dataclasses.replace(ones, rating_sum=ones.rating_count.astype(ones.rating_sum.dtype))  # every rating 1
    assert PersonalizedRanker({**SMALL, "genre_min_stars": 3.0}).fit(FitInput(log, catalog, until, ones)).genre_stars_ == 1.0
    assert fitted()[0].genre_stars_ == 0.0  # off by default
    r, *_ = fitted({"genre_min_stars": 3.0})
    assert r.genre_stars_ == 3.0 and PersonalizedRanker.load(r.save(tmp_path / "new")).genre_stars_ == 3.0
    d = r.save(tmp_path / "old")
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["config"]["genre_min_stars"]  # as the code before the field wrote it
    (d / "manifest.json").write_text(json.dumps(manifest))
    arrays = dict(np.load(d / "arrays.npz"))
    del arrays["genre_stars"]
    np.savez(d / "arrays.npz", **arrays)
    assert PersonalizedRanker.load(d).genre_stars_ == 0.0


def test_the_event_log_carries_the_users_tables_favourites() -> None:
    catalog, log, until = two_taste_world()
    ev = pd.DataFrame([(0, 100, 1, 5, 4.0)], columns=["user_id", "title_id", "kind", "ts", "stars"])
    users = pd.DataFrame({"user_id": [0, 1], "region": ["EU", None], "created": [0, 0], "favourite_genres": [["Horror"], None]})
    log = EventLog.from_frame(ev, catalog, users)
    assert log.user_state(0, 10).favourite_genres == ("Horror",)
    assert log.user_state(1, 10).favourite_genres == () and log.user_state(7, 10).favourite_genres == ()
    assert log.user_state(0, 10, favourite_genres=("Drama",)).favourite_genres == ("Drama",)  # given wins


def test_fit_and_rows_are_deterministic() -> None:
    a, catalog, log, until = fitted()
    b, *_ = fitted()
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k])
    user = log.user_state(1, until)
    ra, rb = a.rows(request(user, catalog, log, until)), b.rows(request(user, catalog, log, until))
    assert [r.row_id for r in ra] == [r.row_id for r in rb]
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(x.title_ids, y.title_ids)
        np.testing.assert_array_equal(x.scores, y.scores)


def test_save_load_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    r, catalog, log, until = fitted()
    loaded = PersonalizedRanker.load(r.save(tmp_path / "personalized"))
    assert loaded.config == r.config and loaded.train_window_ == r.train_window_
    for u in (0, 1, 7):
        user = log.user_state(u, until)
        np.testing.assert_array_equal(loaded.score_titles(user), r.score_titles(user))
        np.testing.assert_array_equal(loaded.user_vector(user), r.user_vector(user))


def test_does_not_mutate_its_input() -> None:
    r, catalog, log, until = fitted()
    user = log.user_state(2, until)
    copy = user.title_idx.copy()
    r.rows(request(user, catalog, log, until))
    np.testing.assert_array_equal(user.title_idx, copy)


@pytest.mark.parametrize("check", ranker_checks(), ids=check_id)
def test_conformance(check) -> None:  # type: ignore[no-untyped-def]
    check(PersonalizedRanker)


def test_small_item_model_keeps_all_weights_and_budget_prunes_large_ones() -> None:
    full, *_ = fitted({"neighbours": 5})
    pruned, *_ = fitted({"neighbours": 5, "item_model_budget": 0})
    per_row_full = np.diff(full.item_model_.indptr)
    per_row_pruned = np.diff(pruned.item_model_.indptr)
    assert per_row_pruned.max() <= 5
    assert per_row_full.max() > 5  # 60 modelled titles fit in the budget: nothing thrown away
    assert full.kept_per_title(60) >= 59 and full.kept_per_title(6000) == max(5, full.config.item_model_budget // 6000)


def test_als_factors_do_not_depend_on_thread_count() -> None:
    import scipy.sparse as sp

    from rankers.factorization import fit_als

    rng = np.random.default_rng(3)
    x = sp.random(300, 120, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    kw = dict(factors=8, regularization=1.0, alpha=2.0, iterations=4, seed=0)
    one = fit_als(x, threads=1, **kw)
    np.testing.assert_array_equal(fit_als(x, threads=2, **kw), one)
    assert np.abs(one).sum() > 0
    # nor on the BLAS threads the process runs with (one per core unless limited): a machine
    # with more cores would otherwise train other factors (numpy loads BLAS long before this)
    from threadpoolctl import threadpool_limits

    x = sp.random(2000, 1000, density=0.02, random_state=np.random.default_rng(3), format="csr", dtype=np.float32)
    x.data[:] = 1.0  # large enough for OpenBLAS to split its Gram matrix over threads
    kw = dict(factors=32, regularization=1.0, alpha=2.0, iterations=2, seed=0)
    with threadpool_limits(1, user_api="blas"):
        alone = fit_als(x, threads=1, **kw)
    for blas_threads in (2, 4):
        with threadpool_limits(blas_threads, user_api="blas"):
            np.testing.assert_array_equal(fit_als(x, threads=2, **kw), alone)


def test_ease_weights_do_not_depend_on_the_blas_threads() -> None:
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from rankers.factorization import fit_ease

    x = sp.random(1500, 1500, density=0.02, random_state=np.random.default_rng(3), format="csr", dtype=np.float32)
    x.data[:] = 1.0  # large enough for LAPACK to split the Cholesky over threads
    with threadpool_limits(1, user_api="blas"):
        _, alone = fit_ease(x, 500.0)
    for blas_threads in (2, 4):
        with threadpool_limits(blas_threads, user_api="blas"):
            np.testing.assert_array_equal(fit_ease(x, 500.0)[1], alone)


def test_ease_in_place_inverse_and_banded_pruning_equal_the_whole_matrix_formulas_bit_for_bit() -> None:
    """``mirror_upper`` and the banded top-k give the bytes of ``np.triu(p) + np.triu(p, 1).T`` and of one argpartition.

    Random matrices of sizes around the band, with exact signed zeros and ties; then fit_ease and
    prune_rows end to end against the same formulas written out whole.
    """
    import scipy.sparse as sp

    from rankers import factorization as F

    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 8, 9, 33):
        for block in (1, 3, 8, 256):
            p = rng.normal(size=(n, n)).round(1)  # ties
            p[rng.random((n, n)) < 0.2] = -0.0
            p[rng.random((n, n)) < 0.2] = 0.0
            want = np.triu(p) + np.triu(p, 1).T
            got = F.mirror_upper(p.copy(), block=block)
            assert got.tobytes() == want.tobytes(), (n, block)
            for keep_negative in (False, True):
                for k in {1, max(n - 1, 1)}:
                    if k >= n:
                        continue
                    key = -np.abs(want) if keep_negative else -want
                    whole = np.argpartition(key, k - 1, axis=1)[:, :k]
                    assert np.array_equal(F._top_columns(want, k, keep_negative, block=block), whole), (n, block, k)

    x = sp.random(300, 120, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    x.data[:] = rng.integers(1, 4, x.data.size)
    items, b = F.fit_ease(x, 20.0)
    xs = x[:, items].astype(np.float64)
    g = (xs.T @ xs).toarray()
    g[np.diag_indices_from(g)] += 20.0
    c, _ = F.lapack.dpotrf(g, lower=False)
    p, _ = F.lapack.dpotri(c, lower=False)
    p = np.triu(p) + np.triu(p, 1).T
    want_b = p / (-np.diag(p))
    want_b[np.diag_indices_from(want_b)] = 0.0
    assert b.tobytes() == want_b.tobytes()
    for keep_negative in (False, True):
        m = F.prune_rows(b, items, 120, 10, keep_negative=keep_negative)
        key = -np.abs(want_b) if keep_negative else -want_b
        top = np.argpartition(key, 9, axis=1)[:, :10]
        w = np.take_along_axis(want_b, top, axis=1)
        keep = w != 0 if keep_negative else w > 0
        want_m = sp.csr_matrix((w[keep].astype(np.float32), (np.repeat(items, keep.sum(axis=1)), items[top[keep]])), shape=(120, 120))
        want_m.sort_indices()
        assert (m != want_m).nnz == 0 and m.indices.tobytes() == want_m.indices.tobytes() and m.data.tobytes() == want_m.data.tobytes()


def test_a_cut_before_any_title_has_two_users_still_fits() -> None:
    """EASE on no item (an early backtest fold, a tiny dataset) raised LinAlgError from a 0 x 0 inverse; the ranker must still serve."""
    catalog, log, _ = two_taste_world()
    first = int(log.t_ts[0])  # one play by one user: no title has two users yet
    r = PersonalizedRanker({**SMALL, "ease_min_count": 2})
    r.fit(FitInput(log=log, catalog=catalog, until=first, world=log.global_state(first)))
    user = log.user_state(int(log.user_ids[0]), first)
    rows = r.rows(request(user, catalog, log, first))
    assert all(row.title_ids.size == np.unique(row.title_ids).size for row in rows)
    assert not any(np.isin(user.title_ids, row.title_ids).any() for row in rows)


def test_rows_break_ties_at_the_cut_by_index() -> None:
    """Titles tied at the k-th score: the lower catalog indices make the row (the pool of every personalised row).

    ``argpartition`` alone picks among titles tied at the cut in an order of its own (index 30
    before 28 among equal scores), so which of them a user saw hung on numpy's selection algorithm.
    """
    from rankers.personalized import _top

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 400))
        s = rng.integers(0, 4, n).astype(np.float32)
        k = int(rng.integers(1, n))
        assert _top(s, k).tolist() == np.lexsort((np.arange(n), -s))[:k].tolist()


def test_one_accounts_flood_of_plays_weighs_as_one_viewer_in_the_popularity_prior() -> None:
    """The prior ("Popular <genre>" rows of a new user, and the blend for everyone) summed every event: after a
    merge and a retrain one account's 500 plays of a title nobody watched made it the most popular title. A user
    counts once per title, at their earliest event of it, as in the world counters."""
    catalog, log, until = two_taste_world()
    plays = pd.DataFrame({"user_id": log.user_ids.repeat(np.diff(log.user_ptr)), "title_id": log.u_title_ids, "kind": log.u_kinds,
                          "ts": log.u_ts, "stars": log.u_stars})
    obscure = int(catalog.title_ids[0])  # a title with at most a few plays in the world
    once = pd.concat([plays, pd.DataFrame({"user_id": [999], "title_id": [obscure], "kind": [0], "ts": [until - 500], "stars": [np.nan]})])
    flood = pd.concat([once, pd.DataFrame({"user_id": 999, "title_id": obscure, "kind": 0, "ts": until - 499 + np.arange(499), "stars": np.nan})])
    priors = []
    for frame in (once, flood):
        frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
        flog = EventLog.from_frame(frame, catalog)
        r = PersonalizedRanker(SMALL).fit(FitInput(log=flog, catalog=catalog, until=until, world=flog.global_state(until)))
        priors.append(r.prior_)
    np.testing.assert_array_equal(priors[1], priors[0])
    assert priors[0][0] < 1.0  # not the most popular title on one viewer's word
