"""Page-builder latency: ``build_page`` from 40 candidate rows to a 20 x 25 page, on one core.

Measures p50/p99 of the page-building step (candidate matrix, stage features, every page
model call, rules, de-duplication; the rankers' own time is excluded: their candidate rows
are prepared once per request with ``prepare_request``) for the stage-wise policy and for
row-ranking on the same requests, and prints the ratio.

    OMP_NUM_THREADS=1 python bench/pagebuilder_speed.py --models MODELS [--dataset DIR] [--requests 300]

``--models`` is a bundle from ``homepage train``. The rankers are refitted here at the bundle's cut-off with more rows each
(personalised genre rows, more "because you watched" anchors) so that a request yields
at least 40 candidate rows; requests with fewer are skipped, longer lists are cut to 40.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from shared_data import shared_dataset  # noqa: E402

BENCH_RANKERS = {"continue_watching": 1, "personalized": 14, "top_n": 2, "trending": 2, "video_to_video": 30}
# more, less strictly de-duplicated "because you watched" anchors, so requests reach 40 rows
V2V_EXTRA = {"max_anchor_overlap": 0.9, "max_anchor_similarity": 0.9, "anchor_pool": 100}


def pct(ms: np.ndarray) -> str:
    return f"p50 {np.median(ms):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms  mean {ms.mean():.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, default=None, help="ingested dataset; default: ingest ml-latest-small into a temp dir")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--cols", type=int, default=25)
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="timed builds per request and policy (the median is kept)")
    args = ap.parse_args()

    from homepage.bundle import load_bundle
    from homepage.dataset import load_dataset
    from homepage.domain import RequestContext
    from homepage.eventlog import EventLog
    from homepage.page import PageModels, build_page, prepare_request
    from homepage.pagebuilder.rules import MaxRowsRule
    from rankers.base import FitInput
    from rankers.registry import RankerSpec, build_rankers

    bundle = load_bundle(args.models)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            from homepage.ingest import ingest_movielens

            dataset = Path(tmp) / "mlsmall"
            ml_small = shared_dataset("movielens-latest-small", script="bench/pagebuilder_speed.py", without="--dataset DIR takes the dataset the bundle was trained on")
            ingest_movielens(ml_small, dataset)
        ds = load_dataset(dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    log = EventLog.from_frame(ds.events, bundle.catalog, ds.users)
    specs = [
        RankerSpec(
            name=s.name,
            config={**s.config, "max_rows": BENCH_RANKERS.get(s.name, s.config.get("max_rows", 1)), **(V2V_EXTRA if s.name == "video_to_video" else {})},
        )
        for s in bundle.config.rankers
    ]
    rankers = build_rankers(specs)
    until = bundle.until
    world = log.global_state(until, bundle.config.half_life_seconds)
    t0 = time.perf_counter()
    for r in rankers:
        r.fit(FitInput(log, bundle.catalog, until, world))
    print(f"rankers refitted with more rows in {time.perf_counter() - t0:.1f} s")
    pm = PageModels.from_bundle(bundle)
    # the bundle's rules, with room for 20 rows (the default allows 5 rows per ranker)
    rules = pm.rules.model_copy(update={"rules": tuple(r for r in pm.rules.rules if r.rule != "max_rows") + (MaxRowsRule(ranker="*", max=10),)})
    models = PageModels(pm.version, pm.config_hash, pm.catalog, tuple(rankers), page_model=pm.page_model, rules=rules)
    print(f"page model: {pm.page_model.forest.roots.size if pm.page_model else 0} trees (compiled tree walk)")

    rng = np.random.default_rng(0)
    users = log.user_ids[rng.permutation(log.user_ids.size)]
    prepared = []
    for uid in users:
        user = log.user_state(int(uid), until)
        if user.is_cold:
            continue
        ctx = RequestContext(user_id=int(uid), now=until, rows=args.rows, cols=args.cols)
        prep = prepare_request(user, world, models, ctx)
        if len(prep.candidates) < args.candidates:
            continue
        prep = type(prep)(prep.candidates[: args.candidates], prep.notes, prep.signals, prep.raw_personal)
        prepared.append((user, ctx, prep))
        if len(prepared) >= args.requests:
            break
    print(f"{len(prepared)} requests with {args.candidates} candidate rows each, page {args.rows} x {args.cols}")

    # CPU time of this thread (time.thread_time) is what one core spends, whatever else the
    # machine runs; wall time is printed beside it
    results: dict[str, np.ndarray] = {}
    for policy in ("row-ranking", "stage-wise"):
        for user, ctx, prep in prepared[:20]:  # warm-up
            build_page(user, world, models, ctx, policy=policy, prepared=prep)
        cpu, wall, placed = np.empty(len(prepared)), np.empty(len(prepared)), np.empty(len(prepared))
        for i, (user, ctx, prep) in enumerate(prepared):
            reps = np.empty((args.repeat, 2))
            for j in range(args.repeat):
                c, w = time.thread_time(), time.perf_counter()
                page = build_page(user, world, models, ctx, policy=policy, prepared=prep)
                reps[j] = ((time.thread_time() - c) * 1e3, (time.perf_counter() - w) * 1e3)
            cpu[i], wall[i] = np.median(reps, axis=0)
            placed[i] = len(page.rows)
            shown = [x for r in page.rows for x in r.title_ids]
            assert len(shown) == len(set(shown)), "duplicate titles on a page"
        results[policy] = cpu
        print(f"{policy:12s} CPU {pct(cpu)} | wall {pct(wall)} | rows placed mean {placed.mean():.1f}")
    ratio = np.median(results["stage-wise"]) / np.median(results["row-ranking"])
    p99 = np.percentile(results["stage-wise"], 99) / np.percentile(results["row-ranking"], 99)
    print(f"stage-wise / row-ranking (CPU): p50 x{ratio:.2f}, p99 x{p99:.2f} (targets: stage-wise p50 <= 2 ms, p99 <= 5 ms)")


if __name__ == "__main__":
    main()
