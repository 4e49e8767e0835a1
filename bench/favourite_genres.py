"""Stated favourite genres on a user's first page: pages with and without them, on held-out synthetic users.

MovieLens has no stated genres, so this runs on a generated world where a share of users
(``--stated``) tell the service their strongest true genres (``WorldParams.stated_genres``).
Two bundles are trained on events up to the split, identical except for one switch of the
personalised ranker (``--switch``, by default ``favourite_genres``); both replay the same requests:

- *first visits*: every user whose first play comes after the split, asked for a page one
  second before it (no history), scored against what they played in the next 30 days;
- the usual sampled requests (``sample_requests``) of users with some history ("warm"),
  where stated genres only fill genre-row slots the history leaves free.

Differences are paired per request, with 95% intervals resampling users. A user who stated
nothing must get the same template page from both bundles (checked per request on the
metrics; stage-wise pages differ a little, each bundle's page model being trained on its own).

    python bench/favourite_genres.py                     # 4,000 users, half of them stating genres
    python bench/favourite_genres.py --json docs/results/favourite-genres.json
    python bench/favourite_genres.py --switch popular_beside_stated   # popular-genre rows beside stated ones, against none
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

from fixtures.world import WorldParams, generate_world, write_world  # noqa: E402
from homepage.bundle import train_bundle  # noqa: E402
from homepage.catalog import Catalog  # noqa: E402
from homepage.config import DEFAULT_RANKERS, PageConfig, PipelineConfig  # noqa: E402
from homepage.dataset import load_dataset  # noqa: E402
from homepage.eventlog import EventLog  # noqa: E402
from homepage.page import PageModels  # noqa: E402
from homepage.replay.metrics import bootstrap_mean  # noqa: E402
from homepage.replay.protocol import ReplayProtocol, first_visit_requests, sample_requests  # noqa: E402
from homepage.replay.run import ReplayResult, replay  # noqa: E402
from rankers.registry import RankerSpec  # noqa: E402

POLICIES = ["stage-wise", "template"]
METRICS = ("ndcg_2d", "viewport_recall")


def paired(on: ReplayResult, off: ReplayResult, mask: np.ndarray, n_boot: int) -> dict[str, dict[str, object]]:
    """Per policy and metric: mean on, mean off, and the paired on - off with a 95% interval over users."""
    users = on.requests.user_ids[mask]
    out: dict[str, dict[str, object]] = {}
    for p in POLICIES:
        out[p] = {}
        for m in METRICS:
            a = np.asarray(on.runs[p].values[m])[mask]
            b = np.asarray(off.runs[p].values[m])[mask]
            mean, lo, hi = bootstrap_mean(a - b, n_boot, groups=users) if a.size else (float("nan"),) * 3
            out[p][m] = {"on": float(a.mean()) if a.size else None, "off": float(b.mean()) if b.size else None, "diff": mean, "ci": [lo, hi]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--titles", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stated", type=float, default=0.5, help="share of users stating favourite genres")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=PageConfig().max_requests, help="page-model training requests (the config's page.max_requests)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument(
        "--switch", default="favourite_genres", choices=["favourite_genres", "popular_beside_stated"],
        help="the personalised ranker's switch the second bundle turns off",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fav-genres-") as tmp:
        root = Path(tmp)
        params = WorldParams(n_users=args.users, n_titles=args.titles, seed=args.seed, stated_genres=args.stated)
        write_world(generate_world(params), root / "world")
        ds = load_dataset(root / "world")
        catalog = Catalog.from_frames(ds.titles, ds.variants)
        log = EventLog.from_frame(ds.events, catalog, ds.users)
        on_cfg = PipelineConfig(page=PageConfig(max_requests=args.max_requests))
        off_rankers = tuple(
            RankerSpec(name=s.name, config={**s.config, args.switch: False}) if s.name == "personalized" else s for s in DEFAULT_RANKERS
        )
        off_cfg = PipelineConfig(rankers=off_rankers, page=PageConfig(max_requests=args.max_requests))
        split = log.quantile_time(on_cfg.split_quantile)
        t0 = time.perf_counter()
        on_b = train_bundle(ds, root / "on", on_cfg, until=split, workers=args.workers)
        off_b = train_bundle(ds, root / "off", off_cfg, until=split, workers=args.workers)
        train_s = time.perf_counter() - t0
        on_m, off_m = PageModels.from_bundle(on_b), PageModels.from_bundle(off_b)
        protocol = ReplayProtocol(split_time=split, rows=on_cfg.page.rows, cols=on_cfg.page.cols)
        half_life = on_cfg.half_life_seconds
        report: dict[str, object] = {"params": {**vars(args), "json": str(args.json)}, "split_time": split}
        stated = {int(u) for u, g in zip(ds.users["user_id"], ds.users["favourite_genres"]) if g is not None and len(g)}
        for name, requests in (("first_visits", first_visit_requests(log, split)), ("warm", sample_requests(log, protocol))):
            on = replay(log, on_m, POLICIES, requests, protocol, half_life, split, workers=args.workers)
            off = replay(log, off_m, POLICIES, requests, protocol, half_life, split, workers=args.workers)
            keep = np.ones(len(requests), bool) if name == "first_visits" else ~requests.cold  # warm: some history
            has = np.array([int(u) in stated for u in requests.user_ids.tolist()], bool) & keep
            silent = ~has & keep
            # per request, on the template (no model: the stage-wise models differ, each trained on its own pages)
            same = all(
                np.array_equal(np.asarray(on.runs["template"].values[m])[silent], np.asarray(off.runs["template"].values[m])[silent])
                for m in METRICS
            )
            report[name] = {
                "requests": int(keep.sum()),
                "requests_of_users_who_stated": int(has.sum()),
                "stated": paired(on, off, has, args.bootstrap),
                "all": paired(on, off, keep, args.bootstrap),
                "requests_of_users_who_stated_nothing": int(silent.sum()),
                "users_who_stated_nothing_get_the_same_template_pages": bool(same),
            }
        report["seconds"] = {"train_both": train_s, "total": time.perf_counter() - started}
    for name in ("first_visits", "warm"):
        part = report[name]
        assert isinstance(part, dict)
        print(f"{name}: {part['requests']} requests, {part['requests_of_users_who_stated']} of users who stated genres; "
              f"template pages of the {part['requests_of_users_who_stated_nothing']} others unchanged: "
              f"{part['users_who_stated_nothing_get_the_same_template_pages']}")
        for p, ms in part["stated"].items():
            for m, v in ms.items():
                print(f"  users who stated, {p:<10} {m:<15} on {v['on']:.4f}  off {v['off']:.4f}  on-off {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]")
    print(f"train (both bundles) {report['seconds']['train_both']:.0f} s, total {report['seconds']['total']:.0f} s")  # type: ignore[index]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
