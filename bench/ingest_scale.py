"""Ingest at scale: a synthetic ml-25m-shaped release, time and peak memory, extrapolated.

ml-25m itself (25M ratings, 650 MB ratings.csv) is not available here, so this writes a
release of the same shape (``--rows`` ratings, 62k movies with genres, 162k users) to
``--dir`` and ingests it in a fresh subprocess per repeat, so ``ru_maxrss`` is the
ingest's own peak. The baseline, measured in the same run the same way, is a plain
``pandas.read_csv`` of the whole ratings file with default dtypes (no validation, no
output): the ratio says what chunking, validation, and writing the dataset cost.

    /tmp/venv/bin/python bench/ingest_scale.py --rows 5000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ML25M_ROWS = 25_000_095
ML25M_BYTES = 678_260_987  # size of ml-25m/ratings.csv
GENRES = "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Film-Noir Horror IMAX Musical Mystery Romance Sci-Fi Thriller War Western".split()

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
if sys.argv[1] == "ingest":
    from homepage.ingest import ingest_movielens
    m, _ = ingest_movielens(Path(sys.argv[2]), Path(sys.argv[3]))
    n = m.counts["events"]
else:
    import pandas as pd
    n = len(pd.read_csv(Path(sys.argv[2]) / "ratings.csv"))
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM is this process's own peak; ru_maxrss can carry the parent's peak over fork+exec
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "cpu_seconds": ru.ru_utime + ru.ru_stime, "rows": n, "peak_rss_mb": hwm / 1024}))
"""


def write_release(d: Path, rows: int, seed: int = 0) -> None:
    """A release in the movielens-csv layout with ml-25m's shape."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    n_movies, n_users = 62_423, 162_541
    k = rng.integers(1, 4, n_movies)
    genres = ["|".join(rng.choice(GENRES, size=int(j), replace=False)) for j in k]
    years = rng.integers(1920, 2020, n_movies)
    pd.DataFrame(
        {"movieId": np.arange(1, n_movies + 1), "title": [f"Movie {i}, The ({y})" for i, y in enumerate(years)], "genres": genres}
    ).to_csv(d / "movies.csv", index=False)
    chunk = 1_000_000
    with open(d / "ratings.csv", "w") as fh:
        fh.write("userId,movieId,rating,timestamp\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = np.sort(rng.integers(1, n_users + 1, n))
            movies = (rng.zipf(1.3, n) % n_movies) + 1
            stars = rng.integers(1, 11, n) / 2
            ts = rng.integers(789_652_009, 1_574_327_703, n)
            pd.DataFrame({"u": users, "m": movies, "r": stars, "t": ts}).to_csv(fh, header=False, index=False)


def run(mode: str, src: Path, out: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def naive_variants(titles: pd.DataFrame, posters: dict[int, str]) -> pd.DataFrame:
    """The baseline for ``derive_variants``: the obvious loop over titles, row by row."""
    from artwork.variants import GENRE_TONE, slug

    out = []
    for row in titles.itertuples(index=False):
        t = row.title_id
        out.append({"variant_id": f"{t}-n", "title_id": t, "emphasis_genre": None, "featured_cast": None, "tone": "neutral"})
        for g in list(row.genres)[:3]:
            out.append({"variant_id": f"{t}-g-{slug(g)}", "title_id": t, "emphasis_genre": g, "featured_cast": None, "tone": GENRE_TONE.get(g, "neutral")})
        for c in list(row.cast)[:2]:
            out.append({"variant_id": f"{t}-c-{slug(c)}", "title_id": t, "emphasis_genre": None, "featured_cast": c, "tone": "neutral"})
        if t in posters:
            out.append({"variant_id": f"{t}-p", "title_id": t, "emphasis_genre": None, "featured_cast": None, "tone": "poster"})
    for v in out:
        v["image_url"] = posters[v["title_id"]] if v["tone"] == "poster" else f"/artwork/{v['title_id']}/{v['variant_id']}.svg"
    return pd.DataFrame(out)


def bench_variants(n_titles: int = 60_000, repeats: int = 5) -> None:
    """``derive_variants`` on a 60k-title catalog (ml-25m has 62k) against the per-title loop."""
    from artwork.variants import derive_variants

    rng = np.random.default_rng(1)
    titles = pd.DataFrame(
        {
            "title_id": np.arange(1, n_titles + 1),
            "genres": [list(rng.choice(GENRES, size=int(k), replace=False)) for k in rng.integers(0, 5, n_titles)],
            "cast": [[f"Actor {a:05d}" for a in rng.integers(0, 20_000, int(k))] for k in rng.integers(0, 5, n_titles)],
        }
    )
    posters = {int(t): f"https://img.example/{t}.jpg" for t in titles["title_id"][::3]}
    times: dict[str, list[float]] = {"derive_variants": [], "per-title loop": []}
    for _ in range(repeats):
        for name, fn in (("derive_variants", derive_variants), ("per-title loop", naive_variants)):
            t = time.perf_counter()
            v = fn(titles, posters)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"variants for {n_titles:,} titles ({len(v):,} variants), median of {repeats}:")
    for k, m in med.items():
        print(f"  {k:16s} {m:6.2f} s")
    print(f"  ratio derive_variants/loop: {med['derive_variants'] / med['per-title loop']:.2f}")


def ensure_release(d: Path, rows: int) -> Path:
    src = d / f"src-{rows}"
    if not (src / "ratings.csv").is_file() or sum(1 for _ in open(src / "ratings.csv", "rb")) != rows + 1:
        t = time.perf_counter()
        write_release(src, rows)
        print(f"wrote {rows:,} ratings in {time.perf_counter() - t:.1f} s")
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="ratings in the large release (a 5x smaller one fits the line)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ingest-scale"))
    ap.add_argument("--variants-only", action="store_true", help="only the derive_variants timing")
    args = ap.parse_args()
    if args.variants_only:
        bench_variants()
        return
    sizes = (args.rows // 5, args.rows)
    med: dict[int, dict[str, dict[str, float]]] = {}
    for rows in sizes:
        src = ensure_release(args.dir, rows)
        runs: dict[str, list[dict[str, float]]] = {"ingest": [], "read_csv": []}
        for _ in range(args.repeats):  # interleaved so machine load hits both alike
            runs["ingest"].append(run("ingest", src, args.dir / "out"))
            runs["read_csv"].append(run("read_csv", src, args.dir / "out"))
        med[rows] = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "cpu_seconds", "peak_rss_mb")} for k, v in runs.items()}
        ing, base = med[rows]["ingest"], med[rows]["read_csv"]
        size = (src / "ratings.csv").stat().st_size
        print(f"ratings.csv {rows:>10,} rows {size / 1e6:5.0f} MB, median of {args.repeats}:")
        print(f"  ingest    {ing['seconds']:7.1f} s wall {ing['cpu_seconds']:7.1f} s CPU  peak RSS {ing['peak_rss_mb']:7.0f} MB")
        print(f"  read_csv  {base['seconds']:7.1f} s wall {base['cpu_seconds']:7.1f} s CPU  peak RSS {base['peak_rss_mb']:7.0f} MB  (baseline: plain pandas, no validation, no output)")
        print(f"  ratio ingest/read_csv: time {ing['seconds'] / base['seconds']:.2f}, memory {ing['peak_rss_mb'] / base['peak_rss_mb']:.2f}")
    # a line through the two sizes: fixed cost (imports, 62k titles, variants) + per-rating cost
    (a, b) = sizes
    for what in ("seconds", "cpu_seconds", "peak_rss_mb"):
        ya, yb = med[a]["ingest"][what], med[b]["ingest"][what]
        slope = (yb - ya) / (b - a)
        fixed = ya - slope * a
        unit = "MB" if what == "peak_rss_mb" else "s"
        per = f"{slope * 2**20:.0f} bytes a rating" if what == "peak_rss_mb" else f"{slope * 1e6:.2f} s per million ratings"
        print(f"ingest {what}: fixed {fixed:.1f} {unit} + {per} -> ml-25m ({ML25M_ROWS:,} ratings): ~{fixed + slope * ML25M_ROWS:.0f} {unit}")
    print(json.dumps({"sizes": sizes, "median": {str(k): v for k, v in med.items()}}))
    bench_variants()


if __name__ == "__main__":
    main()
