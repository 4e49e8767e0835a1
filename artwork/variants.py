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
import pyarrow as pa
import pyarrow.compute as pc

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


def _leading(titles: pd.DataFrame, col: str, k: int) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """``(title_ids, values, positions)`` of the first ``k`` non-empty entries of a list column."""
    if col not in titles.columns or titles.empty:
        return np.zeros(0, np.int64), pa.array([], pa.string()), np.zeros(0, np.int64)
    lists = pa.array(titles[col].tolist(), type=pa.list_(pa.string()))
    values = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy()
    ok = pc.and_(pc.is_valid(values), pc.greater(pc.utf8_length(values), 0)).to_numpy(zero_copy_only=False)
    values, parent = values.filter(pa.array(ok)), parent[ok]
    first = np.r_[True, parent[1:] != parent[:-1]] if parent.size else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(parent.size), 0)) if parent.size else parent
    pos = np.arange(parent.size) - group_start
    keep = pos < k
    return titles["title_id"].to_numpy(np.int64)[parent[keep]], values.filter(pa.array(keep)), pos[keep]


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation of arrays and constants, in Arrow (no Python loop)."""
    return pc.binary_join_element_wise(*(pa.scalar(p) if isinstance(p, str) else p for p in parts), "")


def _slugged(values: pa.Array) -> pa.Array:
    """``slug`` of every value, computing each distinct value once."""
    uniq = pc.unique(values)
    slugs = pa.array([slug(v) for v in uniq.to_pylist()], pa.string())
    return slugs.take(pc.index_in(values, value_set=uniq))


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
    n, n_g, n_c, n_p = len(ids), len(g_v), len(c_v), len(p_items)
    s = pa.string()

    def sid(x: np.ndarray) -> pa.Array:
        return pc.cast(pa.array(x, pa.int64()), s)

    vid = pa.concat_arrays([
        _join(sid(ids), "-n"),
        _join(sid(g_t), "-g-", _slugged(g_v)) if n_g else pa.array([], s),
        _join(sid(c_t), "-c-", _slugged(c_v)) if n_c else pa.array([], s),
        _join(sid(p_t), "-p") if n_p else pa.array([], s),
    ])  # fmt: skip
    tid = np.concatenate([ids, g_t, c_t, p_t])
    kind = np.repeat(np.array([0, 1, 2, 3], np.int8), [n, n_g, n_c, n_p])
    pos = np.concatenate([np.zeros(n, np.int64), g_pos, c_pos, np.zeros(n_p, np.int64)])
    nulls = pa.nulls
    genre = pa.concat_arrays([nulls(n, s), g_v.cast(s), nulls(n_c + n_p, s)])
    cast = pa.concat_arrays([nulls(n + n_g, s), c_v.cast(s), nulls(n_p, s)])
    g_tone = pa.array([GENRE_TONE.get(g, "neutral") for g in pc.unique(g_v).to_pylist()], s) if n_g else pa.array([], s)
    tone = pa.concat_arrays([
        pa.array(["neutral"] * n, s),
        g_tone.take(pc.index_in(g_v, value_set=pc.unique(g_v))) if n_g else pa.array([], s),
        pa.array(["neutral"] * n_c, s),
        pa.array(["poster"] * n_p, s),
    ])  # fmt: skip
    placeholder = _join("/artwork/", sid(tid[: n + n_g + n_c]), "/", vid.slice(0, n + n_g + n_c), ".svg")
    url = pa.concat_arrays([placeholder, pa.array([u for _, u in p_items], s)])
    table = pa.table({"variant_id": vid, "title_id": pa.array(tid, pa.int64()), "emphasis_genre": genre,
                      "featured_cast": cast, "tone": tone, "image_url": url})  # fmt: skip
    table = table.take(pa.array(np.lexsort((pos, kind, tid))))
    # two names with one slug in a title (rare): keep the first
    dup = pd.Series(table.column("variant_id").to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    if dup.any():
        table = table.filter(pa.array(~dup))
    return table.select(VARIANT_SCHEMA.names).to_pandas()
