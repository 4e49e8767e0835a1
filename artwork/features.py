"""The bandit's joint (user context, variant) features, shared by every title.

A variant is described by phi = [emphasised genre one-hot (G + 1 with "none"),
tone one-hot (T + 1 with "unknown"), has a featured cast member, 1]; the user by
xg = [long-term genre lift (G), 1]. The model is linear in

    vec(xg outer phi)  ++  [recent genre lift of the emphasised genre, cast lift of the featured actor,
                            the user's genre lift over the featured actor's genres]

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


N_MATCH = 3  # the trailing match features: recent genre, cast, cast by genre


def n_features(n_genres: int, n_tones: int) -> int:
    return (n_genres + 1) * phi_dim(n_genres, n_tones) + N_MATCH


def intercept_index(n_genres: int, n_tones: int) -> int:
    """Position of the global intercept (the xg intercept times the phi intercept) in theta."""
    return (n_genres + 1) * phi_dim(n_genres, n_tones) - 1


def feature_names(genres: tuple[str, ...], tones: tuple[str, ...]) -> list[str]:
    """Readable names of the features, in order (saved in the model manifest)."""
    phi = [f"emph={g}" for g in genres] + ["emph=none"] + [f"tone={t}" for t in tones] + ["tone=?", "has_cast", "1"]
    xg = [f"user:{g}" for g in genres] + ["1"]
    return [f"{a}*{b}" for a in xg for b in phi] + ["recent_genre_match", "cast_match", "cast_genre_match"]


def _user_parts(contexts: np.ndarray, n_genres: int, n_cast: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """xg (n, G+1), recent genre lift padded with a 0 "none" column (n, G+1), cast lift and
    cast-by-genre lift padded (n, A+1) each."""
    n = contexts.shape[0]
    one = np.ones((n, 1), contexts.dtype)
    zero = np.zeros((n, 1), contexts.dtype)
    g2 = 2 * n_genres
    xg = np.hstack([contexts[:, :n_genres], one])
    xr = np.hstack([contexts[:, n_genres:g2], zero])
    xc = np.hstack([contexts[:, g2 : g2 + n_cast], zero])  # index -1 (no cast) reads the zero column
    xcg = np.hstack([contexts[:, g2 + n_cast : g2 + 2 * n_cast], zero])
    return xg, xr, xc, xcg


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
    w_recent, w_cast, w_cg = theta[-3], theta[-2], theta[-1]
    xg, xr, xc, xcg = _user_parts(contexts, g, table.n_cast)
    u = xg @ w  # (n_users, p): this user's weight on each variant attribute
    emph = table.emphasis[titles]
    tone = table.tone[titles]
    cast = table.cast[titles]
    r = rows[:, None]
    s = u[r, emph] + u[r, g + 1 + tone] + u[r, p - 2] * (cast >= 0) + u[r, p - 1]
    s = s + w_recent * xr[r, emph] + w_cast * xc[r, cast] + w_cg * xcg[r, cast]
    return np.where(table.valid[titles], s, -np.inf)


def score_one(
    theta: np.ndarray,
    context: np.ndarray,
    titles: np.ndarray,
    table: VariantTable,
    static: np.ndarray,
    user_w: np.ndarray | None = None,
) -> np.ndarray:
    """``score`` (+ ``user_score``) for one user over many titles, plus ``static`` (n_titles, K): the serving fast path.

    The user's weights per attribute value are folded into three small lookup vectors
    first, so the page costs three gathers and two adds.
    """
    g = table.n_genres
    p = phi_dim(g, len(table.tones))
    w = theta[: (g + 1) * p].reshape(g + 1, p)
    u = context[:g] @ w[:g] + w[g]  # (p,)
    cast_ctx = context[2 * g : 2 * g + table.n_cast]
    cg_ctx = context[2 * g + table.n_cast : 2 * g + 2 * table.n_cast]
    lut = np.empty(g + 1 + len(table.tones) + 1 + table.n_cast + 1)
    e, t = g + 1, g + 1 + len(table.tones) + 1
    lut[:g] = u[:g] + theta[-3] * context[g : 2 * g]  # emphasised genre
    lut[g] = u[g]  # no emphasis
    lut[e:t] = u[g + 1 : p - 2] + u[p - 1]  # tone, plus the intercept (every variant has one tone)
    lut[t:-1] = theta[-2] * cast_ctx + theta[-1] * cg_ctx + u[p - 2]  # featured cast member
    lut[-1] = 0.0  # no cast member
    if user_w is not None:
        lut[:g] += user_w[0] * context[:g] + user_w[2]
        lut[e:t] += user_w[5:]
        lut[t:-1] += user_w[1] * cast_ctx + user_w[4] * cg_ctx + user_w[3]
    return lut[table.lookup_codes[titles]].sum(axis=-1) + static[titles]


def user_dim(n_tones: int) -> int:
    """Per-user weights: genre match, cast match, has emphasis, has cast, cast-by-genre match, tone one-hot (T + 1)."""
    return 5 + n_tones + 1


def user_score(
    user_w: np.ndarray, contexts: np.ndarray, rows: np.ndarray, titles: np.ndarray, table: VariantTable
) -> np.ndarray:
    """The per-user part of the score (n, K): ``user_w`` (n, user_dim) are row i's user's own weights."""
    g = table.n_genres
    _, _, xc, xcg = _user_parts(contexts, g, table.n_cast)
    xg = np.hstack([contexts[:, :g], np.zeros((contexts.shape[0], 1), contexts.dtype)])
    emph, tone, cast = table.emphasis[titles], table.tone[titles], table.cast[titles]
    r = rows[:, None]
    w = user_w[:, :, None] if user_w.ndim == 2 else user_w
    s = w[:, 0] * xg[r, emph] + w[:, 1] * xc[r, cast] + w[:, 2] * (emph < g) + w[:, 3] * (cast >= 0) + w[:, 4] * xcg[r, cast]
    return s + np.take_along_axis(user_w[:, 5:], tone, axis=1)


def user_design(contexts: np.ndarray, rows: np.ndarray, titles: np.ndarray, actions: np.ndarray, table: VariantTable) -> np.ndarray:
    """Explicit per-user features (n, user_dim) of the logged variant, matching ``user_score``."""
    g, t = table.n_genres, len(table.tones)
    n = titles.shape[0]
    emph = table.emphasis[titles, actions]
    tone = table.tone[titles, actions]
    cast = table.cast[titles, actions]
    _, _, xc, xcg = _user_parts(contexts, g, table.n_cast)
    xg = np.hstack([contexts[:, :g], np.zeros((contexts.shape[0], 1), contexts.dtype)])
    z = np.zeros((n, user_dim(t)))
    z[:, 0] = xg[rows, emph]
    z[:, 1] = xc[rows, cast]
    z[:, 2] = emph < g
    z[:, 3] = cast >= 0
    z[:, 4] = xcg[rows, cast]
    z[np.arange(n), 5 + tone] = 1.0
    return z


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
    xg, xr, xc, xcg = _user_parts(contexts, g, table.n_cast)
    outer = (xg[rows][:, :, None] * phi[:, None, :]).reshape(n, -1)
    return np.hstack([outer, xr[rows, emph][:, None], xc[rows, cast][:, None], xcg[rows, cast][:, None]])
