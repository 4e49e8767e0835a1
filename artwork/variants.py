"""Artwork variants derived from catalog metadata (MovieLens has no artwork of its own).

Per title: a neutral variant, one per main genre (the first up to 3 genres), one per lead
cast member (the first up to 2 billed), and the real poster when the metadata has one.
Placeholder images live at ``/artwork/<title_id>/<variant_id>.svg`` (the API renders them).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
import pandas as pd

from homepage.dataset import VARIANT_SCHEMA

MAX_GENRES = 3
MAX_CAST = 2
VARIANT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
# the mood a genre-emphasis image is drawn in; genres not listed are "neutral"
GENRE_TONE = {
    "Horror": "dark", "Thriller": "dark", "Crime": "dark", "Film-Noir": "dark", "War": "dark", "Mystery": "dark",
    "Comedy": "comedic",
    "Animation": "bright", "Children": "bright", "Musical": "bright", "Fantasy": "bright", "Romance": "bright",
}  # fmt: skip


def slug(text: str) -> str:
    """ASCII, lower-case, dash-separated; a hash when nothing ASCII is left (e.g. CJK names)."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")
    return s or "x" + hashlib.sha1(text.encode()).hexdigest()[:8]


def _leading(titles: pd.DataFrame, col: str, k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(title_ids, values, positions)`` of the first ``k`` non-empty entries of a list column."""
    if col not in titles.columns or titles.empty:
        return np.zeros(0, np.int64), [], np.zeros(0, np.int64)
    heads = [[str(x) for x in v if x is not None and str(x)][:k] if v is not None else [] for v in titles[col].tolist()]
    lengths = np.fromiter((len(h) for h in heads), np.int64, len(heads))
    values = [x for h in heads for x in h]
    tids = np.repeat(titles["title_id"].to_numpy(np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tids, values, np.arange(len(values), dtype=np.int64) - starts


def _slugged(tids: np.ndarray, infix: str, values: list[str]) -> list[str]:
    """``<title_id>-<infix>-<slug(value)>``, slugging each distinct value once."""
    lookup = {v: slug(v) for v in set(values)}
    return [f"{t}-{infix}-{lookup[v]}" for t, v in zip(tids.tolist(), values)]


def derive_variants(titles: pd.DataFrame, posters: dict[int, str] | None = None) -> pd.DataFrame:
    """Variants for every title, with the columns of ``VARIANT_SCHEMA``, ordered by title then kind.

    ``titles`` needs ``title_id``; ``genres`` and ``cast`` (list columns) are used when present.
    ``posters`` maps title id to a real image URL, kept as is (tone ``poster``).
    """
    ids = titles["title_id"].to_numpy(np.int64)
    g_t, g_v, g_pos = _leading(titles, "genres", MAX_GENRES)
    c_t, c_v, c_pos = _leading(titles, "cast", MAX_CAST)
    known = set(ids.tolist())
    p_items = sorted((int(t), str(u)) for t, u in (posters or {}).items() if int(t) in known and u)
    p_t = np.array([t for t, _ in p_items], dtype=np.int64)
    n_g, n_c, n_p = len(g_v), len(c_v), len(p_items)
    none = [None]
    tid = np.concatenate([ids, g_t, c_t, p_t])
    kind = np.repeat(np.array([0, 1, 2, 3], np.int8), [len(ids), n_g, n_c, n_p])
    pos = np.concatenate([np.zeros(len(ids), np.int64), g_pos, c_pos, np.zeros(n_p, np.int64)])
    vid = [f"{t}-n" for t in ids.tolist()] + _slugged(g_t, "g", g_v) + _slugged(c_t, "c", c_v) + [f"{t}-p" for t in p_t.tolist()]
    genre = none * len(ids) + g_v + none * (n_c + n_p)
    cast = none * (len(ids) + n_g) + c_v + none * n_p
    tone = ["neutral"] * len(ids) + [GENRE_TONE.get(g, "neutral") for g in g_v] + ["neutral"] * n_c + ["poster"] * n_p
    url = [f"/artwork/{t}/{v}.svg" for t, v in zip(tid[: len(tid) - n_p].tolist(), vid)] + [u for _, u in p_items]
    order = np.lexsort((pos, kind, tid))
    seen: set[str] = set()
    keep = []
    for i in order.tolist():  # two names with one slug in a title: keep the first
        if vid[i] not in seen:
            seen.add(vid[i])
            keep.append(i)
    take = np.asarray(keep, dtype=np.int64)

    def col(values: list) -> np.ndarray:  # type: ignore[type-arg]
        return np.asarray(values, dtype=object)[take] if len(take) else np.zeros(0, object)

    return pd.DataFrame(
        {
            "variant_id": col(vid),
            "title_id": tid[take],
            "emphasis_genre": col(genre),
            "featured_cast": col(cast),
            "tone": col(tone),
            "image_url": col(url),
        },
        columns=VARIANT_SCHEMA.names,
    )
