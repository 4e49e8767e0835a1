"""The artwork selector: stable choices across visits, exact propensities, learning, save/load, context."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artwork.context import UserContextBuilder
from artwork.features import design, score
from artwork.feedback import LoggedFeedback
from artwork.selector import ArtworkSelector
from homepage.catalog import Catalog
from homepage.errors import HomepageError
from homepage.state import PLAY, UserState

GENRES = ("Action", "Comedy", "Drama")
DAY = 86_400
NOW = 1_700_000_000


def toy_catalog(n_titles: int = 60) -> Catalog:
    """Titles of one genre each; every title has a variant emphasising each genre, plus a neutral one."""
    titles = pd.DataFrame(
        {
            "title_id": np.arange(1, n_titles + 1),
            "name": [f"T{i}" for i in range(n_titles)],
            "genres": [[GENRES[i % 3]] for i in range(n_titles)],
            "cast": [[f"A{i % 7}", f"A{(i + 3) % 7}"] for i in range(n_titles)],
        }
    )
    rows = []
    for i in range(n_titles):
        tid = i + 1
        rows.append((f"{tid}-0", tid, None, None, "neutral"))
        for j, g in enumerate(GENRES):
            rows.append((f"{tid}-{j + 1}", tid, g, None, ("dark", "comedic", "bright")[j]))
        if i % 2:  # some titles have a fifth, cast-led variant: uneven choice sets
            rows.append((f"{tid}-4", tid, None, f"A{i % 7}", "neutral"))
    variants = pd.DataFrame(rows, columns=["variant_id", "title_id", "emphasis_genre", "featured_cast", "tone"])
    variants["image_url"] = ""
    return Catalog.from_frames(titles, variants)


def user_state(user_id: int, catalog: Catalog, fav: int, n: int = 12) -> UserState:
    idx = np.flatnonzero(catalog.genre_matrix[:, fav])[:n].astype(np.int64)
    ts = NOW - DAY * np.arange(len(idx), 0, -1, dtype=np.int64)
    return UserState(
        user_id, NOW, None, catalog.title_ids[idx], idx, ts,
        np.full(len(idx), PLAY, np.int8), np.full(len(idx), np.nan, np.float32), np.full(len(idx), 1.0, np.float32),
    )


def play_prob(fav: np.ndarray, catalog: Catalog, titles: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Ground truth of the toy: a variant emphasising the user's favourite genre is played far more."""
    emph = np.array([[GENRES.index(v.emphasis_genre) if isinstance(v.emphasis_genre, str) else -1 for v in vs] + [-1] * (5 - len(vs)) for vs in catalog.variants])
    return 0.05 + 0.30 * (emph[titles, actions] == fav)


@pytest.fixture(scope="module")
def world() -> tuple[Catalog, np.ndarray, np.ndarray]:
    cat = toy_catalog()
    builder = UserContextBuilder().prepare(cat)
    fav = np.arange(90) % 3
    ctx = builder.build_many([user_state(u, cat, int(f)) for u, f in enumerate(fav)])
    return cat, fav, ctx


@pytest.fixture(scope="module")
def fitted(world: tuple[Catalog, np.ndarray, np.ndarray]) -> ArtworkSelector:
    """Trained on uniform-random logs over the first 40 titles only."""
    cat, fav, ctx = world
    rng = np.random.default_rng(0)
    n = 30_000
    user = rng.integers(0, len(fav), n)
    title = rng.integers(0, 40, n)
    k = np.array([len(v) for v in cat.variants])[title]
    action = (rng.random(n) * k).astype(np.int64)
    reward = (rng.random(n) < play_prob(fav[user], cat, title, action)).astype(np.float64)
    logs = LoggedFeedback(action, reward, 1.0 / k, 5, title_idx=title, user_id=user, n_choices=k)
    return ArtworkSelector(epsilon=0.1).fit(logs, ctx, cat, context_row=user)


def test_context_reflects_history(world: tuple[Catalog, np.ndarray, np.ndarray]) -> None:
    cat, fav, ctx = world
    b = UserContextBuilder().prepare(cat)
    assert not b.build(UserState.empty(1, NOW)).any()  # cold user: all zeros
    for u in range(3):
        assert np.argmax(ctx[u, :3]) == fav[u]  # long-term genre block
        assert np.argmax(ctx[u, 3:6]) == fav[u]  # recent block
    old = user_state(5, cat, 0)
    recent = UserState(5, NOW + 200 * DAY, None, old.title_ids, old.title_idx, old.ts, old.kinds, old.stars, old.progress)
    # half a year later the recent block has faded much more than the long-term one
    assert b.build(recent)[3] < 0.5 * b.build(old)[3]
    assert b.build(recent)[0] > 0.5 * b.build(old)[0]


def test_context_lift_equals_the_sparse_product() -> None:
    """The compiled history sum is ``M[rows].T @ weights`` (repeated and absent rows included)."""
    import scipy.sparse as sp

    from artwork.context import _weighted_row_sum

    rng = np.random.default_rng(0)
    m = sp.random(300, 40, density=0.05, format="csr", random_state=1)
    for n in (0, 1, 7, 500):
        rows, w = rng.integers(0, 300, n), rng.random(n)
        expected = m[rows].T @ w if n else np.zeros(40)
        np.testing.assert_allclose(_weighted_row_sum(m.indptr, m.indices, m.data, rows, w, 40), expected, rtol=1e-12, atol=1e-15)


def test_a_user_sees_the_same_artwork_on_every_visit_within_the_period(
    world: tuple[Catalog, np.ndarray, np.ndarray], fitted: ArtworkSelector
) -> None:
    cat, _, ctx = world
    sel = copy.copy(fitted)
    sel.epsilon = 0.5  # lots of exploration, so flicker would show
    page = np.arange(60).reshape(6, 10)
    period_start = (NOW // sel.stable_period) * sel.stable_period
    visits = [period_start + s for s in (0, 3_600, DAY, sel.stable_period - 1)]
    choices = [sel.choose(ctx[7], page, user_id=7, now=t) for t in visits]
    for c in choices[1:]:
        np.testing.assert_array_equal(c.variant_ids, choices[0].variant_ids)
        np.testing.assert_array_equal(c.propensity, choices[0].propensity)
    assert choices[0].explored.any()
    nxt = sel.choose(ctx[7], page, user_id=7, now=period_start + sel.stable_period)
    assert (nxt.variant_ids != choices[0].variant_ids).any()  # a new period brings new draws
    other = sel.choose(ctx[7], page, user_id=8, now=visits[0])
    assert (other.variant_ids != choices[0].variant_ids).any()  # draws are per user


def test_propensities_are_exact_and_exploration_rate_is_configurable(
    world: tuple[Catalog, np.ndarray, np.ndarray], fitted: ArtworkSelector
) -> None:
    cat, _, ctx = world
    page = np.arange(60).reshape(6, 10)
    probs = fitted.action_probabilities(np.repeat(ctx[3:4], 60, axis=0), page.ravel(), user_ids=np.full(60, 3))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    explored, counts = 0, np.zeros_like(probs)
    n_visits = 400
    for v in range(n_visits):
        c = fitted.choose(ctx[3], page, user_id=3, now=NOW + v * fitted.stable_period)
        pos = c.variant_pos.ravel()
        np.testing.assert_allclose(c.propensity.ravel(), probs[np.arange(60), pos])
        counts[np.arange(60), pos] += 1
        explored += c.explored.sum()
    assert explored / (n_visits * 60) == pytest.approx(0.1, abs=0.01)
    assert np.abs(counts / n_visits - probs).max() < 0.06  # the hashed draws follow the stated distribution


def test_learns_and_generalises_to_titles_never_logged(
    world: tuple[Catalog, np.ndarray, np.ndarray], fitted: ArtworkSelector
) -> None:
    cat, fav, ctx = world
    unseen = np.arange(40, 60)  # no logged impression of these titles
    for u in range(9):
        probs = fitted.action_probabilities(np.repeat(ctx[u : u + 1], unseen.size, axis=0), unseen, epsilon=0.0)
        greedy = probs.argmax(axis=1)
        hit = play_prob(np.full(unseen.size, fav[u]), cat, unseen, greedy)
        assert (hit > 0.3).all(), u  # picks the favourite-genre variant on every unseen title


def test_fast_path_equals_explicit_features(
    world: tuple[Catalog, np.ndarray, np.ndarray], fitted: ArtworkSelector
) -> None:
    cat, _, ctx = world
    titles = np.arange(60)
    rows = np.arange(60) % len(ctx)
    s = score(fitted.theta_, ctx, rows, titles, fitted.table_)
    for k in range(4):
        x = design(ctx, rows, titles, np.full(60, k), fitted.table_)
        np.testing.assert_allclose(s[:, k], x @ fitted.theta_, rtol=1e-6, atol=1e-9)
    # the serving fast path includes the user's own weights exactly like the batch path
    assert np.abs(fitted.user_weights(np.array([0]))).sum() > 0
    from artwork.features import score_one

    for user in (0, 10_000):  # a trained user, and one the model never saw (shared model only)
        fast = score_one(fitted.theta_, ctx[0].astype(np.float64), titles, fitted.table_, fitted._static_, fitted.user_weights(np.array([user]))[0])
        full = fitted.scores(ctx[:1], np.zeros(60, np.int64), titles, user_ids=np.full(60, user))
        np.testing.assert_allclose(fast[np.isfinite(full)], full[np.isfinite(full)], rtol=1e-6, atol=1e-9)
        c = fitted.choose(ctx[0], titles.reshape(6, 10), user_id=user, now=NOW)
        greedy = full.argmax(axis=1).reshape(6, 10)
        assert (c.variant_pos[~c.explored] == greedy[~c.explored]).all()


def test_padding_cells_and_titles_without_variants(fitted: ArtworkSelector, world: tuple[Catalog, np.ndarray, np.ndarray]) -> None:
    _, _, ctx = world
    page = np.array([[0, 1, -1], [-1, -1, -1]])
    c = fitted.choose(ctx[0], page, user_id=1, now=NOW)
    assert c.variant_pos.shape == (2, 3)
    assert (c.variant_pos[page < 0] == -1).all() and (c.variant_ids[page < 0] == "").all()
    assert (c.propensity[page < 0] == 1.0).all()
    assert all(v.startswith(f"{t + 1}-") for v, t in zip(c.variant_ids[0, :2], page[0, :2]))


def test_save_load_round_trip_and_refusal(tmp_path: Path, fitted: ArtworkSelector, world: tuple[Catalog, np.ndarray, np.ndarray]) -> None:
    cat, _, ctx = world
    fitted.save(tmp_path / "art")
    back = ArtworkSelector.load(tmp_path / "art", cat)
    page = np.arange(60).reshape(6, 10)
    a = fitted.choose(ctx[2], page, user_id=2, now=NOW)
    b = back.choose(ctx[2], page, user_id=2, now=NOW)
    np.testing.assert_array_equal(a.variant_ids, b.variant_ids)
    np.testing.assert_allclose(a.propensity, b.propensity)
    man = json.loads((tmp_path / "art.json").read_text())
    man["feature_names"] = man["feature_names"][:-1]
    (tmp_path / "art.json").write_text(json.dumps(man))
    with pytest.raises(HomepageError, match="feature_names"):
        ArtworkSelector.load(tmp_path / "art", cat)
    with pytest.raises(HomepageError, match="not found"):
        ArtworkSelector.load(tmp_path / "missing", cat)


def test_choose_before_prepare_is_an_error() -> None:
    with pytest.raises(HomepageError, match="prepare"):
        ArtworkSelector().choose(np.zeros(3), np.zeros((1, 1), np.int64), 1, NOW)


def test_cast_by_genre_context_reaches_actors_the_user_never_watched() -> None:
    """Two unwatched actors look the same to the cast lift; the genre of their films tells them apart."""
    genres = [["Drama"], ["Drama"], ["Drama"], ["Comedy"], ["Comedy"], ["Comedy"]]
    titles = pd.DataFrame({"title_id": np.arange(1, 7), "name": [f"T{i}" for i in range(6)], "genres": genres,
                           "cast": [["W"], ["W"], ["D"], ["X"], ["X"], ["C"]]})
    variants = pd.DataFrame({"variant_id": [f"{i}-0" for i in range(1, 7)], "title_id": np.arange(1, 7),
                             "emphasis_genre": None, "featured_cast": None, "tone": "neutral", "image_url": ""})
    cat = Catalog.from_frames(titles, variants)
    b = UserContextBuilder().prepare(cat)
    idx = np.array([0, 1], np.int64)  # watched the two Drama titles with W
    state = UserState(1, NOW, None, cat.title_ids[idx], idx, NOW - DAY * np.array([2, 1]), np.full(2, PLAY, np.int8),
                      np.full(2, np.nan, np.float32), np.ones(2, np.float32))
    ctx = b.build(state)
    lay = b.layout_
    assert ctx.shape == (lay.dim,) == (2 * len(lay.genres) + 2 * len(lay.cast),)
    cast, by_genre = ctx[lay.cast_slice], ctx[lay.cast_genre_slice]
    d, c = lay.cast.index("D"), lay.cast.index("C")
    assert cast[d] == cast[c]  # neither watched: the direct lift cannot tell them apart
    assert by_genre[d] > 0 > by_genre[c]  # D makes Drama, which this user watches
    assert not b.build(UserState.empty(2, NOW)).any()  # a cold user is still all zeros
