"""How much an equally valid retraining moves replay's paired differences: the same data, other ALS seeds.

A replay's bootstrap interval covers the sampling of users, not the fitting: the personalised
ranker's ALS starts from random factors (``seed`` in its config), and the page model learns
from pages built with those factors. This trains one bundle per seed on the same dataset and
cut, replays each on the same requests, and prints each seed's paired differences (stage-wise
minus each baseline, with their intervals) and, across seeds, their mean, standard deviation
and range. A difference smaller than the spread across seeds is not a property of the policy.

    python bench/retrain_variance.py DATASET [--seeds 0,1,2,3,4] [--work DIR] [--json OUT]

DATASET is a dataset directory (``homepage ingest`` output, or ``fixtures/world-small``).
Every train and replay is a ``homepage`` command in its own process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ndcg_2d", "viewport_recall", "page_recall")
PAIRS = ("stage-wise - row-ranking", "stage-wise - template", "stage-wise - single-list")


def homepage(*args: str) -> None:
    """Run one ``homepage`` command; its output goes to stderr only if it fails."""
    proc = subprocess.run([sys.executable, "-m", "homepage", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"homepage {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def config_with_seed(seed: int) -> dict[str, object]:
    """The default pipeline configuration with the personalised ranker's ALS seed set."""
    shown = subprocess.run([sys.executable, "-m", "homepage", "config", "show"], capture_output=True, text=True, cwd=ROOT, check=True)
    config = json.loads(shown.stdout)
    for ranker in config["rankers"]:
        if ranker["name"] == "personalized":
            ranker.setdefault("config", {})["seed"] = seed
    return config


def one_seed(dataset: Path, seed: int, work: Path) -> dict[str, object]:
    """Train and replay with one seed; the replay's policies and paired differences."""
    cfg = work / f"config-{seed}.json"
    cfg.write_text(json.dumps(config_with_seed(seed)))
    t0 = time.perf_counter()
    homepage("train", str(dataset), "--out", str(work / f"models-{seed}"), "--config", str(cfg))
    t1 = time.perf_counter()
    out = work / f"replay-{seed}.json"
    homepage("replay", str(dataset), "--models", str(work / f"models-{seed}"), "--json", str(out))
    report = json.loads(out.read_text())
    return {
        "seed": seed,
        "train_seconds": round(t1 - t0, 1),
        "replay_seconds": round(time.perf_counter() - t1, 1),
        "policies": {p: {m: report["policies"][p][m]["mean"] for m in METRICS} for p in report["policies"]},
        "paired": {pair: {m: report["paired"][pair][m] for m in METRICS} for pair in PAIRS if pair in report["paired"]},
        "requests": report["protocol"]["warm_requests"],
    }


def summary(runs: list[dict[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per pair and metric, across seeds: mean, standard deviation, min and max of the paired mean, and how many
    seeds' intervals lie above zero."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pair in PAIRS:
        rows = [r["paired"][pair] for r in runs if pair in r["paired"]]  # type: ignore[index,operator]
        if not rows:
            continue
        out[pair] = {}
        for m in METRICS:
            means = [row[m]["mean"] for row in rows]
            out[pair][m] = {
                "mean": statistics.fmean(means),
                "sd": statistics.stdev(means) if len(means) > 1 else 0.0,
                "min": min(means),
                "max": max(means),
                "seeds_above_zero": sum(row[m]["ci"][0] > 0 for row in rows),
                "seeds_below_zero": sum(row[m]["ci"][1] < 0 for row in rows),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="ALS seeds, comma-separated (0 is the default configuration's)")
    ap.add_argument("--work", type=Path, default=None, help="where bundles and replays go (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="write the runs and the summary here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = []
        for seed in seeds:
            run = one_seed(args.dataset.resolve(), seed, work)
            runs.append(run)
            cells = "  ".join(
                f"{pair.split(' - ')[1]} {m}: {v[m]['mean']:+.4f} [{v[m]['ci'][0]:+.4f}, {v[m]['ci'][1]:+.4f}]"
                for pair, v in run["paired"].items()  # type: ignore[union-attr]
                for m in METRICS[:2]
            )
            print(f"seed {seed} (train {run['train_seconds']} s, replay {run['replay_seconds']} s): stage-wise minus {cells}", flush=True)
    result = {"dataset": str(args.dataset), "seeds": seeds, "runs": runs, "summary": summary(runs)}
    print("\nacross seeds (mean of the paired means, sd, range; seeds whose 95% interval is above / below zero):")
    for pair, by_metric in result["summary"].items():
        for m, s in by_metric.items():
            print(
                f"  {pair:26} {m:16} {s['mean']:+.4f}  sd {s['sd']:.4f}  [{s['min']:+.4f}, {s['max']:+.4f}]"
                f"  above {s['seeds_above_zero']}/{len(runs)}  below {s['seeds_below_zero']}/{len(runs)}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
