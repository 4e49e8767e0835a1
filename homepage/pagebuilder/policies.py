"""Page policies: how rows are scored inside the shared page loop.

- ``stage-wise``: the LightGBM page model re-scores every remaining row at every stage;
- ``row-ranking``: every row scored once on the empty page (by the page model when the
  bundle has one, else by the mean personalised score of its titles);
- ``template``: a fixed order of ranker types;
- ``single-list``: the personalised ranker's top R x C titles cut into rows.

Third-party policies register a ``PolicySpec`` factory in the ``homepage.policies``
entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

import numpy as np

from homepage.errors import HomepageError
from homepage.pagebuilder.candidates import CandidateMatrix
from homepage.pagebuilder.features import FEATURE_NAMES, StageView
from homepage.pagebuilder.model import PageModel
from homepage.pagebuilder.loop import RowScorer

PERS_MEAN = FEATURE_NAMES.index("pers_mean")
POP_MEAN = FEATURE_NAMES.index("pop_mean")
TEMPLATE_ORDER: tuple[str, ...] = ("continue_watching", "personalized", "trending", "top_n", "video_to_video")
POLICY_GROUP = "homepage.policies"


@dataclass(frozen=True)
class PolicySpec:
    """A named policy: which candidates it uses and how it scores rows."""

    name: str
    make_scorer: Callable[[PageModel | None, CandidateMatrix], RowScorer]
    single_list: bool = False  # True: candidates are the personalised top list cut into rows
    needs_model: bool = False


class ModelScorer:
    """Scores rows with the page model; stage-wise or once on the empty page."""

    def __init__(self, model: PageModel, stagewise: bool) -> None:
        self.model = model
        self.stagewise = stagewise

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        return self.model.predict(view.X)


class PersonalMeanScorer:
    """Row ranking without a model: mean personalised score, popularity for cold users."""

    stagewise = False

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        pers = view.X[:, PERS_MEAN]
        fallback = view.X[:, POP_MEAN] - 10.0
        return np.where(np.isnan(pers), fallback, pers)


class TemplateScorer:
    """Fixed order of ranker types, cycling: the i-th row of each type after the (i-1)-th of all."""

    stagewise = False

    def __init__(self, order: tuple[str, ...] = TEMPLATE_ORDER) -> None:
        self.order = order

    def score(self, view: StageView, cm: CandidateMatrix) -> np.ndarray:
        seen: dict[str, int] = {}
        n = len(self.order) + 1
        keys = np.empty(len(cm), dtype=np.float64)
        for i, row in enumerate(cm.rows):
            occ = seen.get(row.ranker, 0)
            seen[row.ranker] = occ + 1
            pos = self.order.index(row.ranker) if row.ranker in self.order else len(self.order)
            keys[i] = -(occ * n + pos)
        return keys[view.remaining]


def _stage_wise(model: PageModel | None, cm: CandidateMatrix) -> RowScorer:
    if model is None:
        raise HomepageError("policy 'stage-wise' needs a page model in the bundle (run `homepage train`)")
    return ModelScorer(model, stagewise=True)


def _row_ranking(model: PageModel | None, cm: CandidateMatrix) -> RowScorer:
    return ModelScorer(model, stagewise=False) if model is not None else PersonalMeanScorer()


BUILTIN: dict[str, PolicySpec] = {
    "stage-wise": PolicySpec("stage-wise", _stage_wise, needs_model=True),
    "row-ranking": PolicySpec("row-ranking", _row_ranking),
    "template": PolicySpec("template", lambda m, cm: TemplateScorer()),
    "single-list": PolicySpec("single-list", lambda m, cm: TemplateScorer(), single_list=True),
}


@cache
def _plugins() -> dict[str, PolicySpec]:
    out: dict[str, PolicySpec] = {}
    for ep in entry_points(group=POLICY_GROUP):
        try:
            spec = ep.load()
        except Exception as e:
            raise HomepageError(f"policy {ep.name!r} ({ep.value}) failed to import: {e}") from e
        if not isinstance(spec, PolicySpec):
            raise HomepageError(f"policy {ep.name!r} ({ep.value}) is not a PolicySpec")
        out[ep.name] = spec
    return out


def policy(name: str) -> PolicySpec:
    """The policy registered as ``name``."""
    if name in BUILTIN:
        return BUILTIN[name]
    plugins = _plugins()
    if name in plugins:
        return plugins[name]
    known = ", ".join(sorted({*BUILTIN, *plugins}))
    raise HomepageError(f"unknown policy {name!r} (known: {known})")


def policy_names() -> list[str]:
    return sorted({*BUILTIN, *_plugins()})
