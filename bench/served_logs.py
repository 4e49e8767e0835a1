"""Served-log experiment on the committed synthetic world: examination estimate error, and
TRUE expected plays of pages from page models trained on position-biased logs with and
without correction, against the logging policy, row ranking, template and an oracle greedy page.

    python bench/served_logs.py --json OUT.json [--pages 1200 --visits 20 --random-share 0.05
        --policy template --eval 400 --replay-pages 200 --objective lambdarank --seed 0 --world fixtures/world-small]

Trains a bundle (rankers only) on the world up to its default split, serves pages after it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--world", type=Path, default=REPO / "fixtures" / "world-small")
    ap.add_argument("--pages", type=int, default=1200)
    ap.add_argument("--visits", type=int, default=20)
    ap.add_argument("--random-share", type=float, default=0.05)
    ap.add_argument("--policy", default="template")
    ap.add_argument("--eval", type=int, default=400)
    ap.add_argument("--replay-pages", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--objective", choices=("lambdarank", "regression"), default="lambdarank")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from fixtures.simulator import BrowsingSimulator, WorldTruth
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.dataset import load_dataset
    from homepage.eventlog import EventLog
    from homepage.page import PageModels
    from homepage.servedlogs.experiment import ExperimentSpec, run_experiment

    t0 = time.perf_counter()
    ds = load_dataset(args.world)
    cfg = PipelineConfig(page=PageConfig(train_model=False))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = train_bundle(ds, Path(tmp), cfg)
        models = PageModels.from_bundle(bundle)
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    sim = BrowsingSimulator(WorldTruth.load(args.world), seed=args.seed)
    spec = ExperimentSpec(pages=args.pages, visits=args.visits, random_share=args.random_share, logging_policy=args.policy,
                          eval_requests=args.eval, replay_pages=args.replay_pages, num_rounds=args.rounds, objective=args.objective, seed=args.seed)
    report = run_experiment(sim, log, models, bundle.until + 1, int(log.last_ts), cfg.half_life_seconds, spec,
                            progress=lambda s: print(f"[{time.perf_counter() - t0:6.0f}s] {s}", file=sys.stderr))

    ex = report["examination"]
    print(f"examination ({ex['method']}): max |error| {ex['max_abs_error']:.3f}, mean {ex['mean_abs_error']:.3f}, viewport max {ex['viewport_max_abs_error']:.3f}")
    print(f"{'policy':32s} {'true expected plays [95% CI]':32s} {'/ oracle [95% CI]':24s}")
    for name, r in report["true_expected_plays"].items():
        ratio = r.get("ratio_to_oracle")
        rs = f"{ratio['mean']:.3f} [{ratio['ci'][0]:.3f}, {ratio['ci'][1]:.3f}]" if ratio else ""
        print(f"{name:32s} {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]        {rs}")
    for name, d in report["paired"].items():
        print(f"{name:32s} {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]")
    if "replay" in report:
        rp = report["replay"]
        print(f"served-log replay on {rp['layouts']} held-out layouts ({rp['visits']} visits): estimate vs true expected plays")
        for name, r in rp["policies"].items():
            true = rp["true_expected_plays_same_requests"].get(name)
            ts = f"{true:.3f}" if true is not None else "(observed)"
            print(f"  {name:14s} corrected {r['corrected']['mean']:.3f} [{r['corrected']['ci'][0]:.3f}, {r['corrected']['ci'][1]:.3f}]"
                  f"  discounted {r['discounted']['mean']:.3f}  overlap {r['overlap']['mean']:.2f}  true {ts}")
    report["total_seconds"] = time.perf_counter() - t0
    print(f"total {report['total_seconds']:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
