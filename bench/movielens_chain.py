"""The MovieLens path end to end at a chosen size: ingest, train, replay; time, peak memory, page quality.

Only ml-latest-small is available here. This generates a synthetic world of the requested
shape, writes it as a MovieLens release (``fixtures/movielens_export.py``; ml-1m's ``::``
layout by default) and runs the three commands a user would, each in its own process, with
wall time, CPU time and peak RSS from ``wait4``. The baseline measured in the same run is a
plain ``pandas.read_csv`` of the ratings file (nothing validated, nothing written): the
ratios say what each step costs in units of merely reading the data.

    python bench/movielens_chain.py                                  # ml-1m's shape (6,040 users, 3,700 titles)
    python bench/movielens_chain.py --users 70000 --titles 10000 --events 14000000 --layout csv   # about ml-10m's
    python bench/movielens_chain.py --users 162541 --titles 59047 --events 37500000 --layout csv  # about ml-25m's
    python bench/movielens_chain.py ... --reuse      # the same release again: ingest, train, replay only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READ_RATINGS = r"""
import sys, pandas as pd
from pathlib import Path
d = Path(sys.argv[1])
if (d / "ratings.csv").is_file():
    n = len(pd.read_csv(d / "ratings.csv"))
elif (d / "ratings.dat").is_file():
    n = len(pd.read_csv(d / "ratings.dat", sep="::", engine="python", header=None, encoding="latin-1"))
else:
    n = len(pd.read_csv(d / "u.data", sep="\t", header=None))
print(n)
"""

WRITE_RELEASE = r"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd()))
from fixtures.movielens_export import write_movielens
Path(sys.argv[4]).write_text(str(write_movielens(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])))
"""


def timed(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd`` to completion; its wall and CPU seconds (children included) and peak RSS in MB."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"seconds": wall, "cpu_seconds": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--titles", type=int, default=3700)
    ap.add_argument("--events", type=int, default=1_000_000, help="world events; about 2/3 become ratings (one per user and title)")
    ap.add_argument("--layout", choices=("dat", "csv", "100k"), default="dat")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/movielens-chain"))
    ap.add_argument("--reuse", action="store_true", help="keep a world and release already in --dir (time ingest, train and replay only)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures and the replay's summary here")
    args = ap.parse_args()

    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    hp = [sys.executable, "-m", "homepage"]
    steps: dict[str, dict[str, float]] = {}
    world, release, dataset, models = d / "world", d / f"release-{args.layout}", d / "dataset", d / "models"
    marker = d / f"release-{args.layout}.complete"  # the shape it was made with, then its ratings
    shape = f"{args.users} {args.titles} {args.events} {args.seed}"
    made = marker.read_text().split() if marker.is_file() else []
    if args.reuse and made[:4] == shape.split():
        n = int(made[4])
        print(f"{release}: {n:,} ratings ({args.layout} layout), reused")
    else:
        if args.reuse:
            print(f"--reuse: no complete {args.layout} release of this shape in {d}; making one")
        marker.unlink(missing_ok=True)  # a failed run below must not leave a half-written release marked complete
        steps["generate (the world)"] = timed(
            [*hp, "generate", "--users", str(args.users), "--titles", str(args.titles), "--events", str(args.events), "--seed", str(args.seed), "--out", str(world)],
            d / "generate.log",
        )
        # in a child, like every step: a child's peak RSS starts from its parent's at fork (Linux keeps the
        # high-water mark across exec), so a bench process grown by the export would inflate every later figure
        steps["export (MovieLens release)"] = timed([sys.executable, "-c", WRITE_RELEASE, str(world), str(release), args.layout, str(d / "ratings.count")], d / "export.log")
        n = int((d / "ratings.count").read_text())
        print(f"{release}: {n:,} ratings ({args.layout} layout)")
        marker.write_text(f"{shape} {n}")
    steps["read_csv (baseline)"] = timed([sys.executable, "-c", READ_RATINGS, str(release)], d / "read.log")
    steps["ingest"] = timed([*hp, "ingest", "movielens", str(release), "--out", str(dataset)], d / "ingest.log")
    steps["train"] = timed([*hp, "train", str(dataset), "--out", str(models)], d / "train.log")
    report = d / "replay.json"
    steps["replay"] = timed([*hp, "replay", str(dataset), "--models", str(models), "--json", str(report)], d / "replay.log")

    base = steps["read_csv (baseline)"]["seconds"]
    print(f"\n{args.users:,} users x {args.titles:,} titles, {n:,} ratings ({args.layout}); one run each:")
    print(f"{'step':32s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s} {'x read_csv':>11s}")
    for name, s in steps.items():
        print(f"{name:32s} {s['seconds']:8.1f} {s['cpu_seconds']:8.1f} {s['peak_rss_mb']:8.0f} {s['seconds'] / base:11.1f}")
    rep = json.loads(report.read_text())
    print(f"\nreplay: {rep['protocol']['warm_requests']} warm requests, {rep['protocol']['users']} users")
    for policy, m in rep["policies"].items():
        print(f"  {policy:12s} ndcg_2d {m['ndcg_2d']['mean']:.4f}  viewport_recall {m['viewport_recall']['mean']:.4f}")
    for pair, m in rep["paired"].items():
        if pair.startswith("stage-wise"):
            nd, vr = m["ndcg_2d"], m["viewport_recall"]
            print(f"  {pair:26s} ndcg_2d {nd['mean']:+.4f} [{nd['ci'][0]:+.4f}, {nd['ci'][1]:+.4f}]"
                  f"  viewport_recall {vr['mean']:+.4f} [{vr['ci'][0]:+.4f}, {vr['ci'][1]:+.4f}]")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "ratings": n, "steps": steps,
                                         "replay": {"protocol": rep["protocol"], "policies": {p: {k: m[k] for k in ("ndcg_2d", "viewport_recall")} for p, m in rep["policies"].items()},
                                                    "paired": rep["paired"]}}, indent=1))


if __name__ == "__main__":
    main()
