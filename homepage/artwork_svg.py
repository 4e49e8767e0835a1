"""Placeholder artwork: an SVG poster per variant, so pages render with no external image host.

A variant's emphasis is visible at a glance: the background hue comes from the emphasised
genre (or the featured cast member), the tone sets lightness and saturation, and a label
band names the emphasis. Pure string building: no I/O, deterministic for the same input.
"""

from __future__ import annotations

import textwrap
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
    lines = textwrap.wrap(name, width=16, max_lines=4, placeholder="…") or [""]
    title_y = 70
    title = "".join(
        f'<text x="100" y="{title_y + 24 * i}" font-size="20" font-weight="700" text-anchor="middle">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    year_text = f'<text x="100" y="{title_y + 24 * len(lines) + 6}" font-size="15" text-anchor="middle" opacity="0.85">{year}</text>' if year else ""
    figure = (
        '<circle cx="100" cy="200" r="18" fill-opacity="0.35" fill="currentColor"/>'
        '<ellipse cx="100" cy="238" rx="32" ry="16" fill-opacity="0.35" fill="currentColor"/>'
        if st.kind == "cast"
        else ""
    )
    label = escape(textwrap.shorten(st.label, width=22, placeholder="…"))
    tone = escape(variant.tone)
    alt = escape(f"{name}{f' ({year})' if year else ''}: {st.label} artwork, {variant.tone} tone")
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
