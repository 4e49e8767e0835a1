"""The page model: a LightGBM LambdaRank booster over stage features, with a compiled predictor.

Plain ``Booster.predict`` costs ~160 us a call, and a 20-row page makes 20 calls; the
model is therefore compiled with lleaves (LLVM) when available (~25 us a call, identical
predictions), falling back to LightGBM. The model reads the ``MODEL_FEATURES`` columns of
the stage feature matrix; the manifest carries them in order with the vocabularies, and
loading refuses a model whose features differ from the code's.
"""

from __future__ import annotations

import ctypes
import json
import logging
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from homepage.errors import HomepageError
from homepage.pagebuilder.features import CATEGORICAL, COL, FEATURE_NAMES, MODEL_FEATURES

log = logging.getLogger(__name__)

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
        self._all_columns = bool(np.array_equal(self.columns, np.arange(len(FEATURE_NAMES))))
        self._compiled: Any = None
        self._forest: Any = None  # the compiled forest's C entry point, called without lleaves' per-call checks

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
        sets, names, callbacks = [train], ["train"], []
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
        Xm = X if self._all_columns else X[:, self.columns]
        if self._forest is not None and Xm.ndim == 2 and Xm.shape[1] == self.columns.size:
            # what lleaves' predict(n_jobs=1) does, minus its input conversions and checks (~20 us a call)
            data = np.ascontiguousarray(Xm, dtype=np.float64)
            out = np.zeros(data.shape[0], dtype=np.float64)
            self._forest(data.ctypes.data, out.ctypes.data, 0, data.shape[0])
            return out
        if self._compiled is not None:
            return self._compiled.predict(np.ascontiguousarray(Xm, dtype=np.float64), n_jobs=1)
        return self.booster.predict(Xm, num_threads=1)

    @staticmethod
    def _entry_point(compiled: Any) -> Any:
        """The compiled forest as a C function of (data, out, start, end); None if lleaves' layout is unknown."""
        try:
            if not (compiled.use_fp64 and compiled._n_classes == 1):
                return None
            address = ctypes.cast(compiled._c_entry_func, ctypes.c_void_p).value
        except Exception:  # a different lleaves version: use its public predict
            return None
        if not address:
            return None
        return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)(address)

    def compile(self, directory: Path) -> bool:
        """Compile with lleaves into ``directory/model.so`` (reused when present); False if unavailable."""
        try:
            import lleaves  # optional: needs llvmlite < 0.44
        except ImportError:
            return False
        model_file = Path(directory) / "model.txt"
        if not model_file.exists():
            self.booster.save_model(str(model_file))
        try:
            compiled = lleaves.Model(model_file=str(model_file))
            compiled.compile(cache=str(Path(directory) / "model.so"))
        except Exception as e:  # a broken toolchain must not stop serving
            log.warning("lleaves compilation failed, using LightGBM predict: %s", e)
            return False
        if compiled.num_feature() != self.columns.size:
            log.warning("compiled page model reads %d features, expected %d; using LightGBM predict", compiled.num_feature(), self.columns.size)
            return False
        self._compiled = compiled
        self._forest = self._entry_point(compiled)
        return True

    def save(self, directory: Path, compile: bool = True) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "model.txt"))
        (d / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        if compile:
            self.compile(d)
        return d

    @classmethod
    def load(cls, directory: Path, compile: bool = True) -> PageModel:
        d = Path(directory)
        try:
            manifest = json.loads((d / "manifest.json").read_text())
        except FileNotFoundError as e:
            raise HomepageError(f"{d}: page model has no manifest.json") from e
        if manifest.get("feature_names") != list(MODEL_FEATURES):
            theirs = manifest.get("feature_names")
            diff = sorted(set(theirs or []) ^ set(MODEL_FEATURES))
            raise HomepageError(f"{d}: page model features differ from the code's (differing: {diff or 'order'}); retrain it")
        booster = lgb.Booster(model_file=str(d / "model.txt"))
        model = cls(booster, tuple(manifest["ranker_vocab"]), tuple(manifest["kind_vocab"]), manifest)
        if compile:
            model.compile(d)
        return model
