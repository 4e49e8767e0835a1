"""The titles table from MovieLens movies and tags: name and year split, genres, top tags."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# "Toy Story (1995)", "Fawlty Towers (1975-1979)", "Babylon 5 (1994) " -> name, year
YEAR_RE = r"^(?P<name>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$"
TOP_TAGS = 5
# MovieLens files titles under their noun: "Matrix, The", "Crow, The: Wicked Prayer",
# "Mondays in the Sun (Lunes al sol, Los)"; the article goes back in front for display. Romance,
# German, Dutch, Scandinavian and Portuguese articles too: ml-latest-small files "Vitelloni, I",
# "Chien andalou, Un", "Sjunde inseglet, Det", "Grønne slagtere, De" (none of its titles ends in
# one of these words without it being an article)
ARTICLES = "The|A|An|Les|Le|La|L'|Un|Une|Los|Las|El|Una|Il|Lo|I|Gli|Uno|Der|Die|Das|Ein|Eine|De|Het|Den|Det|En|Ett|O|Os|As|Um|Uma"
TRAILING_ARTICLE = re.compile(rf"^(?P<aka>a\.k\.a\. )?(?P<noun>.+?), (?P<article>{ARTICLES})(?P<rest>:.*)?$")
ALSO_KNOWN_AS = re.compile(r"\(([^()]*)\)")


def split_title(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Names without the trailing ``(year)``, article first (``article_first``), and years as int32 (0 when the title has none)."""
    raw = raw.astype(object).fillna("").astype(str).str.strip()
    parts = raw.str.extract(YEAR_RE)
    has = parts["year"].notna()
    names = raw.where(~has, parts["name"].str.strip())
    names = names.where(names.str.len() > 0, raw)  # a title that is only "(1995)" keeps it
    names = names.map(article_first)
    years = pd.to_numeric(parts["year"], errors="coerce").fillna(0).to_numpy(np.int32)
    return names.astype(object), years


def article_first(name: str) -> str:
    """ "Matrix, The" -> "The Matrix", also before a subtitle and in a parenthesised other title:
    "City of Lost Children, The (Cité des enfants perdus, La)" -> "The City of Lost Children (La Cité des enfants perdus)".
    """
    head, paren, tail = name.partition(" (")
    head = _moved(head)
    if paren:
        tail = ALSO_KNOWN_AS.sub(lambda m: f"({_moved(m.group(1))})", "(" + tail)[1:]
    return head + paren + tail


def _moved(part: str) -> str:
    m = TRAILING_ARTICLE.match(part)
    if m is None:
        return part
    space = "" if m["article"].endswith("'") else " "  # "L'Auberge espagnole"
    return f"{m['aka'] or ''}{m['article']}{space}{m['noun']}{m['rest'] or ''}"


def top_tags(tags: pd.DataFrame | None, k: int = TOP_TAGS) -> pd.Series:
    """The ``k`` most frequent tags per title, lower-cased; ties broken alphabetically."""
    if tags is None or tags.empty:
        return pd.Series(dtype=object)
    t = pd.DataFrame({"title_id": tags["title_id"].to_numpy(), "tag": tags["tag"].astype(str).str.strip().str.lower()})
    t = t[t["tag"].str.len() > 0]
    counts = t.groupby(["title_id", "tag"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["title_id", "n", "tag"], ascending=[True, False, True], kind="stable")
    best = counts.groupby("title_id", sort=False).head(k)
    return best.groupby("title_id", sort=True)["tag"].agg(list)


def build_titles(movies: pd.DataFrame, tags: pd.DataFrame | None, k_tags: int = TOP_TAGS) -> pd.DataFrame:
    """A frame with the columns of ``TITLE_SCHEMA``; cast, director and maturity left empty."""
    m = movies.drop_duplicates("title_id", keep="first").reset_index(drop=True)
    names, years = split_title(m["title"])
    if "year_hint" in m.columns:
        years = np.where(years == 0, m["year_hint"].to_numpy(np.int32), years).astype(np.int32)
    tag_lists = top_tags(tags, k_tags)
    tag_col = m["title_id"].map(tag_lists)
    empty = [[] for _ in range(len(m))]
    return pd.DataFrame(
        {
            "title_id": m["title_id"].to_numpy(np.int64),
            "name": names.to_numpy(),
            "year": years,
            "genres": m["genres"].to_numpy(),
            "cast": empty,
            "director": [[] for _ in range(len(m))],
            "maturity": pd.Series([None] * len(m), dtype=object),
            "tags": [x if isinstance(x, list) else [] for x in tag_col],
        }
    )


def titles_as_of(titles: pd.DataFrame, tag_events: pd.DataFrame | None, until: int, k_tags: int = TOP_TAGS) -> pd.DataFrame:
    """``titles`` with each title's top tags counted over the tags written at or before ``until``.

    A model fitted on events up to ``until`` must not learn from tags written later (on
    ml-latest-small a third of the tags come after the default split, some by the very users
    replay then evaluates). Without tag events the titles are returned as they are.
    """
    if tag_events is None:
        return titles
    ts = tag_events["ts"].to_numpy(np.int64)
    tag_lists = top_tags(tag_events[ts <= int(until)], k_tags)
    out = titles.copy()
    out["tags"] = [x if isinstance(x, list) else [] for x in out["title_id"].map(tag_lists)]
    return out
