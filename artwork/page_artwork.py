"""Artwork for a built page: the selector plus the user-context builder, as ``build_page`` uses them.

The context is built from the user's state as of the start of the selector's stability
period, so a play in the middle of a period cannot flip the variant a user sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from artwork.context import UserContextBuilder
from artwork.selector import ArtworkChoice, ArtworkSelector
from homepage.catalog import Catalog
from homepage.state import UserState


class PageArtwork:
    """Chooses every title's variant on a page in one call."""

    def __init__(self, selector: ArtworkSelector, contexts: UserContextBuilder) -> None:
        self.selector = selector
        self.contexts = contexts
        self._forgetting = threading.Lock()  # two erasures at once must not lose one's swap

    @classmethod
    def default(cls, catalog: Catalog, epsilon: float = 0.05, stable_days: float = 7.0) -> PageArtwork:
        """An untrained selector: the title's first (neutral) variant, exploring at ``epsilon`` with logged propensities."""
        selector = ArtworkSelector(epsilon=epsilon, stable_period=int(stable_days * 86_400)).prepare(catalog)
        return cls(selector, UserContextBuilder().prepare(catalog))

    @classmethod
    def of(cls, selector: ArtworkSelector, catalog: Catalog) -> PageArtwork:
        """A (trained) selector with the context builder serving uses, both prepared for ``catalog``."""
        return cls(selector.prepare(catalog), UserContextBuilder().prepare(catalog))

    def choose_for_user(self, user: UserState, title_idx: np.ndarray, now: int) -> ArtworkChoice:
        """Variants for the (R, C) grid of catalog indices (-1 empty) shown to ``user`` at ``now``."""
        start = self.selector.period_start(now)
        context = self.contexts.build(_as_of(user, start))
        return self.selector.choose(context, title_idx, user.user_id, now)

    def forget_users(self, user_ids: Iterable[int]) -> int:
        """Stop using these users' own artwork weights (an erasure); returns how many the model held."""
        with self._forgetting:
            before = self.selector
            after = before.without_users(user_ids)
            if after is None:
                return 0
            self.selector = after  # one reference swap: a page being built keeps the model it started with
        return int(before.user_ids_.size - after.user_ids_.size)

    def save(self, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.selector.save(Path(directory) / "selector")

    @classmethod
    def load(cls, directory: Path, catalog: Catalog) -> PageArtwork:
        selector = ArtworkSelector.load(Path(directory) / "selector", catalog)
        return cls(selector, UserContextBuilder().prepare(catalog))


def _as_of(user: UserState, t: int) -> UserState:
    """The user's state restricted to events at or before ``t``."""
    if not len(user) or int(user.ts[-1]) <= t:
        return user
    n = int(np.searchsorted(user.ts, t, side="right"))
    return UserState(
        user.user_id, t, user.region, user.title_ids[:n], user.title_idx[:n], user.ts[:n], user.kinds[:n], user.stars[:n], user.progress[:n], user.favourite_genres
    )
