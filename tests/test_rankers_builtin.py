"""Built-in rankers on tiny hand-made worlds where the right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from homepage.catalog import Catalog
from homepage.domain import RequestContext
from homepage.eventlog import EventLog
from homepage.state import PLAY, RATING, UserState
from rankers.base import FitInput, RankRequest
from rankers.continue_watching import ContinueWatchingRanker
from rankers.similarity import content_features, not_in, top_k, user_title_matrix
from rankers.top_n import TopNRanker
from rankers.trending import TrendingRanker
from rankers.video_to_video import VideoToVideoRanker

DAY = 86_400
T = 1_700_000_000


class Tiny:
    """A world from a list of (user, title, kind, ts, progress, stars) events."""

    def __init__(self, events: list[tuple], titles: pd.DataFrame | None = None, regions: dict[int, str] | None = None,
                 half_life: float = 7 * DAY, until: int = T) -> None:
        if titles is None:
            ids = sorted({e[1] for e in events})
            titles = pd.DataFrame({"title_id": ids, "name": [f"T{i}" for i in ids]})
        self.catalog = Catalog.from_frames(titles)
        ev = pd.DataFrame(events, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
        ev["kind"] = ev["kind"].astype(np.int8)
        users = pd.DataFrame({"user_id": list((regions or {}).keys()), "region": list((regions or {}).values())})
        self.log = EventLog.from_frame(ev.sort_values("ts", kind="stable"), self.catalog, users)
        self.until = until
        self.world = self.log.global_state(until, half_life)

    def fit(self, ranker):  # type: ignore[no-untyped-def]
        return ranker.fit(FitInput(self.log, self.catalog, self.until, self.world))

    def request(self, user_id: int, region: str | None = None, user: UserState | None = None) -> RankRequest:
        u = user if user is not None else self.log.user_state(user_id, self.until)
        return RankRequest(u, self.world, self.catalog, RequestContext(user_id=user_id, now=self.until, region=region))

    def ids(self, row) -> list[int]:  # type: ignore[no-untyped-def]
        return row.title_ids.tolist()


def plays(user: int, title: int, n: int = 1, ts: int = T - DAY, progress: float | None = 1.0) -> list[tuple]:
    return [(user * 1000 + i, title, PLAY, ts, progress, np.nan) if user < 0 else (user, title, PLAY, ts, progress, np.nan) for i in range(n)]


def ratings(title: int, stars: float, n: int, first_user: int = 1000) -> list[tuple]:
    return [(first_user + i, title, RATING, T - DAY, np.nan, stars) for i in range(n)]


# ------------------------------------------------------------------------------ top_n
def test_top_n_counts_with_min_count() -> None:
    # title 10 watched by 5 users, 20 by 3, 30 by 1; each event a distinct user
    ev = [(u, 10, PLAY, T - DAY, 1.0, np.nan) for u in range(5)]
    ev += [(100 + u, 20, PLAY, T - DAY, 1.0, np.nan) for u in range(3)]
    ev += [(200, 30, PLAY, T - DAY, 1.0, np.nan)]
    w = Tiny(ev)
    rows = w.fit(TopNRanker({"bayesian": False, "min_count": 2, "regional": False})).rows(w.request(999))
    assert [w.ids(r) for r in rows] == [[10, 20]]
    rows = w.fit(TopNRanker({"bayesian": False, "min_count": 0, "regional": False})).rows(w.request(999))
    assert w.ids(rows[0]) == [10, 20, 30]
    assert rows[0].display_title == "Top 10 today" and rows[0].reason.kind == "top_n"


def test_top_n_bayesian_average_shrinks_few_ratings() -> None:
    # A: 10 x 3.0 stars; B: 2 x 5.0; C: 30 x 4.5. Global mean 175/42 = 4.17.
    ev = ratings(1, 3.0, 10, 1000) + ratings(2, 5.0, 2, 2000) + ratings(3, 4.5, 30, 3000)
    w = Tiny(ev)
    shrunk = w.fit(TopNRanker({"min_count": 0, "prior_count": 20, "regional": False})).rows(w.request(1))
    # B = (10 + 20*4.17)/22 = 4.24 < C = (135 + 20*4.17)/50 = 4.37; A = (30 + 83.3)/30 = 3.78
    assert w.ids(shrunk[0]) == [3, 2, 1]
    raw = w.fit(TopNRanker({"min_count": 0, "prior_count": 0, "regional": False})).rows(w.request(1))
    assert w.ids(raw[0]) == [2, 3, 1]  # plain means 5.0, 4.5, 3.0
    gated = w.fit(TopNRanker({"min_count": 5, "prior_count": 0, "regional": False})).rows(w.request(1))
    assert w.ids(gated[0]) == [3, 1]  # B has 2 ratings: below the minimum count
    counts = w.fit(TopNRanker({"min_count": 0, "bayesian": False, "regional": False})).rows(w.request(1))
    assert w.ids(counts[0]) == [3, 1, 2]


def test_top_n_region_row_and_context_override() -> None:
    # region EU watches title 2 most, US watches title 1 most
    ev = [(u, 1, PLAY, T - DAY, 1.0, np.nan) for u in range(1, 6)] + [(u, 2, PLAY, T - DAY, 1.0, np.nan) for u in range(6, 9)]
    regions = {**{u: "US" for u in range(1, 6)}, **{u: "EU" for u in range(6, 9)}}
    regions[50] = "EU"
    w = Tiny(ev, regions=regions)
    r = w.fit(TopNRanker({"bayesian": False, "min_count": 1}))
    rows = r.rows(w.request(50))
    assert [x.row_id for x in rows] == ["top_n", "top_n:region:EU"]
    assert w.ids(rows[0]) == [1, 2] and w.ids(rows[1]) == [2]
    assert rows[1].reason.region == "EU" and rows[1].display_title == "Top in your region"
    over = r.rows(w.request(50, region="US"))
    assert over[1].row_id == "top_n:region:US" and w.ids(over[1]) == [1]
    assert len(r.rows(w.request(50, region="Mars"))) == 1  # unknown region: the overall row only


def test_top_n_excludes_seen_unless_configured_and_serves_cold_users() -> None:
    ev = [(u, t, PLAY, T - DAY, 1.0, np.nan) for t in (1, 2, 3) for u in range(t * 10, t * 10 + 5 - t)]
    w = Tiny(ev)
    seen_first = 10  # user 10 watched title 1
    rows = w.fit(TopNRanker({"bayesian": False, "min_count": 1})).rows(w.request(seen_first))
    assert 1 not in w.ids(rows[0])
    rows = w.fit(TopNRanker({"bayesian": False, "min_count": 1, "exclude_seen": False})).rows(w.request(seen_first))
    assert w.ids(rows[0])[0] == 1
    cold = w.fit(TopNRanker({"bayesian": False, "min_count": 1})).rows(w.request(424242))
    assert w.ids(cold[0]) == [1, 2, 3]


# ------------------------------------------------------------------------------ trending
def test_trending_prefers_recent_with_equal_counts() -> None:
    ev = [(u, 1, PLAY, T - 10 * DAY, 1.0, np.nan) for u in range(3)] + [(10 + u, 2, PLAY, T - DAY, 1.0, np.nan) for u in range(3)]
    w = Tiny(ev)
    rows = w.fit(TrendingRanker({"min_recent": 0})).rows(w.request(999))
    assert w.ids(rows[0]) == [2, 1]
    assert rows[0].scores[0] == pytest.approx(3 * 2 ** (-1 / 7), rel=1e-5)
    assert rows[0].scores[1] == pytest.approx(3 * 2 ** (-10 / 7), rel=1e-5)


@pytest.mark.parametrize(("half_life_days", "expected"), [(7, [2, 1]), (28, [1, 2])])
def test_trending_follows_the_half_life(half_life_days: int, expected: list[int]) -> None:
    # title 1: 4 plays two weeks ago; title 2: 2 plays now.
    # half-life 7 d: 4 x 1/4 = 1 < 2; half-life 28 d: 4 x 2^-0.5 = 2.83 > 2.
    ev = [(u, 1, PLAY, T - 14 * DAY, 1.0, np.nan) for u in range(4)] + [(10 + u, 2, PLAY, T, 1.0, np.nan) for u in range(2)]
    w = Tiny(ev, half_life=half_life_days * DAY)
    rows = w.fit(TrendingRanker({"min_recent": 0})).rows(w.request(999))
    assert w.ids(rows[0]) == expected


def test_trending_min_recent_drops_noise() -> None:
    ev = [(u, 1, PLAY, T, 1.0, np.nan) for u in range(5)] + [(9, 2, PLAY, T, 1.0, np.nan)]
    w = Tiny(ev)
    rows = w.fit(TrendingRanker({"min_recent": 2.0})).rows(w.request(999))
    assert w.ids(rows[0]) == [1]


# ------------------------------------------------------------------------------ continue watching
def test_continue_watching_partial_titles_by_recency() -> None:
    u = 1
    ev = [
        (u, 1, PLAY, T - 5 * DAY, 0.1, np.nan),
        (u, 2, PLAY, T - 4 * DAY, 0.5, np.nan),
        (u, 3, PLAY, T - 3 * DAY, 1.0, np.nan),  # finished
        (u, 4, PLAY, T - 2 * DAY, 0.02, np.nan),  # a sample, not a start
        (u, 5, PLAY, T - 1 * DAY, 0.9, np.nan),  # at the finish threshold: finished
        (u, 6, PLAY, T - 1 * DAY, 0.85, np.nan),
        (u, 7, PLAY, T - 9 * DAY, 0.3, np.nan),
        (u, 7, PLAY, T - 8 * DAY, 0.95, np.nan),  # later finished: latest progress wins
    ]
    w = Tiny(ev)
    rows = w.fit(ContinueWatchingRanker()).rows(w.request(u))
    assert len(rows) == 1 and rows[0].reason.kind == "continue_watching"
    assert w.ids(rows[0]) == [6, 2, 1]


def test_continue_watching_penalises_moving_on() -> None:
    # same progress and age; after title 1 the user played three other titles, after title 2 none
    u = 1
    ev = [(u, 1, PLAY, T - 3 * DAY, 0.5, np.nan)] + [(u, 10 + i, PLAY, T - 3 * DAY + 100 * (i + 1), 1.0, np.nan) for i in range(3)]
    ev += [(u, 2, PLAY, T - 3 * DAY + 1000, 0.5, np.nan)]
    w = Tiny(ev)
    cfg = {"recency_half_life_days": 10_000}  # recency practically equal
    assert w.ids(w.fit(ContinueWatchingRanker(cfg)).rows(w.request(u))[0]) == [2, 1]


def test_continue_watching_resume_without_progress_is_not_moving_on() -> None:
    # 1 at 60%, then 2 at 50%, then a play of 1 without progress: the user went back to 1, which
    # moved on from 2 but not from 1 itself (1: 0.8 / 1.1 = 0.727 beats 2: 0.75 / 1.1 = 0.682)
    u = 1
    ev = [(u, 1, PLAY, T - 3 * DAY, 0.6, np.nan), (u, 2, PLAY, T - 3 * DAY + 1, 0.5, np.nan), (u, 1, PLAY, T - 3 * DAY + 20, np.nan, np.nan)]
    w = Tiny(ev)
    row = w.fit(ContinueWatchingRanker({"recency_half_life_days": 10_000})).rows(w.request(u))[0]
    assert w.ids(row) == [1, 2]
    assert row.scores.tolist() == pytest.approx([0.8 / 1.1, 0.75 / 1.1], rel=1e-3)


def test_continue_watching_empty_without_progress() -> None:
    ev = [(1, t, RATING, T - DAY, np.nan, 4.0) for t in range(1, 6)] + [(1, 9, PLAY, T - DAY, np.nan, np.nan)]
    w = Tiny(ev)
    assert w.fit(ContinueWatchingRanker()).rows(w.request(1)) == []
    assert w.fit(ContinueWatchingRanker()).rows(w.request(12345)) == []


# ------------------------------------------------------------------------------ video to video
V2V_TITLES = pd.DataFrame(
    {
        "title_id": list(range(1, 12)),
        "name": [f"Movie {i}" for i in range(1, 12)],
        "year": [2000] * 11,
        "genres": [["Comedy"]] * 5 + [["Horror"]] * 5 + [["Comedy"]],
    }
)


def v2v_events() -> list[tuple]:
    ev = [(u, t, PLAY, T - 30 * DAY + t, 1.0, np.nan) for u in range(100, 120) for t in range(1, 6)]
    ev += [(u, t, PLAY, T - 30 * DAY + t, 1.0, np.nan) for u in range(200, 220) for t in range(6, 11)]
    # the user: loved comedies 1 and 2 (near duplicates of each other) and horror 6
    ev += [(1, 1, RATING, T - 3 * DAY, np.nan, 5.0), (1, 2, RATING, T - 2 * DAY, np.nan, 5.0), (1, 6, RATING, T - 4 * DAY, np.nan, 4.5)]
    ev += [(1, 9, RATING, T - DAY, np.nan, 1.0)]  # disliked: not an anchor
    return ev


def v2v_world() -> Tiny:
    """Comedies 1-5 co-watched by users 100-119, horrors 6-10 by users 200-219; title 11 is a comedy nobody saw."""
    return Tiny(v2v_events(), titles=V2V_TITLES)


def test_video_to_video_neighbours_share_genre_and_cowatching() -> None:
    w = v2v_world()
    r = w.fit(VideoToVideoRanker({"n_neighbours": 4}))
    cat = w.catalog
    nb = r.neighbours_[cat.index_of([1])[0]]
    assert set(cat.title_ids[nb].tolist()) == {2, 3, 4, 5}
    nb6 = r.neighbours_[cat.index_of([6])[0]]
    assert set(cat.title_ids[nb6].tolist()) == {7, 8, 9, 10}
    # the unseen comedy has content neighbours only: comedies
    nb11 = r.neighbours_[cat.index_of([11])[0]]
    assert set(cat.title_ids[nb11[nb11 >= 0]].tolist()) <= {1, 2, 3, 4, 5}


def _anchors_reference(idx: np.ndarray, nbrs: np.ndarray, nscores: np.ndarray, head: int, max_rows: int, max_sim: float, max_overlap: float) -> list[int]:
    """choose_anchors' greedy pass in plain Python: dicts of neighbours, one candidate at a time."""
    full = {int(t): {int(x): float(s) for x, s in zip(nbrs[t], nscores[t]) if x >= 0} for t in idx}
    heads = {int(t): {int(x): float(s) for x, s in zip(nbrs[t][:head], nscores[t][:head]) if x >= 0} for t in idx}

    def near(a: int, b: int) -> bool:
        if max(full[a].get(b, 0.0), full[b].get(a, 0.0)) > max_sim:
            return True
        shared = sum(min(s, heads[b][x]) for x, s in heads[a].items() if x in heads[b])
        return shared > max_overlap * max(min(sum(heads[a].values()), sum(heads[b].values())), 1e-12)

    chosen: list[int] = []
    for c, t in enumerate(idx.tolist()):
        if len(chosen) >= max_rows:
            break
        if not any(near(int(idx[j]), t) for j in chosen):
            chosen.append(c)
    return chosen


def test_video_to_video_greedy_anchors_equal_a_plain_reference() -> None:
    from rankers.video_to_video import _greedy_anchors

    rng = np.random.default_rng(5)
    for trial in range(60):
        n_titles, k = 40, 12
        nbrs = np.full((n_titles, k), -1, dtype=np.int64)
        nscores = np.zeros((n_titles, k), dtype=np.float32)
        for t in range(n_titles):
            m = int(rng.integers(0, k + 1))
            nbrs[t, :m] = rng.choice(np.setdiff1d(np.arange(n_titles), [t]), m, replace=False)
            nscores[t, :m] = np.sort(rng.random(m).astype(np.float32))[::-1]
        idx = rng.choice(n_titles, int(rng.integers(1, 25)), replace=False)
        head, max_rows = int(rng.integers(1, k + 1)), int(rng.integers(1, 8))
        sim, overlap = float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.05, 0.9))
        got = _greedy_anchors(idx, nbrs, nscores, head, max_rows, sim, overlap).tolist()
        assert got == _anchors_reference(idx, nbrs, nscores, head, max_rows, sim, overlap), trial


def test_video_to_video_anchors_are_engaged_and_not_near_duplicates() -> None:
    w = v2v_world()
    r = w.fit(VideoToVideoRanker({"max_rows": 3, "min_row_length": 1}))
    rows = r.rows(w.request(1))
    anchors = [x.reason.anchor_title_id for x in rows]
    assert anchors[0] == 2  # most recent strong engagement
    assert 1 not in anchors  # a near duplicate of 2
    assert 6 in anchors and 9 not in anchors  # engaged horror yes, disliked title no
    for x in rows:
        assert x.reason.kind == "because_you_watched"
        assert x.display_title == f"Because you watched Movie {x.reason.anchor_title_id}"
        assert not set(x.title_ids.tolist()) & {1, 2, 6, 9}  # nothing the user has seen


def test_video_to_video_no_anchor_the_user_rated_down_since() -> None:
    """The latest rating decides: a title rated 5 then 1, or watched to the end then rated 1, is no anchor."""
    ev = v2v_events()
    ev += [(1, 2, RATING, T - DAY // 2, np.nan, 1.0)]  # changed their mind about 2
    ev += [(1, 7, PLAY, T - 3 * DAY, 1.0, np.nan), (1, 7, RATING, T - DAY // 3, np.nan, 1.5)]  # finished 7, then rated it low
    ev += [(1, 8, RATING, T - 5 * DAY, np.nan, 2.0), (1, 8, RATING, T - DAY // 4, np.nan, 4.5)]  # and came round to 8
    w = Tiny(ev, titles=V2V_TITLES)
    r = w.fit(VideoToVideoRanker({"max_rows": 5, "min_row_length": 1, "max_anchor_similarity": 1.0, "max_anchor_overlap": 1.0}))
    anchors = {x.reason.anchor_title_id for x in r.rows(w.request(1))}
    assert anchors == {1, 6, 8}


def test_video_to_video_artifact_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    w = v2v_world()
    r = w.fit(VideoToVideoRanker({"min_row_length": 1}))
    loaded = VideoToVideoRanker.load(r.save(tmp_path / "v2v"))
    assert np.array_equal(loaded.neighbours_, r.neighbours_)
    assert [x.title_ids.tolist() for x in loaded.rows(w.request(1))] == [x.title_ids.tolist() for x in r.rows(w.request(1))]


def test_video_to_video_never_offers_a_title_nobody_had_watched() -> None:
    """Title 11 has no event by until: similar on content, but not yet known to exist (a MovieLens movies file lists it anyway)."""
    w = v2v_world()
    r = w.fit(VideoToVideoRanker({"n_neighbours": 10, "collaborative_weight": 0.3}))
    nb = r.neighbours_[w.catalog.index_of(list(range(1, 11)))]
    assert w.catalog.index_of([11])[0] not in nb
    assert (nb >= 0).sum() > 0


def test_video_to_video_finds_anchors_in_implicit_feedback_rated_all_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Plays exported as ratings of 1: the anchor threshold follows the data's scale, or the ranker never has a row."""
    implicit = Tiny([(u, t, RATING, ts, np.nan, 1.0) for u, t, _, ts, _, _ in v2v_events()], titles=V2V_TITLES)
    r = implicit.fit(VideoToVideoRanker({"max_rows": 3, "min_row_length": 1}))
    assert r.anchor_stars_ == 1.0
    rows = r.rows(implicit.request(1))
    assert rows and {x.reason.anchor_title_id for x in rows} <= {1, 2, 6, 9}
    assert VideoToVideoRanker.load(r.save(tmp_path / "v2v")).anchor_stars_ == 1.0
    # on a 0.5-5 scale the configured threshold holds: the 1-star title is no anchor
    assert v2v_world().fit(VideoToVideoRanker()).anchor_stars_ == 4.0


# ------------------------------------------------------------------------------ similarity helpers
def test_top_k_orders_breaks_ties_by_index_and_excludes() -> None:
    s = np.array([1.0, 3.0, 3.0, np.nan, 2.0, -np.inf, 3.0])
    idx, sc = top_k(s, 3)
    assert idx.tolist() == [1, 2, 6] and sc.tolist() == [3.0, 3.0, 3.0]
    idx, _ = top_k(s, 10, exclude=np.array([2]))
    assert idx.tolist() == [1, 6, 4, 0]  # nan and -inf never picked
    assert top_k(np.zeros(0), 5)[0].size == 0


def test_user_title_matrix_keeps_each_users_latest_titles() -> None:
    # user 0 interacted with titles 0, 1, 2, 1 (time order); cap 2 keeps the latest two distinct: 1 and 2
    m = user_title_matrix(np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 1, 0]), 2, 3, max_per_user=2)
    assert m.toarray().tolist() == [[0, 1, 1], [1, 0, 0]]


def test_top_n_user_who_saw_the_whole_head_still_gets_the_next_best() -> None:
    # title t is played by 400 - t users, so popularity falls with t; user 1 saw the 250 most popular
    ev = [(10_000 + u, t, PLAY, T - DAY, 1.0, np.nan) for t in range(1, 301) for u in range(400 - t)]
    ev += [(1, t, PLAY, T - DAY, 1.0, np.nan) for t in range(1, 251)]
    w = Tiny(ev)
    r = w.fit(TopNRanker({"bayesian": False, "min_count": 1, "row_length": 3}))
    assert w.ids(r.rows(w.request(1))[0]) == [251, 252, 253]
    assert w.ids(r.rows(w.request(2))[0]) == [1, 2, 3]


def test_neighbours_do_not_depend_on_fit_threads() -> None:
    from rankers.similarity import neighbours, row_top_k

    scores = np.random.default_rng(5).random((50, 50)).astype(np.float32)

    def block(a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return row_top_k(scores[a:b], 8)

    one = neighbours(50, 5, block, block_size=7, threads=1)
    three = neighbours(50, 5, block, block_size=7, threads=3)
    np.testing.assert_array_equal(one[0], three[0])
    np.testing.assert_array_equal(one[1], three[1])
    assert (one[0] >= 0).all()


def test_top_n_equal_averages_go_to_the_more_watched_title() -> None:
    # mean rating 3: titles 1 and 2 have none (both at the prior mean, 3.0); 2 is watched more than 1
    ev = ratings(3, 5.0, 5) + ratings(4, 1.0, 5, 2000) + plays(-1, 1, n=6) + plays(-2, 2, n=12)
    w = Tiny(ev)
    rows = w.fit(TopNRanker({"regional": False})).rows(w.request(1))
    assert w.ids(rows[0]) == [3, 2, 1, 4]  # 3.4, 3.0, 3.0, 2.6


def test_trending_never_lists_a_title_nobody_played_even_without_a_minimum() -> None:
    titles = pd.DataFrame({"title_id": [1, 2, 3], "name": ["a", "b", "c"]})  # 3: in the catalog, never played
    w = Tiny(plays(-1, 1, n=3) + plays(-2, 2), titles=titles)
    rows = w.fit(TrendingRanker({"min_recent": 0})).rows(w.request(999))
    assert w.ids(rows[0]) == [1, 2]


def test_continue_watching_start_is_a_start_and_old_partial_plays_drop() -> None:
    u = 1
    ev = [
        (u, 1, PLAY, T - DAY, 0.05, np.nan),  # exactly at ``start``: started
        (u, 2, PLAY, T - 100 * DAY, 0.5, np.nan),  # within max_age_days (180)
        (u, 3, PLAY, T - 200 * DAY, 0.5, np.nan),  # older: dropped
    ]
    w = Tiny(ev)
    rows = w.fit(ContinueWatchingRanker()).rows(w.request(u))
    assert w.ids(rows[0]) == [1, 2]
    assert w.ids(w.fit(ContinueWatchingRanker({"max_age_days": 250})).rows(w.request(u))[0]) == [1, 2, 3]


def test_top_k_breaks_ties_at_the_cut_by_index() -> None:
    """Titles tied at the k-th score: the lower indices make it in, whatever argpartition picks (a plain sort as reference)."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(2, 400))
        s = rng.integers(0, 4, n).astype(np.float64)
        k = int(rng.integers(1, n))
        idx, _ = top_k(s, k)
        assert idx.tolist() == np.lexsort((np.arange(n), -s))[:k].tolist()


def test_top_k_of_float32_scores_matches_a_float64_sort_with_seen_nan_and_inf() -> None:
    """float32 scores as the rankers make them, with -inf for seen titles, NaN and +inf: the same titles and order as a
    float64 sort of the finite ones, ties by index (top_k no longer copies them to float64)."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(2, 300))
        s = (rng.integers(0, 6, n) / 7).astype(np.float32)
        s[rng.random(n) < 0.2] = -np.inf
        if rng.random() < 0.5:
            s[rng.random(n) < 0.1] = rng.choice([np.nan, np.inf])
        k = int(rng.integers(1, n + 2))
        idx, sc = top_k(s, k)
        ref = s.astype(np.float64)
        ok = np.flatnonzero(np.isfinite(ref))
        want = ok[np.lexsort((ok, -ref[ok]))][:k]
        assert idx.tolist() == want.tolist() and sc.dtype == np.float32 and sc.tolist() == s[want].tolist()


def test_top_k_of_float32_scores_works_in_their_dtype() -> None:
    """Every personalised row's pool is top_k of the catalog's float32 scores (c24623f): a float64 copy of them, and a
    second one to turn the seen titles' -inf into -inf, made rows() 15% slower on 60k titles (bench/rankers_speed.py,
    p50 1.6 -> 1.9 ms). The cost is its memory traffic: at most the argpartition of the negated scores, about 3x them."""
    import tracemalloc

    rng = np.random.default_rng(3)
    s = rng.random(60_000).astype(np.float32)
    s[rng.integers(0, s.size, 50)] = -np.inf  # titles the user has seen
    top_k(s, 1000)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        top_k(s, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4.5 * s.nbytes, peak / s.nbytes  # 6.3x with the float64 copies


def test_not_in_never_excludes_padding() -> None:
    assert not_in(np.array([-1, 0, 3, 2]), np.array([3])).tolist() == [True, True, False, True]


def test_no_title_is_its_own_neighbour_with_co_watching_alone() -> None:
    # every user watched titles 1-4 together: each co-occurs with itself most of all
    # (in a catalog of 100, so the co-occurrence is sparse and goes to ``neighbours`` as it is)
    ev = [(u, t, PLAY, T - DAY, 1.0, np.nan) for u in range(6) for t in (1, 2, 3, 4)]
    w = Tiny(ev, titles=pd.DataFrame({"title_id": range(1, 101), "name": [f"T{i}" for i in range(1, 101)]}))
    r = w.fit(VideoToVideoRanker({"collaborative_weight": 1.0, "shrinkage": 0.0, "n_neighbours": 4}))
    nb = r.neighbours_
    assert (nb != np.arange(nb.shape[0])[:, None]).all()
    assert sorted(nb[0, :3].tolist()) == [1, 2, 3] and nb[0, 3] == -1  # title 1's: the other three, and no more


def test_video_to_video_anchors_come_from_the_latest_titles_and_fade_by_the_half_life() -> None:
    # user 1 rated titles 1..10 five stars, one a day, title 10 last (a day ago); others co-watched all ten
    u = 1
    ev = [(u, t, RATING, T - (11 - t) * DAY, np.nan, 5.0) for t in range(1, 11)]
    ev += [(100 + v, t, PLAY, T - 50 * DAY, 1.0, np.nan) for v in range(3) for t in range(1, 11)]
    w = Tiny(ev)
    r = w.fit(VideoToVideoRanker({"anchor_pool": 3, "anchor_half_life_days": 30}))
    idx, score = r.anchor_scores(w.log.user_state(u, T))
    ids = w.catalog.title_ids[idx]
    assert ids.tolist() == [10, 9, 8]  # the 3 latest of the 10, the most recent first
    # engagement 5 / 5 = 1, times 0.25 + 0.75 x 2^-(age / 30 days)
    assert score.tolist() == pytest.approx((0.25 + 0.75 * 2.0 ** (-(11 - ids) / 30)).tolist())


def test_content_similarity_ignores_tags_no_other_title_has() -> None:
    """A tag on one title only says nothing about its neighbours: two titles sharing their one common tag are a full tag match."""
    titles = pd.DataFrame({"title_id": [1, 2, 3], "name": list("abc"), "tags": [("dark", "only-a"), ("dark",), ("x",)]})
    sim = content_features(Catalog.from_frames(titles)).against(slice(0, 3), np.arange(3))
    assert sim[0, 1] == pytest.approx(0.15) and sim[1, 1] == pytest.approx(0.15)  # the tag block's weight, as for B with itself
    assert sim[2].tolist() == [0.0, 0.0, 0.0]  # C's only tag is its own: no tag features at all


def test_trending_min_recent_is_a_minimum_a_title_may_meet() -> None:
    ev = [(u, 1, PLAY, T, 1.0, np.nan) for u in range(5)] + [(10 + u, 2, PLAY, T, 1.0, np.nan) for u in range(2)]
    w = Tiny(ev)
    assert w.world.decayed[w.catalog.index_of(np.array([2]))[0]] == 2.0  # two plays now: exactly 2
    rows = w.fit(TrendingRanker({"min_recent": 2.0})).rows(w.request(999))
    assert w.ids(rows[0]) == [1, 2]


def test_video_to_video_row_of_exactly_min_row_length_is_kept() -> None:
    # title 1's neighbours are 2-5; the user saw 2, leaving 3 = min_row_length
    ev = [(100 + v, t, PLAY, T - 50 * DAY, 1.0, np.nan) for v in range(3) for t in range(1, 6)]
    ev += [(1, 2, PLAY, T - 3 * DAY, 1.0, np.nan), (1, 1, RATING, T - 2 * DAY, np.nan, 5.0)]
    w = Tiny(ev)
    r = w.fit(VideoToVideoRanker({"min_row_length": 3}))
    rows = r.rows(w.request(1))
    assert [(x.reason.anchor_title_id, sorted(w.ids(x))) for x in rows] == [(1, [3, 4, 5])]
    assert w.fit(VideoToVideoRanker({"min_row_length": 4})).rows(w.request(1)) == []  # one short of the minimum: no row
