"""The last version a worker served, kept on local disk: the fallback of a worker that starts while Redis is down.

A worker's models and popular rows come from Redis; one started during an outage (a deploy, a
restart, a new node) would have nothing to serve but empty pages. Each time a worker puts a
version live it writes, next to the unpacked bundle, one file holding that version's name, the
bundle directory and the world counters the fallback page is built from; a worker that cannot
reach Redis at start-up loads them and serves the degraded popular page until Redis answers.
Each store (server and key prefix) has its own file: deployments sharing a models directory
wrote one file over each other's, and only the last to put a version live kept its fallback.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from homepage.replaced_file import replaced
from homepage.state import GlobalState
from homepage.unpacked import store_tag

LEGACY_FILE_NAME = "last-good.npz"  # one per directory, whichever store wrote it last (before stores had their own)
FORMAT = 1


def file_name(store_id: str) -> str:
    """The file store ``store_id``'s workers keep their last version in."""
    return f"last-good-{store_tag(store_id)}.npz"


@dataclass(frozen=True)
class LastGood:
    """What a worker served last: the store's version, its unpacked bundle, its world and clock."""

    store_version: str
    bundle_dir: Path
    world: GlobalState
    clock_offset: int
    policy: str


def save_last_good(models_dir: Path, last: LastGood, store_id: str) -> Path:
    """Write ``last`` as ``models_dir/last-good-<store tag>.npz``, atomically (workers may write it at once).

    ``store_id`` names the store it came from (server and key prefix): a deployment sharing the
    directory with another keeps its own file, and does not serve the other's version.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    w = last.world
    regions = sorted(w.region_counts)
    meta = {
        "format": FORMAT,
        "store": store_id,
        "store_version": last.store_version,
        "bundle_dir": str(Path(last.bundle_dir).resolve()),
        "clock_offset": int(last.clock_offset),
        "policy": last.policy,
        "as_of": int(w.as_of),
        "half_life": float(w.half_life),
        "n_users": int(w.n_users),
        "regions": regions,
    }
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "counts": np.asarray(w.counts),
        "decayed": np.asarray(w.decayed),
        "rating_sum": np.asarray(w.rating_sum),
        "rating_count": np.asarray(w.rating_count),
    }
    for i, r in enumerate(regions):
        arrays[f"region_counts_{i}"] = np.asarray(w.region_counts[r])
        if r in w.region_decayed:
            arrays[f"region_decayed_{i}"] = np.asarray(w.region_decayed[r])
    path = models_dir / file_name(store_id)
    with replaced(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load_last_good(models_dir: Path, store_id: str) -> LastGood | None:
    """The last version served from ``models_dir`` by ``store_id``'s workers, or None (none, another store's, damaged or gone).

    Without the store's own file, the one a release before those kept (if this store wrote it).
    """
    own = Path(models_dir) / file_name(store_id)
    return _load(own if own.is_file() else Path(models_dir) / LEGACY_FILE_NAME, store_id)


def _load(path: Path, store_id: str) -> LastGood | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT or meta.get("store") != store_id:
                return None
            regions = list(meta["regions"])
            world = GlobalState(
                as_of=int(meta["as_of"]),
                half_life=float(meta["half_life"]),
                counts=z["counts"],
                decayed=z["decayed"],
                rating_sum=z["rating_sum"],
                rating_count=z["rating_count"],
                region_counts={r: z[f"region_counts_{i}"] for i, r in enumerate(regions)},
                region_decayed={r: z[f"region_decayed_{i}"] for i, r in enumerate(regions) if f"region_decayed_{i}" in z},
                n_users=int(meta["n_users"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    bundle_dir = Path(meta["bundle_dir"])
    if not (bundle_dir / "manifest.json").is_file():
        return None
    return LastGood(str(meta["store_version"]), bundle_dir, world, int(meta["clock_offset"]), str(meta["policy"]))
