"""The compiled tree walk gives exactly LightGBM's predictions (missing values, categories, one-leaf trees)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from homepage.pagebuilder.forest import Forest


def _data(rng: np.random.Generator, n: int) -> np.ndarray:
    X = rng.normal(size=(n, 6))
    X[:, 0] = rng.integers(0, 40, n)  # categorical, many categories (several bitset words)
    X[:, 1] = rng.integers(0, 5, n)  # categorical, few
    X[:, 5] = rng.integers(0, 3, n)  # numerical, with many exact zeros
    X[rng.random(X.shape) < 0.05] = np.nan
    return X


def _probe(rng: np.random.Generator, booster: lgb.Booster, n: int) -> np.ndarray:
    """Rows with unseen, negative and fractional categories, NaN, zeros, and every numerical threshold exactly."""
    X = _data(rng, n)
    X[:, 0] = rng.integers(-3, 80, n) + rng.choice([0.0, 0.5], n)
    X[:, 1] = rng.integers(-1, 7, n)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    dump = booster.dump_model()
    cuts: list[tuple[int, float]] = []

    def walk(t: dict) -> None:
        if "split_feature" in t:
            if t["decision_type"] == "<=":
                cuts.append((t["split_feature"], t["threshold"]))
            walk(t["left_child"])
            walk(t["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    for i, (f, th) in enumerate(cuts[: n // 2]):
        X[2 * i, f] = th
        # a threshold of +-inf is dumped (and saved in model.txt) as +-1e300: only inputs beyond it would differ
        X[2 * i + 1, f] = np.nextafter(th, np.inf) if abs(th) < 1e300 else th
    return X


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}, {"use_missing": False}, {"objective": "lambdarank"}])
def test_predictions_equal_lightgbm_bit_for_bit(params: dict) -> None:
    rng = np.random.default_rng(len(params))
    X = _data(rng, 6000)
    y = ((np.sin(X[:, 0]) + (X[:, 1] == 2) + np.nan_to_num(X[:, 2]) + (X[:, 5] == 0)) > 0.7).astype(int)
    base = {"objective": "binary", "verbose": -1, "num_leaves": 31, "min_data_in_leaf": 20, "seed": 1, "num_threads": 1, **params}
    kw = {"group": np.full(60, 100)} if base["objective"] == "lambdarank" else {}
    booster = lgb.train(base, lgb.Dataset(X, y, categorical_feature=[0, 1], **kw), 40)
    forest = Forest.from_booster(booster)
    assert forest.cat_bits.size > 0, "the model has categorical splits"
    Xt = _probe(rng, booster, 4000)
    np.testing.assert_array_equal(forest.predict(Xt), booster.predict(Xt, raw_score=True))
    # float32 input, read through a column map, as the page model reads its stage matrix
    wide = np.zeros((Xt.shape[0], 9), dtype=np.float32)
    cols = np.array([8, 0, 3, 1, 7, 2])
    wide[:, cols] = np.where(np.abs(Xt) > 1e38, 0.0, Xt)  # the +-1e300 probes do not fit in float32
    np.testing.assert_array_equal(forest.predict(wide, cols), booster.predict(wide[:, cols], raw_score=True))


def test_best_iteration_and_one_leaf_trees() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] + 0.1 * rng.normal(size=400)
    valid = lgb.Dataset(X[:100], y[:100])
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "learning_rate": 0.5, "min_data_in_leaf": 5, "num_threads": 1},
        lgb.Dataset(X[100:], y[100:]),
        200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(3, verbose=False)],
        keep_training_booster=True,
    )
    assert 0 < booster.best_iteration < booster.current_iteration()
    forest = Forest.from_booster(booster)
    assert forest.roots.size == booster.best_iteration
    np.testing.assert_array_equal(forest.predict(X), booster.predict(X))
    # a model that cannot split: every tree is a single leaf
    flat = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 1000}, lgb.Dataset(X, y), 5)
    f = Forest.from_booster(flat)
    assert (f.roots < 0).all()
    np.testing.assert_array_equal(f.predict(X), flat.predict(X))


def test_wrong_columns_are_refused() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    forest = Forest.from_booster(lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, X[:, 0]), 3))
    with pytest.raises(ValueError, match="reads 3 features"):
        forest.predict(X[:, :2])
    with pytest.raises(ValueError, match="reads 3 features"):
        forest.predict(X, np.array([0, 1, 5]))
    with pytest.raises(ValueError, match="reads 3 features"):
        forest.predict(X, np.array([0, 1]))
