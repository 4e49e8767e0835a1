"""Two bundles trained on the same dataset (e.g. by the local and the Spark engine): are they the same?

Prints, per ranker, whether every learned array is equal (exactly, or to 1e-6 relative for
float arrays), the personalised ranker's held-out ndcg@20 for both bundles on a sample of
users (ALS factors differ between implicit and Spark MLlib; docs/spark.md gives the tolerance),
and the page model's training report side by side, and whether its trees are identical.

    python bench/compare_bundles.py DATASET MODELS_A MODELS_B [--users 5000]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from homepage.bundle import load_bundle
from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.evaluation.ranker_eval import KS, ranked_lists, temporal_split
from homepage.evaluation.ranker_metrics import summarise
from homepage.eventlog import EventLog


def same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[bool, list[str]]:
    """Whether two rankers' arrays agree, and the names of those that are not bitwise equal."""
    if sorted(a) != sorted(b):
        return False, sorted(set(a) ^ set(b))
    inexact = [k for k in a if not np.array_equal(a[k], b[k])]
    close = all(a[k].shape == b[k].shape and a[k].dtype.kind == "f" and np.allclose(a[k], b[k], rtol=1e-6, atol=0) for k in inexact)
    return close, inexact


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("a", type=Path, help="a models directory or bundle")
    ap.add_argument("b", type=Path, help="another, trained on the same dataset and cut-off")
    ap.add_argument("--users", type=int, default=5000, help="held-out users sampled for ndcg@20")
    args = ap.parse_args()
    A, B = load_bundle(args.a), load_bundle(args.b)
    if A.until != B.until:
        raise SystemExit(f"the bundles' cut-offs differ: {A.until} vs {B.until}")
    for ra, rb in zip(A.rankers, B.rankers, strict=True):
        ok, inexact = same_arrays(ra.arrays(), rb.arrays())
        note = "bitwise" if not inexact else f"not bitwise: {', '.join(inexact)}"
        print(f"{ra.name:<20} arrays equal (1e-6): {ok!s:<5}  {note}", flush=True)

    ds = load_dataset(args.dataset, columns=["user_id", "title_id", "kind", "ts", "progress", "stars"])
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    del ds
    split = temporal_split(log, A.until)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(split.users.size, size=min(args.users, split.users.size), replace=False))
    split = replace(split, users=split.users[pick], positives=[split.positives[i] for i in pick])
    for name, bundle in (("a", A), ("b", B)):
        ranker = next(r for r in bundle.rankers if r.name == "personalized")
        m = summarise(ranked_lists(ranker, log, catalog, split), split.positives, split.popularity, KS)
        print(f"personalized ndcg@20 ({name}, {pick.size} held-out users): {m['ndcg@20']:.4f}", flush=True)
    for name, bundle in (("a", A), ("b", B)):
        print(f"page model ({name}): {bundle.manifest['components']['page_model']['training']}")
    same_trees = (A.path / "page_model" / "model.txt").read_bytes() == (B.path / "page_model" / "model.txt").read_bytes()
    print(f"page model trees identical: {same_trees}")


if __name__ == "__main__":
    main()
