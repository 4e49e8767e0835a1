"""A LightGBM forest as flat arrays, evaluated by a compiled (numba) tree walk.

``Booster.predict`` costs ~160 us a call whatever the batch, and a 20-row page makes 20
calls. The trees are read once from the booster's JSON dump into flat node arrays and
walked by one njit function: the same decisions as LightGBM's ``Tree::Decision`` (missing
values by the split's missing type and default direction, categorical splits by the set
of categories that go left, inputs within 1e-35 of zero read as zero as its predictor
does) and the same summation order, so predictions are identical,
not merely close (``tests/test_forest.py``). No per-model compilation step: the walker is
compiled once per machine (numba's on-disk cache) and reads any model's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from homepage.kernel_cache import cached_njit

# flags of a node: missing type in the low two bits, then default-left and categorical
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
_DEFAULT_LEFT = 4
_CATEGORICAL = 8
_MISSING_TYPES = {"None": _MISSING_NONE, "Zero": _MISSING_ZERO, "NaN": _MISSING_NAN}
_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float (1.0000000180025095e-35)


@dataclass(frozen=True, eq=False)
class Forest:
    """Every tree's nodes in flat arrays; a child < 0 is leaf ``-child - 1``."""

    roots: np.ndarray  # (trees,) int32: the root node of each tree, or a leaf (< 0) for a one-leaf tree
    feature: np.ndarray  # (nodes,) int32: the split feature, an index into the model's features
    threshold: np.ndarray  # (nodes,) float64
    flags: np.ndarray  # (nodes,) uint8
    left: np.ndarray  # (nodes,) int32
    right: np.ndarray  # (nodes,) int32
    cat_start: np.ndarray  # (nodes,) int32: first word of a categorical node's left-going set
    cat_words: np.ndarray  # (nodes,) int32: its number of 32-bit words
    cat_bits: np.ndarray  # (words,) uint32
    leaf_value: np.ndarray  # (leaves,) float64
    num_features: int

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> Forest:
        """The trees ``booster.predict`` uses (the best iteration when there is one)."""
        dump = booster.dump_model()
        if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("average_output", False):
            raise ValueError("only single-output, summed forests are supported")
        nodes: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "flags", "left", "right", "cat_start", "cat_words")}
        bits: list[int] = []
        leaves: list[float] = []

        def add(tree: dict[str, Any]) -> int:
            if "leaf_value" in tree and "split_feature" not in tree:
                leaves.append(float(tree["leaf_value"]))
                return -len(leaves)
            i = len(nodes["feature"])
            for column in nodes.values():
                column.append(0)
            nodes["feature"][i] = int(tree["split_feature"])
            flags = _MISSING_TYPES[tree.get("missing_type", "None")] | (_DEFAULT_LEFT if tree.get("default_left") else 0)
            if tree["decision_type"] == "==":
                cats = [int(c) for c in str(tree["threshold"]).split("||")]
                words = np.zeros(max(cats) // 32 + 1, dtype=np.uint64)
                for c in cats:
                    words[c // 32] |= np.uint64(1) << np.uint64(c % 32)
                nodes["cat_start"][i], nodes["cat_words"][i] = len(bits), len(words)
                bits.extend(int(w) for w in words)
                flags |= _CATEGORICAL
            elif tree["decision_type"] == "<=":
                nodes["threshold"][i] = float(tree["threshold"])
            else:
                raise ValueError(f"unknown decision type {tree['decision_type']!r}")
            nodes["flags"][i] = flags
            nodes["left"][i] = add(tree["left_child"])
            nodes["right"][i] = add(tree["right_child"])
            return i

        roots = [add(t["tree_structure"]) for t in dump["tree_info"]]
        return cls(
            roots=np.array(roots, dtype=np.int32),
            feature=np.array(nodes["feature"], dtype=np.int32),
            threshold=np.array(nodes["threshold"], dtype=np.float64),
            flags=np.array(nodes["flags"], dtype=np.uint8),
            left=np.array(nodes["left"], dtype=np.int32),
            right=np.array(nodes["right"], dtype=np.int32),
            cat_start=np.array(nodes["cat_start"], dtype=np.int32),
            cat_words=np.array(nodes["cat_words"], dtype=np.int32),
            cat_bits=np.array(bits, dtype=np.uint32),
            leaf_value=np.array(leaves, dtype=np.float64),
            num_features=int(dump["max_feature_idx"]) + 1,
        )

    def predict(self, X: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Raw scores of the rows of ``X``; feature j is column ``columns[j]`` of ``X`` (default j)."""
        cols = np.arange(X.shape[1] if X.ndim == 2 else 0, dtype=np.int64) if columns is None else columns
        return self.reader(cols)(X)

    def reader(self, columns: np.ndarray) -> ForestReader:
        """This forest bound to a column map, checked once (the page loop scores every stage through one)."""
        cols = np.ascontiguousarray(columns, dtype=np.int64)
        if cols.ndim != 1 or cols.size != self.num_features or (cols.size and cols.min() < 0):
            raise ValueError(f"the forest reads {self.num_features} features; got columns {cols.tolist()}")
        return ForestReader(self, cols, int(cols.max(initial=-1)) + 1)


@dataclass(frozen=True, eq=False)
class ForestReader:
    """A forest reading its features from given columns of a wider matrix."""

    forest: Forest
    columns: np.ndarray
    width: int  # the matrix must have at least this many columns

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] < self.width:
            raise ValueError(f"the forest reads {self.forest.num_features} features up to column {self.width - 1}; got a matrix of shape {X.shape}")
        f = self.forest
        out = np.empty(X.shape[0], dtype=np.float64)
        _walk(X, self.columns, f.roots, f.feature, f.threshold, f.flags, f.left, f.right, f.cat_start, f.cat_words, f.cat_bits, f.leaf_value, out)
        return out


@cached_njit(nogil=True)
def _walk(
    X: np.ndarray,
    cols: np.ndarray,
    roots: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    flags: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    cat_start: np.ndarray,
    cat_words: np.ndarray,
    cat_bits: np.ndarray,
    leaf_value: np.ndarray,
    out: np.ndarray,
) -> None:
    for i in range(X.shape[0]):
        acc = 0.0
        for t in range(roots.size):
            node = roots[t]
            while node >= 0:
                v = np.float64(X[i, cols[feature[node]]])
                if -_ZERO <= v <= _ZERO:  # LightGBM's predictor reads such inputs as absent, i.e. 0
                    v = 0.0
                fl = flags[node]
                if fl & _CATEGORICAL:
                    go_left = False
                    if -1.0 < v < 2147483648.0:  # NaN fails; LightGBM truncates toward zero, so -0.5 is category 0
                        c = np.int64(v)
                        w = c >> 5
                        if w < cat_words[node]:
                            go_left = ((cat_bits[cat_start[node] + w] >> np.uint32(c & 31)) & np.uint32(1)) != 0
                else:
                    missing = fl & 3
                    if np.isnan(v) and missing != _MISSING_NAN:
                        v = 0.0
                    if (missing == _MISSING_ZERO and -_ZERO <= v <= _ZERO) or (missing == _MISSING_NAN and np.isnan(v)):
                        go_left = (fl & _DEFAULT_LEFT) != 0
                    else:
                        go_left = v <= threshold[node]
                node = left[node] if go_left else right[node]
            acc += leaf_value[-node - 1]
        out[i] = acc
