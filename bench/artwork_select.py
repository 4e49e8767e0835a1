"""Speed of the artwork selector: artwork for every title of a 20 x 25 page in one call.

    python bench/artwork_select.py [--titles 10000 --calls 2000]

Prints p50/p90 of ``ArtworkSelector.choose`` and, measured in the same run, of a baseline
that scores each cell's variants one title at a time with the explicit features (what a
non-vectorised selector would do), and the ratio. Target: choose p50 <= 0.5 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from artwork.context import ContextLayout
from artwork.features import design, user_dim
from artwork.selector import ArtworkSelector
from homepage.catalog import Catalog

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")  # fmt: skip
TONES = ("neutral", "dark", "bright", "comedic")


def random_catalog(n_titles: int, seed: int = 0) -> Catalog:
    """Titles with 1-3 genres, 3-6 cast members and 3-6 tagged variants each."""
    rng = np.random.default_rng(seed)
    n_cast = max(60, n_titles // 3)
    titles = pd.DataFrame(
        {
            "title_id": np.arange(1, n_titles + 1),
            "name": [f"T{i}" for i in range(n_titles)],
            "genres": [list(rng.choice(GENRES, rng.integers(1, 4), replace=False)) for _ in range(n_titles)],
            "cast": [[f"A{a}" for a in rng.choice(n_cast, rng.integers(3, 7), replace=False)] for _ in range(n_titles)],
        }
    )
    rows = []
    for i, (g, c) in enumerate(zip(titles.genres, titles.cast)):
        for k in range(int(rng.integers(3, 7))):
            kind = k % 3
            rows.append((f"{i + 1}-{k}", i + 1, g[k % len(g)] if kind == 1 else None, c[k % len(c)] if kind == 2 else None, TONES[k % 4]))
    variants = pd.DataFrame(rows, columns=["variant_id", "title_id", "emphasis_genre", "featured_cast", "tone"])
    variants["image_url"] = ""
    return Catalog.from_frames(titles, variants)


def fitted_selector(catalog: Catalog, n_users: int, seed: int = 0) -> ArtworkSelector:
    """A selector with random weights (speed does not depend on their values), per-user weights included."""
    rng = np.random.default_rng(seed)
    sel = ArtworkSelector(epsilon=0.05).prepare(catalog)
    sel.theta_ = rng.normal(0, 0.1, sel.theta_.shape)
    sel._bias_ids = sel.table_.variant_ids[sel.table_.valid]
    sel._bias_values = rng.normal(0, 0.05, sel._bias_ids.size)
    sel.user_ids_ = np.arange(n_users, dtype=np.int64)
    sel.user_weights_ = rng.normal(0, 0.1, (n_users, user_dim(len(sel.tones_))))
    return sel.prepare(catalog)


def baseline_choose(sel: ArtworkSelector, context: np.ndarray, page: np.ndarray) -> np.ndarray:
    """Per-cell loop: explicit features of each variant of each title, then argmax."""
    ctx = context[None, :]
    out = np.full(page.shape, -1)
    for (r, c), t in np.ndenumerate(page):
        if t < 0:
            continue
        k = int(sel.table_.n_variants[t])
        x = design(ctx, np.zeros(k, np.int64), np.full(k, t), np.arange(k), sel.table_)
        out[r, c] = int(np.argmax(x @ sel.theta_ + sel.variant_bias_[t, :k]))
    return out


def timed(fn, calls: int) -> np.ndarray:
    ts = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        ts[i] = time.perf_counter() - t0
    return ts * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--titles", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--baseline-calls", type=int, default=50)
    args = ap.parse_args()
    cat = random_catalog(args.titles)
    sel = fitted_selector(cat, args.users)
    layout = ContextLayout.of(cat)
    rng = np.random.default_rng(1)
    pages = [rng.choice(args.titles, 500, replace=False).reshape(20, 25) for _ in range(64)]
    contexts = rng.normal(0, 0.5, (64, layout.dim)).astype(np.float32)
    for i in range(50):  # warm-up
        sel.choose(contexts[i % 64], pages[i % 64], i, 1_700_000_000)
    fast = timed(lambda i: sel.choose(contexts[i % 64], pages[i % 64], i % args.users, 1_700_000_000 + i), args.calls)
    base = timed(lambda i: baseline_choose(sel, contexts[i % 64], pages[i % 64]), args.baseline_calls)
    p50, p90 = np.percentile(fast, [50, 90])
    b50 = np.percentile(base, 50)
    print(f"catalog {args.titles} titles, {int(sel.table_.n_variants.sum())} variants (max {sel.table_.max_variants}/title), context dim {layout.dim}")
    print(f"choose, 20x25 page, one call:  p50 {p50:.3f} ms  p90 {p90:.3f} ms  ({args.calls} calls)  target p50 <= 0.5 ms: {'PASS' if p50 <= 0.5 else 'FAIL'}")
    print(f"baseline per-title loop:        p50 {b50:.3f} ms  ({args.baseline_calls} calls)")
    print(f"speed-up (baseline p50 / choose p50): {b50 / p50:.0f}x")


if __name__ == "__main__":
    main()
