"""The bandit's joint (user context, variant) features, shared by every title.

A variant is described by phi = [emphasised genre one-hot (G + 1 with "none"),
tone one-hot (T + 1 with "unknown"), has a featured cast member, 1]; the user by
xg = [long-term genre lift (G), 1]. The model is linear in

    vec(xg outer phi)  ++  [recent genre lift of the emphasised genre, cast lift of the featured actor]

so a weight learnt on a popular title's "Comedy, bright" variant serves every title's
"Comedy, bright" variant: rare titles learn from common ones. ``score`` computes the same
linear function by gathers instead of building the features, which is what makes
choosing a whole page cheap; ``design`` builds them explicitly for training.
"""

from __future__ import annotations

import numpy as np

from artwork.variant_table import VariantTable


def phi_dim(n_genres: int, n_tones: int) -> int:
    return (n_genres + 1) + (n_tones + 1) + 2


def n_features(n_genres: int, n_tones: int) -> int:
    return (n_genres + 1) * phi_dim(n_genres, n_tones) + 2


def feature_names(genres: tuple[str, ...], tones: tuple[str, ...]) -> list[str]:
    """Readable names of the features, in order (saved in the model manifest)."""
    phi = [f"emph={g}" for g in genres] + ["emph=none"] + [f"tone={t}" for t in tones] + ["tone=?", "has_cast", "1"]
    xg = [f"user:{g}" for g in genres] + ["1"]
    return [f"{a}*{b}" for a in xg for b in phi] + ["recent_genre_match", "cast_match"]


def _user_parts(contexts: np.ndarray, n_genres: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xg (n, G+1), recent genre lift padded with a 0 "none" column (n, G+1), cast lift padded (n, A+1)."""
    n = contexts.shape[0]
    one = np.ones((n, 1), contexts.dtype)
    zero = np.zeros((n, 1), contexts.dtype)
    xg = np.hstack([contexts[:, :n_genres], one])
    xr = np.hstack([contexts[:, n_genres : 2 * n_genres], zero])
    xc = np.hstack([contexts[:, 2 * n_genres :], zero])  # index -1 (no cast) reads the zero column
    return xg, xr, xc


def score(
    theta: np.ndarray, contexts: np.ndarray, rows: np.ndarray, titles: np.ndarray, table: VariantTable
) -> np.ndarray:
    """Linear scores (len(titles), K) of each title's variants for the user whose context is ``contexts[rows]``.

    ``contexts`` is (n_users, d); ``rows`` and ``titles`` are aligned int arrays. Padding
    positions get -inf. ``theta`` is (n_features,).
    """
    g = table.n_genres
    p = phi_dim(g, len(table.tones))
    w = theta[: (g + 1) * p].reshape(g + 1, p)
    w_recent, w_cast = theta[-2], theta[-1]
    xg, xr, xc = _user_parts(contexts, g)
    u = xg @ w  # (n_users, p): this user's weight on each variant attribute
    emph = table.emphasis[titles]
    tone = table.tone[titles]
    cast = table.cast[titles]
    r = rows[:, None]
    s = u[r, emph] + u[r, g + 1 + tone] + u[r, p - 2] * (cast >= 0) + u[r, p - 1]
    s = s + w_recent * xr[r, emph] + w_cast * xc[r, cast]
    return np.where(table.valid[titles], s, -np.inf)


def score_one(theta: np.ndarray, context: np.ndarray, titles: np.ndarray, table: VariantTable, static: np.ndarray) -> np.ndarray:
    """``score`` for one user over many titles, plus ``static`` (n_titles, K): the serving fast path.

    The user's weights per attribute value are folded into three small lookup vectors
    first, so the page costs three gathers and two adds.
    """
    g = table.n_genres
    p = phi_dim(g, len(table.tones))
    w = theta[: (g + 1) * p].reshape(g + 1, p)
    u = context[:g] @ w[:g] + w[g]  # (p,)
    by_emph = u[: g + 1] + theta[-2] * np.append(context[g : 2 * g], 0.0)
    by_tone = u[g + 1 : p - 2] + u[p - 1]
    by_cast = np.append(theta[-1] * context[2 * g :] + u[p - 2], 0.0)  # index -1: no cast member
    return by_emph[table.emphasis[titles]] + by_tone[table.tone[titles]] + by_cast[table.cast[titles]] + static[titles]


def design(contexts: np.ndarray, rows: np.ndarray, titles: np.ndarray, actions: np.ndarray, table: VariantTable) -> np.ndarray:
    """Explicit features (n, n_features) of the variant ``actions[i]`` of ``titles[i]`` for user ``rows[i]``."""
    g, t = table.n_genres, len(table.tones)
    p = phi_dim(g, t)
    n = titles.shape[0]
    emph = table.emphasis[titles, actions]
    tone = table.tone[titles, actions]
    cast = table.cast[titles, actions]
    phi = np.zeros((n, p))
    ar = np.arange(n)
    phi[ar, emph] = 1.0
    phi[ar, g + 1 + tone] = 1.0
    phi[:, p - 2] = cast >= 0
    phi[:, p - 1] = 1.0
    xg, xr, xc = _user_parts(contexts, g)
    outer = (xg[rows][:, :, None] * phi[:, None, :]).reshape(n, -1)
    return np.hstack([outer, xr[rows, emph][:, None], xc[rows, cast][:, None]])
