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
_KIND_ORDER = {"n": 0, "g": 1, "c": 2, "p": 3}


def slug(text: str) -> str:
    """ASCII, lower-case, dash-separated; a hash when nothing ASCII is left (e.g. CJK names)."""
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")
    return s or "x" + hashlib.sha1(text.encode()).hexdigest()[:8]


def _ids(title_ids: np.ndarray, infix: str, values: pd.Series | None = None) -> list[str]:
    """``<title_id>-<infix>`` or ``<title_id>-<infix>-<slug(value)>``, slugging each distinct value once."""
    if values is None:
        return [f"{t}-{infix}" for t in title_ids.tolist()]
    uniq = pd.unique(values.to_numpy(object))
    lookup = dict(zip(uniq, (slug(str(v)) for v in uniq)))
    return [f"{t}-{infix}-{lookup[v]}" for t, v in zip(title_ids.tolist(), values.to_numpy(object).tolist())]


def _leading(titles: pd.DataFrame, col: str, k: int) -> pd.DataFrame:
    """``(title_id, value, pos)`` for the first ``k`` entries of a list column, vectorised."""
    if col not in titles.columns or titles.empty:
        return pd.DataFrame({"title_id": pd.Series(dtype=np.int64), "value": pd.Series(dtype=object), "pos": pd.Series(dtype=np.int64)})
    s = titles[["title_id", col]].explode(col)
    s = s[s[col].notna() & (s[col].astype(str).str.len() > 0)]
    pos = s.groupby(level=0).cumcount().to_numpy()
    s = s.assign(pos=pos)[pos < k]
    return pd.DataFrame({"title_id": s["title_id"].to_numpy(np.int64), "value": s[col].astype(str).to_numpy(), "pos": s["pos"].to_numpy()})


def derive_variants(titles: pd.DataFrame, posters: dict[int, str] | None = None) -> pd.DataFrame:
    """Variants for every title, with the columns of ``VARIANT_SCHEMA``.

    ``titles`` needs ``title_id``; ``genres`` and ``cast`` (list columns) are used when present.
    ``posters`` maps title id to a real image URL, kept as is (tone ``poster``).
    """
    t = titles.reset_index(drop=True)
    ids = t["title_id"].to_numpy(np.int64)
    neutral = pd.DataFrame({"title_id": ids, "kind": "n", "pos": 0, "variant_id": _ids(ids, "n"),
                            "emphasis_genre": None, "featured_cast": None, "tone": "neutral"})  # fmt: skip
    g = _leading(t, "genres", MAX_GENRES)
    genre = pd.DataFrame({"title_id": g["title_id"], "kind": "g", "pos": g["pos"],
                          "variant_id": _ids(g["title_id"].to_numpy(), "g", g["value"]),
                          "emphasis_genre": g["value"], "featured_cast": None,
                          "tone": [GENRE_TONE.get(x, "neutral") for x in g["value"].tolist()]})  # fmt: skip
    c = _leading(t, "cast", MAX_CAST)
    cast = pd.DataFrame({"title_id": c["title_id"], "kind": "c", "pos": c["pos"],
                         "variant_id": _ids(c["title_id"].to_numpy(), "c", c["value"]),
                         "emphasis_genre": None, "featured_cast": c["value"], "tone": "neutral"})  # fmt: skip
    known = set(ids.tolist())
    p_items = [(int(k), str(v)) for k, v in (posters or {}).items() if int(k) in known and v]
    p_ids = np.array([k for k, _ in p_items], dtype=np.int64)
    poster = pd.DataFrame({"title_id": p_ids, "kind": "p", "pos": 0,
                           "variant_id": _ids(p_ids, "p"),
                           "emphasis_genre": None, "featured_cast": None, "tone": "poster",
                           "image_url": [u for _, u in p_items]})  # fmt: skip
    parts = [x for x in (neutral, genre, cast, poster) if len(x)]
    if not parts:
        return pd.DataFrame({f.name: pd.Series(dtype=object) for f in VARIANT_SCHEMA}).astype({"title_id": np.int64})
    v = pd.concat(parts, ignore_index=True)
    v["order"] = v["kind"].map(_KIND_ORDER)
    v = v.sort_values(["title_id", "order", "pos"], kind="stable").drop_duplicates("variant_id", keep="first")
    placeholder = [f"/artwork/{t}/{vid}.svg" for t, vid in zip(v["title_id"].tolist(), v["variant_id"].tolist())]
    real = v["image_url"].tolist() if "image_url" in v.columns else [None] * len(v)
    v["image_url"] = [r if k == "p" else ph for r, k, ph in zip(real, v["kind"].tolist(), placeholder)]
    v["title_id"] = v["title_id"].astype(np.int64)
    return v[VARIANT_SCHEMA.names].reset_index(drop=True)
