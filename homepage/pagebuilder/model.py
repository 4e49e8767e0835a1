"""The page model: a LightGBM LambdaRank booster over stage features, scored by a compiled tree walk.

Plain ``Booster.predict`` costs ~160 us a call, and a 20-row page makes 20 calls; the
booster's trees are therefore scored by ``Forest`` (numba, a few us a call, identical
predictions). The model reads the ``MODEL_FEATURES`` columns of the stage feature matrix;
the manifest carries them in order with the vocabularies. A model reads its columns by name,
so loading takes one trained on some of the code's features (a bundle from before a feature
was added, the baseline of a feature experiment) and refuses one that reads a feature the
code does not compute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from homepage.errors import HomepageError
from homepage.pagebuilder.features import CATEGORICAL, COL, MODEL_FEATURES
from homepage.pagebuilder.forest import Forest

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [1, 3],
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "lambda_l2": 10.0,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 10,
    "verbose": -1,
    "seed": 7,
    "deterministic": True,
    "num_threads": 2,
    # left to itself LightGBM times both histogram layouts and keeps the faster, so a busy machine
    # trained another model (leaf values differing in the last bits, and the pages with them)
    "force_row_wise": True,
}


class PageModel:
    """A fitted page model and the vocabularies its categorical features were coded with."""

    def __init__(self, booster: lgb.Booster, ranker_vocab: tuple[str, ...], kind_vocab: tuple[str, ...], manifest: dict[str, Any]) -> None:
        self.booster = booster
        self.features = tuple(manifest.get("feature_names", MODEL_FEATURES))
        self.columns = np.array([COL[f] for f in self.features], dtype=np.int64)
        self.ranker_vocab = ranker_vocab
        self.kind_vocab = kind_vocab
        self.manifest = manifest
        self.forest = Forest.from_booster(booster)
        self._read = self.forest.reader(self.columns)

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        ranker_vocab: tuple[str, ...],
        kind_vocab: tuple[str, ...],
        *,
        num_rounds: int = 300,
        params: dict[str, Any] | None = None,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        extra_manifest: dict[str, Any] | None = None,
        features: tuple[str, ...] = MODEL_FEATURES,
    ) -> PageModel:
        """Train LambdaRank on stage groups (``groups`` = rows per stage, in order).

        ``X`` has every stage feature (``FEATURE_NAMES``); the model uses the ``features`` columns.
        """
        p = {**DEFAULT_PARAMS, **(params or {})}
        cols = [COL[f] for f in features]
        cat = [f for f in features if f in CATEGORICAL]
        train = lgb.Dataset(X[:, cols], y, group=groups, feature_name=list(features), categorical_feature=cat, free_raw_data=False)
        # only the validation set is evaluated: NDCG on the training set each round fed nothing (early stopping skips it)
        sets: list[lgb.Dataset] = []
        names: list[str] = []
        callbacks: list[Any] = []
        if valid is not None:
            sets.append(lgb.Dataset(valid[0][:, cols], valid[1], group=valid[2], reference=train))
            names.append("valid")
            callbacks.append(lgb.early_stopping(30, verbose=False))
        booster = lgb.train(p, train, num_boost_round=num_rounds, valid_sets=sets, valid_names=names, callbacks=callbacks)
        manifest = {
            "feature_names": list(features),
            "categorical": cat,
            "ranker_vocab": list(ranker_vocab),
            "kind_vocab": list(kind_vocab),
            "params": {k: v for k, v in p.items() if k != "eval_at"},
            "best_iteration": booster.best_iteration or booster.current_iteration(),
            "train_groups": int(len(groups)),
            "train_rows": int(len(y)),
            **(extra_manifest or {}),
        }
        return cls(booster, ranker_vocab, kind_vocab, manifest)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of stage rows; ``X`` has every stage feature, the model reads its own columns."""
        return self._read(X)

    def save(self, directory: Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "model.txt"))
        (d / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        return d

    @classmethod
    def load(cls, directory: Path) -> PageModel:
        d = Path(directory)
        try:
            manifest = json.loads((d / "manifest.json").read_text())
        except FileNotFoundError as e:
            raise HomepageError(f"{d}: page model has no manifest.json") from e
        theirs = manifest.get("feature_names")
        if not isinstance(theirs, list) or not theirs:
            raise HomepageError(f"{d}: manifest.json has no feature_names list; retrain the bundle")
        unknown = sorted(str(f) for f in set(map(str, theirs)) - set(COL))
        if unknown:
            raise HomepageError(
                f"{d}: the page model reads features this code does not compute ({', '.join(unknown)}; the code's are FEATURE_NAMES "
                "in homepage/pagebuilder/features.py): retrain the bundle with this code, or use it with the code that trained it"
            )
        booster = lgb.Booster(model_file=str(d / "model.txt"))
        if booster.feature_name() != list(theirs):
            raise HomepageError(f"{d}: manifest.json's feature_names {theirs} are not the booster's {booster.feature_name()} (model.txt)")
        return cls(booster, tuple(manifest["ranker_vocab"]), tuple(manifest["kind_vocab"]), manifest)
