"""A new user's first page: with and without the personalised ranker's popular-genre rows.

A user without history gets no "for you" rows; before ``popular_genres`` their first page held
the top-N and trending rows only. This trains two bundles on the same dataset and cut,
identical except for that switch, and replays every first visit after the cut
(``first_visit_requests``: one second before each new user's first event, targets the next 30
days) with each policy of both. It prints, per policy, the mean ndcg_2d and viewport recall
with the rows on and off, the paired difference with a 95% interval over users, and the mean
number of rows and titles on the page.

    python bench/new_users.py DATASET [--workers 2] [--json OUT]

DATASET is a dataset directory (``homepage ingest`` output, or ``fixtures/world-small``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from homepage.bundle import train_bundle  # noqa: E402
from homepage.catalog import Catalog  # noqa: E402
from homepage.config import DEFAULT_RANKERS, PipelineConfig  # noqa: E402
from homepage.dataset import load_dataset  # noqa: E402
from homepage.eventlog import EventLog  # noqa: E402
from homepage.page import PageModels  # noqa: E402
from homepage.replay.metrics import bootstrap_mean  # noqa: E402
from homepage.replay.protocol import ReplayProtocol, first_visit_requests  # noqa: E402
from homepage.replay.run import ReplayResult, replay  # noqa: E402
from rankers.registry import RankerSpec  # noqa: E402

POLICIES = ["stage-wise", "row-ranking", "template", "single-list"]
METRICS = ("ndcg_2d", "viewport_recall")


def config(popular_genres: bool) -> PipelineConfig:
    """The default pipeline with the personalised ranker's ``popular_genres`` set."""
    rankers = tuple(
        RankerSpec(name=s.name, config={**s.config, "popular_genres": popular_genres}) if s.name == "personalized" else s
        for s in DEFAULT_RANKERS
    )
    return PipelineConfig(rankers=rankers)


def paired(on: ReplayResult, off: ReplayResult, n_boot: int) -> dict[str, dict[str, object]]:
    """Per policy: each metric's mean on and off with the paired on - off and its 95% interval over users; page sizes."""
    users = on.requests.user_ids
    out: dict[str, dict[str, object]] = {}
    for p in POLICIES:
        part: dict[str, object] = {}
        for m in METRICS:
            a, b = np.asarray(on.runs[p].values[m]), np.asarray(off.runs[p].values[m])
            mean, lo, hi = bootstrap_mean(a - b, n_boot, groups=users)
            part[m] = {"on": float(a.mean()), "off": float(b.mean()), "diff": mean, "ci": [lo, hi]}
        part["titles_shown"] = {"on": float(np.mean([s.size for s in on.runs[p].shown])), "off": float(np.mean([s.size for s in off.runs[p].shown]))}
        out[p] = part
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    ds = load_dataset(args.dataset)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    on_cfg, off_cfg = config(True), config(False)
    split = log.quantile_time(on_cfg.split_quantile)
    requests = first_visit_requests(log, split)
    if len(requests) == 0:
        sys.exit(f"{args.dataset}: no user's first event comes after the cut {split}")
    with tempfile.TemporaryDirectory(prefix="new-users-") as tmp:
        t0 = time.perf_counter()
        on_m = PageModels.from_bundle(train_bundle(ds, Path(tmp) / "on", on_cfg, until=split, workers=args.workers))
        off_m = PageModels.from_bundle(train_bundle(ds, Path(tmp) / "off", off_cfg, until=split, workers=args.workers))
        train_s = time.perf_counter() - t0
        protocol = ReplayProtocol(split_time=split, rows=on_cfg.page.rows, cols=on_cfg.page.cols)
        runs = [replay(log, m, POLICIES, requests, protocol, on_cfg.half_life_seconds, split, workers=args.workers) for m in (on_m, off_m)]
    report = {
        "dataset": str(args.dataset),
        "split_time": split,
        "first_visits": len(requests),
        "users": int(np.unique(requests.user_ids).size),
        "policies": paired(runs[0], runs[1], args.bootstrap),
        "seconds": {"train_both": train_s, "total": time.perf_counter() - started},
    }
    print(f"{args.dataset}: {len(requests)} first visits after the cut (popular-genre rows on - off, 95% interval over users)")
    for p, part in report["policies"].items():  # type: ignore[union-attr]
        shown = part["titles_shown"]
        line = f"  {p:<12} titles shown {shown['on']:5.1f} vs {shown['off']:5.1f}"
        for m in METRICS:
            v = part[m]
            line += f"   {m} {v['on']:.4f} vs {v['off']:.4f}  {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
        print(line)
    print(f"train (both bundles) {train_s:.0f} s, total {report['seconds']['total']:.0f} s")  # type: ignore[index]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
