"""Placeholder artwork: an SVG poster per variant, so pages render with no external image host.

A variant's emphasis is visible at a glance: the background hue comes from the emphasised
genre (or the featured cast member), the tone sets lightness and saturation, and a label
band names the emphasis. Pure string building: no I/O, deterministic for the same input.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass
from xml.sax.saxutils import escape

from homepage.domain import ArtworkVariant

WIDTH, HEIGHT = 200, 300
# hues for the common genres, chosen to be far apart; other genres hash to a hue
GENRE_HUES: dict[str, int] = {
    "Action": 8,
    "Adventure": 30,
    "Animation": 50,
    "Children": 70,
    "Comedy": 45,
    "Crime": 250,
    "Documentary": 160,
    "Drama": 280,
    "Fantasy": 300,
    "Horror": 350,
    "Musical": 320,
    "Mystery": 230,
    "Romance": 335,
    "Sci-Fi": 195,
    "Thriller": 215,
    "War": 100,
    "Western": 25,
}
# tone -> (saturation %, lightness %)
TONES: dict[str, tuple[int, int]] = {
    "neutral": (12, 34),
    "dark": (55, 16),
    "bright": (80, 62),
    "comedic": (85, 50),
}
DEFAULT_TONE = (45, 40)


@dataclass(frozen=True)
class VariantStyle:
    """How a variant looks: background colour (HSL), text colour and the emphasis label."""

    hue: int
    saturation: int
    lightness: int
    label: str
    kind: str  # "genre", "cast" or "neutral"

    @property
    def background(self) -> str:
        return f"hsl({self.hue},{self.saturation}%,{self.lightness}%)"

    @property
    def accent(self) -> str:
        return f"hsl({self.hue},{min(100, self.saturation + 15)}%,{max(8, self.lightness - 14)}%)"

    @property
    def text(self) -> str:
        return "#111" if self.lightness >= 55 else "#f5f5f5"


TITLE_CELLS = 16  # a title line's width in Latin letters; East Asian wide characters take two
TITLE_LINES = 4
# characters XML 1.0 forbids even escaped (a control character in a title made the whole poster unreadable)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_JOINS_NEXT = "\u200d"  # zero-width joiner: "👩\u200d👧" is one glyph


def _xml(text: str) -> str:
    return escape(_NOT_XML.sub("", text))


def _clusters(text: str) -> list[str]:
    """``text`` cut into what a reader sees as one character: a letter with its combining marks,
    an emoji with its modifiers, variation selectors and zero-width-joined parts."""
    out: list[str] = []
    for ch in text:
        attached = unicodedata.category(ch) in ("Mn", "Me", "Mc") or ch in "\u200d\ufe0e\ufe0f" or "\U0001f3fb" <= ch <= "\U0001f3ff"
        if out and (attached or out[-1].endswith(_JOINS_NEXT)):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _cells(cluster: str) -> int:
    return 2 if unicodedata.east_asian_width(cluster[0]) in ("W", "F") else 1


def wrap_title(name: str, cells: int = TITLE_CELLS, max_lines: int = TITLE_LINES) -> list[str]:
    """``name`` in at most ``max_lines`` lines of ``cells`` display cells, broken at spaces where it can,
    never inside a character (a combining accent or a joined emoji stays whole); "…" ends a cut title."""
    lines: list[str] = []
    line: list[str] = []
    width = 0
    for word in " ".join(name.split()).split(" "):
        parts = _clusters(word)
        need = sum(_cells(c) for c in parts)
        if line and width + 1 + need <= cells:
            line.append(" ")
            width += 1
        elif line:
            lines.append("".join(line))
            line, width = [], 0
        for c in parts:  # a word longer than a line (or CJK, which has no spaces) breaks between characters
            if line and width + _cells(c) > cells:
                lines.append("".join(line).rstrip())
                line, width = [], 0
            line.append(c)
            width += _cells(c)
    if line:
        lines.append("".join(line))
    if len(lines) > max_lines:
        last = _clusters(lines[max_lines - 1])
        while last and sum(_cells(c) for c in last) + 1 > cells:
            last.pop()
        lines = lines[: max_lines - 1] + ["".join(last).rstrip() + "…"]
    return lines or [""]


def _hash_hue(text: str) -> int:
    return zlib.crc32(text.encode()) % 360


def variant_style(variant: ArtworkVariant) -> VariantStyle:
    """The colour and label of ``variant``: genre emphasis, featured cast, or neutral."""
    sat, light = TONES.get(variant.tone, DEFAULT_TONE)
    if variant.emphasis_genre:
        g = variant.emphasis_genre
        return VariantStyle(GENRE_HUES.get(g, _hash_hue(g)), sat, light, g, "genre")
    if variant.featured_cast:
        c = variant.featured_cast
        return VariantStyle(_hash_hue(c), max(10, sat - 25), light, f"with {c}", "cast")
    return VariantStyle(210, min(sat, 12), light, "Standard", "neutral")


def placeholder_svg(name: str, year: int | None, variant: ArtworkVariant) -> str:
    """An SVG poster showing the title, year, the variant's emphasis (colour and label) and tone."""
    st = variant_style(variant)
    lines = wrap_title(name)
    title_y = 70
    title = "".join(
        f'<text x="100" y="{title_y + 24 * i}" font-size="20" font-weight="700" text-anchor="middle">{_xml(line)}</text>'
        for i, line in enumerate(lines)
    )
    year_text = f'<text x="100" y="{title_y + 24 * len(lines) + 6}" font-size="15" text-anchor="middle" opacity="0.85">{year}</text>' if year else ""
    figure = (
        '<circle cx="100" cy="200" r="18" fill-opacity="0.35" fill="currentColor"/>'
        '<ellipse cx="100" cy="238" rx="32" ry="16" fill-opacity="0.35" fill="currentColor"/>'
        if st.kind == "cast"
        else ""
    )
    label = _xml(wrap_title(st.label, cells=22, max_lines=1)[0])
    tone = _xml(variant.tone)
    alt = _xml(f"{name}{f' ({year})' if year else ''}: {st.label} artwork, {variant.tone} tone")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'font-family="Helvetica, Arial, sans-serif" color="{st.text}" fill="{st.text}">'
        f"<title>{alt}</title>"
        f'<defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="{st.background}"/>'
        f'<stop offset="1" stop-color="{st.accent}"/></linearGradient></defs>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="url(#g)"/>'
        f'<text x="188" y="22" font-size="11" text-anchor="end" opacity="0.8">{tone}</text>'
        f"{title}{year_text}{figure}"
        f'<rect x="0" y="262" width="{WIDTH}" height="38" fill="#000" fill-opacity="0.45"/>'
        f'<text x="100" y="287" font-size="15" font-weight="600" text-anchor="middle" fill="#fff">{label}</text>'
        "</svg>"
    )
