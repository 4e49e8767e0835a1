"""Off-policy evaluation tables: the synthetic world (estimates vs exact truth) and the Open Bandit sample
(Thompson-sampling click rate estimated from the random policy's logs vs observed).

    python bench/artwork_ope.py --json OUT.json [--users 500 --titles 400 --n-eval 200000 --n-train 400000] [--seed S]

JSON: {"synthetic": {POLICY: {ESTIMATOR: {"estimate", "truth", "rel_error", "low", "high"}}},
       "open_bandit": {CAMPAIGN: {ESTIMATOR: {"estimate", "observed", "rel_error", "low", "high"}}},
       "synthetic_policies": {...true play rates, oracle, ratios...}}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from shared_data import shared_dataset

REPO = Path(__file__).resolve().parents[1]


def synthetic(args: argparse.Namespace) -> tuple[dict, dict]:
    from artwork.experiment import run_synthetic_experiment, world_contexts
    from fixtures.simulator import BrowsingSimulator, WorldTruth
    from fixtures.world import WorldParams, generate_world, write_world
    from homepage.catalog import Catalog
    from homepage.dataset import load_dataset
    from homepage.eventlog import EventLog

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "world"
        write_world(generate_world(WorldParams(n_users=args.users, n_titles=args.titles, seed=args.seed)), out)
        ds = load_dataset(out)
        truth = WorldTruth.load(out)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    sim = BrowsingSimulator(truth)
    ctx = world_contexts(EventLog.from_frame(ds.events, catalog, ds.users), catalog, truth.user_ids, truth.period_end)
    print(f"world {args.users} users x {args.titles} titles ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    res = run_synthetic_experiment(
        sim, catalog, ctx, n_eval=args.n_eval, n_train=args.n_train, seed=args.seed, n_boot=args.n_boot,
        progress=lambda m: print(f"  {m} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr),
    )
    table = {
        policy: {
            e.estimator: {
                "estimate": e.value,
                "truth": res.truth[policy],
                "rel_error": (e.value - res.truth[policy]) / res.truth[policy],
                "low": e.low,
                "high": e.high,
            }
            for e in est
        }
        for policy, est in res.estimates.items()
    }
    summary = {
        "true_play_rate": res.truth,
        "oracle": res.oracle,
        "non_contextual_oracle": res.non_contextual_oracle,
        "contextual_over_non_contextual": res.truth["contextual"] / res.truth["non_contextual"],
        "contextual_over_oracle": res.truth["contextual"] / res.oracle,
        "n_eval": res.n_eval,
        "n_train": res.n_train,
        "world": {"users": args.users, "titles": args.titles, "seed": args.seed},
        "training": res.training,
        "seconds": time.perf_counter() - t0,
    }
    return table, summary


def open_bandit(args: argparse.Namespace, obd: Path) -> dict:
    from artwork.open_bandit import CAMPAIGNS, bts_from_random

    out = {}
    for campaign in CAMPAIGNS:
        est, observed = bts_from_random(obd, campaign, n_boot=args.n_boot, seed=args.seed)
        out[campaign] = {
            e.estimator: {
                "estimate": e.value,
                "observed": observed,
                "rel_error": (e.value - observed) / observed,
                "low": e.low,
                "high": e.high,
            }
            for e in est
        }
    return out


def print_tables(result: dict) -> None:
    print("\nSynthetic world: estimated vs true play rate")
    print(f"{'policy':<16}{'estimator':<10}{'estimate':>10}{'truth':>10}{'rel.err':>9}{'95% interval':>22}")
    for policy, row in result["synthetic"].items():
        for name, v in row.items():
            print(f"{policy:<16}{name:<10}{v['estimate']:>10.4f}{v['truth']:>10.4f}{v['rel_error']:>+9.3f}   [{v['low']:.4f}, {v['high']:.4f}]")
    s = result["synthetic_policies"]
    print(f"oracle {s['oracle']:.4f}; contextual / non-contextual {s['contextual_over_non_contextual']:.3f}; contextual / oracle {s['contextual_over_oracle']:.3f}")
    print("\nOpen Bandit (ZOZOTOWN): Thompson-sampling click rate estimated from the random policy's logs")
    print(f"{'campaign':<10}{'estimator':<10}{'estimate':>10}{'observed':>10}{'rel.err':>9}{'95% interval':>24}")
    for campaign, row in result["open_bandit"].items():
        for name, v in row.items():
            print(f"{campaign:<10}{name:<10}{v['estimate']:>10.5f}{v['observed']:>10.5f}{v['rel_error']:>+9.3f}   [{v['low']:.5f}, {v['high']:.5f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True, help="write the tables here")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--titles", type=int, default=400)
    ap.add_argument("--n-eval", type=int, default=200_000)
    ap.add_argument("--n-train", type=int, default=400_000, help="training impressions (a separate log from the evaluated one)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    obd = shared_dataset("open-bandit-dataset-small", script="bench/artwork_ope.py")  # before the synthetic half's minutes
    table, summary = synthetic(args)
    result = {"synthetic": table, "open_bandit": open_bandit(args, obd), "synthetic_policies": summary}
    args.json.write_text(json.dumps(result, indent=2))
    print_tables(result)


if __name__ == "__main__":
    main()
