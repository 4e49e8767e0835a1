"""The artwork selector: an epsilon-greedy contextual bandit over each title's variants.

Greedy arm: the variant with the highest predicted play probability under the shared
linear model (:mod:`artwork.features`, trained by :mod:`artwork.training`). With
probability ``epsilon`` it explores instead, uniformly over the title's variants, so the
propensity of every choice is known exactly: (1 - epsilon) [greedy] + epsilon / K.

Stability: both random draws (explore or not, and which arm) are a hash of
(user id, title id, now // stable_period), so a user sees the same variant for a title on
every visit within a period, given the same model and context; a new period brings new
draws (and so, sometimes, new exploration).

Save/load: ``<path>.npz`` (arrays) and ``<path>.json`` (manifest), no pickle.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artwork.context import ContextLayout
from artwork.features import feature_names, n_features, score, score_one, user_dim, user_score
from artwork.feedback import LoggedFeedback
from artwork.training import fit_weights
from artwork.variant_table import VariantTable
from homepage.catalog import Catalog
from homepage.errors import HomepageError

FORMAT_VERSION = 2  # 2: the cast-by-genre context block and match features
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


_MASK = 0xFFFFFFFFFFFFFFFF


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised over uint64 arrays (wrap-around is intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """The same finaliser on one Python int (cheaper than numpy for a scalar)."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stable_uniforms(user_id: int, title_ids: np.ndarray, period: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent uniforms in [0, 1) per title, a pure function of (user, title, period, salt).

    One 64-bit hash per title; its high and low 32-bit halves give the two uniforms.
    """
    base = _mix_int(_mix_int(_mix_int(salt + 0x9E3779B97F4A7C15) + user_id) + period)
    with np.errstate(over="ignore"):
        h = _mix(title_ids.astype(np.uint64) * _GOLDEN + np.uint64(base))
    scale = 1.0 / 4294967296.0  # 2**-32
    return (h >> np.uint64(32)).astype(np.float64) * scale, (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * scale


@dataclass(frozen=True, eq=False)
class ArtworkChoice:
    """The artwork chosen for every cell of a page; padding cells have position -1, id "" and propensity 1."""

    variant_pos: np.ndarray  # int64 (R, C): position within the title's variant tuple
    variant_ids: np.ndarray  # str (R, C)
    propensity: np.ndarray  # float64 (R, C): probability the policy had of choosing this variant
    explored: np.ndarray  # bool (R, C)


class ArtworkSelector:
    """Epsilon-greedy contextual bandit over artwork variants with shared parameters across titles."""

    def __init__(
        self,
        epsilon: float = 0.05,
        stable_period: int = 7 * 86_400,
        ridge: float = 30.0,
        bias_prior: float = 200.0,
        user_prior: float = 10.0,
        salt: int = 0,
    ):
        self.epsilon = epsilon
        self.stable_period = stable_period
        self.ridge = ridge
        self.bias_prior = bias_prior
        self.user_prior = user_prior
        self.salt = salt

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise HomepageError(f"epsilon: {self.epsilon} is not in [0, 1]")
        if self.stable_period < 1:
            raise HomepageError(f"stable_period: {self.stable_period} must be at least 1 second")

    def prepare(self, catalog: Catalog) -> ArtworkSelector:
        """Encode ``catalog``'s variants once (padded arrays), keeping a fitted model's vocabularies."""
        self._check_params()
        layout = ContextLayout.of(catalog)
        tones = getattr(self, "tones_", None)
        if hasattr(self, "genres_") and tuple(self.genres_) != layout.genres:
            raise HomepageError(f"catalog: genres {layout.genres} differ from the model's {tuple(self.genres_)}")
        self.layout_ = layout
        self.table_ = VariantTable.of(catalog, layout, tones)
        self.tones_ = self.table_.tones
        self.genres_ = layout.genres
        if not hasattr(self, "theta_"):
            self.theta_ = np.zeros(n_features(len(self.genres_), len(self.tones_)))
        self.variant_bias_ = self._bias_for_table()
        self._static_ = np.where(self.table_.valid, self.variant_bias_, -np.inf)
        return self

    def _bias_for_table(self) -> np.ndarray:
        """The learnt per-variant offsets laid out on the current table (0 for variants never trained)."""
        out = np.zeros(self.table_.emphasis.shape)
        ids = getattr(self, "_bias_ids", None)
        if ids is None or ids.size == 0:
            return out
        order = np.argsort(ids)
        pos = np.searchsorted(ids, self.table_.variant_ids, sorter=order)
        pos = np.minimum(pos, ids.size - 1)
        hit = (ids[order[pos]] == self.table_.variant_ids) & self.table_.valid
        out[hit] = self._bias_values[order[pos[hit]]]
        return out

    def fit(
        self,
        logs: LoggedFeedback,
        contexts: np.ndarray,
        catalog: Catalog,
        context_row: np.ndarray | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ArtworkSelector:
        """Train on logged impressions (``logs.title_idx``, ``logs.action`` = variant position, reward = play)."""
        for name in ("theta_", "_bias_ids", "_bias_values", "tones_", "genres_", "user_ids_", "user_weights_"):
            self.__dict__.pop(name, None)
        self.prepare(catalog)
        if contexts.shape[1] != self.layout_.dim:
            raise HomepageError(f"contexts: {contexts.shape[1]} columns, the catalog's layout has {self.layout_.dim}")
        fitted = fit_weights(
            logs, contexts, self.table_, context_row, self.ridge, self.bias_prior, self.user_prior, progress
        )
        self.theta_ = fitted.theta
        self.user_ids_ = fitted.user_ids
        self.user_weights_ = fitted.user_weights
        valid = self.table_.valid
        self._bias_ids = self.table_.variant_ids[valid]
        self._bias_values = fitted.variant_bias[valid]
        self.variant_bias_ = self._bias_for_table()
        self._static_ = np.where(self.table_.valid, self.variant_bias_, -np.inf)
        self.n_train_rows_ = fitted.n_rows
        self.train_play_rate_ = fitted.train_play_rate
        return self

    # ------------------------------------------------------------------ scoring and policy
    def _need_prepared(self) -> None:
        if not hasattr(self, "table_"):
            raise HomepageError("ArtworkSelector: call prepare(catalog) or fit(...) before choosing")

    def user_weights(self, user_ids: np.ndarray) -> np.ndarray:
        """Each user's own weights (n, user_dim); zeros for users the model never saw."""
        p = user_dim(len(self.tones_))
        ids = getattr(self, "user_ids_", np.zeros(0, np.int64))
        user_ids = np.asarray(user_ids, np.int64)
        if ids.size == 0:
            return np.zeros((user_ids.size, p))
        pos = np.minimum(np.searchsorted(ids, user_ids), ids.size - 1)
        return np.where((ids[pos] == user_ids)[:, None], self.user_weights_[pos], 0.0)

    def without_users(self, user_ids: Iterable[int]) -> ArtworkSelector | None:
        """A copy without these users' own weights (an erasure), or None when the model has none of them.

        A copy, not a change in place: pages being built keep a consistent model, and the
        caller swaps the reference in one step.
        """
        ids = getattr(self, "user_ids_", None)
        gone = np.fromiter((int(u) for u in user_ids), np.int64)
        if ids is None or ids.size == 0 or gone.size == 0:
            return None
        keep = ~np.isin(ids, gone)
        if keep.all():
            return None
        out = copy.copy(self)
        out.user_ids_, out.user_weights_ = ids[keep], self.user_weights_[keep]
        return out

    def _user_row(self, user_id: int) -> np.ndarray | None:
        """One user's own weights, or None when the model has none for them (the fast path of ``user_weights``)."""
        ids = getattr(self, "user_ids_", None)
        if ids is None or ids.size == 0:
            return None
        i = int(np.searchsorted(ids, user_id))
        return self.user_weights_[i] if i < ids.size and ids[i] == user_id else None

    def scores(
        self, contexts: np.ndarray, rows: np.ndarray, titles: np.ndarray, user_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Predicted play probabilities (n, K) of each title's variants; -inf on padding.

        ``user_ids`` (n,) adds each user's own learnt weights; without it, the shared model only.
        """
        self._need_prepared()
        s = score(self.theta_, contexts, rows, titles, self.table_) + self.variant_bias_[titles]
        if user_ids is not None:
            s = s + user_score(self.user_weights(user_ids), contexts, rows, titles, self.table_)
        return s

    def action_probabilities(
        self,
        contexts: np.ndarray,
        titles: np.ndarray,
        context_row: np.ndarray | None = None,
        epsilon: float | None = None,
        user_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        """The policy's distribution (n, K) over each title's variants (averaged over its hashed draws)."""
        eps = self.epsilon if epsilon is None else epsilon
        rows = np.arange(titles.shape[0]) if context_row is None else np.asarray(context_row, np.int64)
        s = self.scores(contexts, rows, titles, user_ids)
        k = self.table_.n_variants[titles]
        greedy = np.argmax(s, axis=1)
        valid = self.table_.valid[titles]
        probs = np.where(valid, eps / np.maximum(k, 1)[:, None], 0.0)
        probs[np.arange(titles.shape[0]), greedy] += 1.0 - eps
        return probs

    def choose(self, context: np.ndarray, title_idx: np.ndarray, user_id: int, now: int) -> ArtworkChoice:
        """Artwork for every title of a page (R, C) of catalog indices (-1 = empty cell), in one call."""
        self._need_prepared()
        shape = title_idx.shape
        flat = title_idx.reshape(-1)
        present = flat >= 0
        t = np.where(present, flat, 0)
        uw = self._user_row(int(user_id))
        s = score_one(self.theta_, np.asarray(context, dtype=np.float64), t, self.table_, self._static_, uw)
        greedy = np.argmax(s, axis=1)
        k = self.table_.n_variants[t]
        u_explore, u_arm = stable_uniforms(int(user_id), self.table_.title_ids[t], int(now) // self.stable_period, self.salt)
        explore = u_explore < self.epsilon
        arm = np.minimum((u_arm * k).astype(np.int64), np.maximum(k - 1, 0))
        pos = np.where(explore, arm, greedy)
        prop = np.where(pos == greedy, 1.0 - self.epsilon, 0.0) + self.epsilon / np.maximum(k, 1)
        has = present & (k > 0)
        ids = self.table_.variant_ids[t, pos]
        if not has.all():
            pos = np.where(has, pos, -1)
            ids = np.where(has, ids, "")
            prop = np.where(has, prop, 1.0)
        return ArtworkChoice(
            variant_pos=pos.reshape(shape),
            variant_ids=ids.reshape(shape),
            propensity=prop.reshape(shape),
            explored=(explore & has).reshape(shape),
        )

    def period_start(self, now: int) -> int:
        """Start of the stability period holding ``now``.

        Build the context passed to ``choose`` from the user's state as of this time (not
        ``now``), and a play in the middle of a period cannot flip the greedy variant either:
        the choice then changes only at period boundaries or when exploration is due.
        """
        return (int(now) // self.stable_period) * self.stable_period

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, object]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "artwork.ArtworkSelector",
            "params": {
                "epsilon": self.epsilon,
                "stable_period": self.stable_period,
                "ridge": self.ridge,
                "bias_prior": self.bias_prior,
                "user_prior": self.user_prior,
                "salt": self.salt,
            },
            "genres": list(self.genres_),
            "tones": list(self.tones_),
            "feature_names": feature_names(tuple(self.genres_), tuple(self.tones_)),
            "n_train_rows": int(getattr(self, "n_train_rows_", 0)),
            "train_play_rate": float(getattr(self, "train_play_rate_", float("nan"))),
            "catalog_fingerprint": self.table_.fingerprint(),
        }

    def save(self, path: Path) -> None:
        """Write ``path.npz`` and ``path.json``."""
        if not hasattr(self, "theta_"):
            raise HomepageError("ArtworkSelector: nothing to save, fit or prepare it first")
        path = Path(path)
        ids = getattr(self, "_bias_ids", np.zeros(0, str))
        vals = getattr(self, "_bias_values", np.zeros(0))
        p = user_dim(len(self.tones_))
        np.savez(
            path.with_suffix(".npz"),
            theta=self.theta_,
            bias_ids=ids.astype(str),
            bias_values=vals,
            user_ids=getattr(self, "user_ids_", np.zeros(0, np.int64)),
            user_weights=getattr(self, "user_weights_", np.zeros((0, p))),
        )
        path.with_suffix(".json").write_text(json.dumps(self.manifest(), indent=2))

    @staticmethod
    def saved_without_users(npz: bytes, user_ids: Iterable[int]) -> bytes | None:
        """A saved selector's arrays (``<path>.npz`` bytes) without these users' own weights, or None when it has none of them."""
        with np.load(io.BytesIO(npz), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        ids = arrays.get("user_ids")
        if ids is None or ids.size == 0:
            return None
        keep = ~np.isin(ids, np.fromiter((int(u) for u in user_ids), np.int64))
        if keep.all():
            return None
        arrays["user_ids"], arrays["user_weights"] = ids[keep], arrays["user_weights"][keep]
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def load(cls, path: Path, catalog: Catalog | None = None) -> ArtworkSelector:
        """Read a saved selector; refuses a manifest whose features differ from this code's."""
        path = Path(path)
        mpath, apath = path.with_suffix(".json"), path.with_suffix(".npz")
        if not mpath.exists() or not apath.exists():
            raise HomepageError(f"{path}: artwork model not found (need {mpath.name} and {apath.name})")
        try:
            man = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise HomepageError(f"{mpath}: line {e.lineno}: not valid JSON") from e
        if man.get("format_version") != FORMAT_VERSION or man.get("kind") != "artwork.ArtworkSelector":
            raise HomepageError(f"{mpath}: format_version/kind: not an artwork selector of version {FORMAT_VERSION}")
        genres, tones = tuple(man["genres"]), tuple(man["tones"])
        if man.get("feature_names") != feature_names(genres, tones):
            raise HomepageError(f"{mpath}: feature_names: differ from this code's features; retrain the model")
        sel = cls(**man["params"])
        with np.load(apath, allow_pickle=False) as z:
            sel.theta_ = z["theta"]
            sel._bias_ids = z["bias_ids"]
            sel._bias_values = z["bias_values"]
            sel.user_ids_ = z["user_ids"]
            sel.user_weights_ = z["user_weights"]
        sel.genres_, sel.tones_ = genres, tones
        sel.n_train_rows_ = man.get("n_train_rows", 0)
        sel.train_play_rate_ = man.get("train_play_rate", float("nan"))
        if catalog is not None:
            sel.prepare(catalog)
        return sel
