"""Loading a dataset's state (and optionally a model bundle) into the store as a new version."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.dataset import load_dataset
from homepage.domain import LATEST_TIME
from homepage.erasure import applied_erasures, drop_users, file_without_users, pending_erasures, user_weight_file, user_weight_path
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.events_merge import MERGED_KEY
from homepage.model_erasure import erase_user_weights
from homepage.store import RedisStore, VersionMeta
from homepage.unpacked import MARK


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What ``publish_dataset`` did."""

    meta: VersionMeta
    users_written: int
    seconds: float
    deleted_versions: tuple[str, ...]
    unlisted_files: tuple[str, ...] = ()  # in the bundle directory but not in its manifest: not published


def new_version_name(now: float | None = None) -> str:
    """A sortable, unique version name such as ``20261122T040600Z-3fa2c1``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def check_keeps_a_model(store: RedisStore, dataset: Path) -> None:
    """A publish without ``--models`` must not replace a version that serves a model bundle.

    Workers cannot load a version without a model: they would stay on the old one (its
    events and profile writes going to a version nobody publishes from) and ``/health/ready``
    would answer 503 from every new worker.
    """
    active = store.active_version()
    if active is None:
        return
    serving = store.meta(active).bundle_version
    if serving is not None:
        raise HomepageError(
            f"publish {dataset}: no --models, but the active version {active} serves model bundle {serving}; "
            "a version without a model cannot be served (workers would stay on the old one and new ones "
            "would not start): give --models with the bundle to serve"
        )


def locate_bundle(models: Path) -> tuple[Path, str]:
    """(bundle directory, bundle version) for ``--models``: a bundle dir or a MODELS root with ``LATEST``."""
    models = Path(models)
    if (models / "manifest.json").is_file():  # the same order as ``homepage.bundle.resolve``: what replay loads is what is published
        bundle = models
    elif (models / "LATEST").is_file():
        name = (models / "LATEST").read_text().strip()
        bundle = models / name
        if not (bundle / "manifest.json").is_file():
            raise HomepageError(f"{models / 'LATEST'}: names {name!r}, but {bundle}/manifest.json does not exist")
    else:
        raise HomepageError(f"{models}: not a model bundle (no manifest.json) nor a models dir (no LATEST)")
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise HomepageError(f"{bundle / 'manifest.json'}: line {e.lineno}: {e.msg}") from e
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return bundle, str(version or bundle.name)


def check_publish_time(at: int, first_ts: int | None, dataset: Path) -> None:
    """Refuse a publish time at which the dataset has no state yet (every page would be empty), or past year 9999."""
    if at > LATEST_TIME or at < 0:
        raise HomepageError(f"--at {at}: not a Unix time between 0 and {LATEST_TIME} (year 9999)")
    if first_ts is not None and at < first_ts:
        raise HomepageError(f"--at {at}: before the first event of {dataset} ({first_ts}); the published state would be empty")


def check_bundle_serves(bundle_dir: Path, catalog: Catalog, dataset: Path) -> float:
    """Load the bundle as the API will (so one it would refuse is refused before the flip) and check its catalog is the dataset's.

    A bundle trained on another dataset would serve its own titles to this dataset's users
    (``homepage.catalog.catalog_mismatch`` says what "another" means). Returns the bundle's
    trending half-life in seconds (its config's ``trending_half_life_days``).
    """
    from homepage.bundle import load_bundle
    from homepage.catalog import catalog_mismatch
    from homepage.page import PageModels

    bundle = load_bundle(bundle_dir)
    PageModels.from_bundle(bundle)
    why = catalog_mismatch(catalog.title_ids, catalog.names, bundle.catalog, str(dataset))
    if why is not None:
        raise HomepageError(
            f"--models: bundle {bundle.version} was trained on another catalog: {why} "
            f"(bundle trained on {bundle.manifest.get('dataset', {}).get('path')})"
        )
    check_no_withdrawn_titles(bundle.catalog, catalog, bundle.version, dataset)
    return bundle.config.half_life_seconds


def check_no_withdrawn_titles(served: Catalog, listed: Catalog, bundle_version: str, dataset: Path) -> None:
    """Refuse a bundle holding titles the dataset no longer lists (withdrawn: a licence ended).

    Workers serve the bundle's catalog: such a title stayed in its users' continue-watching rows,
    named because-you-watched rows, and came back into every row once someone played it (the
    events counted it). A dataset with titles the bundle lacks (new releases) is fine: they wait
    for the next training.
    """
    gone = np.flatnonzero(~np.isin(served.title_ids, listed.title_ids))
    if gone.size:
        named = ", ".join(f"{int(served.title_ids[i])} {served.names[i]!r}" for i in gone[:5])
        raise HomepageError(
            f"--models: bundle {bundle_version} serves {gone.size} titles {dataset} does not list ({named}"
            f"{', ...' if gone.size > 5 else ''}); pages would still show them: train a bundle on {dataset} and publish that"
        )


def check_half_life(given: float | None, trained: float | None, bundle_version: str | None) -> float:
    """The trending half-life to publish with: the bundle's, which replay and explain measure with (7 days without a bundle).

    A ``--config`` giving another one is refused: the served trending rows would decay at a rate
    no replay of the bundle measured (before 2026-12-07 a publish without ``--config`` took 7 days
    whatever the bundle's config said).
    """
    if trained is None:
        return PipelineConfig.model_fields["trending_half_life_days"].default * 86_400.0 if given is None else given
    if given is not None and given != trained:
        raise HomepageError(
            f"--config: trending_half_life_days {given / 86_400:g}, but bundle {bundle_version} was trained with "
            f"{trained / 86_400:g} (its replay measured trending rows at that rate): leave --config out, or retrain with it"
        )
    return trained


def publish_dataset(
    store: RedisStore,
    dataset: Path,
    *,
    at: int | None = None,
    models: Path | None = None,
    half_life: float | None = None,
    keep: int | None = None,
    version: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PublishResult:
    """Publish the dataset's state as of ``at`` (default: its last event), flip, then gc to ``keep``.

    Users erased with ``DELETE /users`` are not brought back: unless the dataset was merged
    from the events stream after their erasure, their rows are left out (``homepage.erasure``),
    and every erased user's own weights in the bundle's artwork model are (in the copy written to Redis).
    ``half_life`` (seconds; ``--config``): None takes the bundle's (``check_half_life``).
    """
    t0 = time.perf_counter()
    if policy := store.evicting_policy():
        raise HomepageError(
            f"the Redis server evicts keys under memory pressure (maxmemory-policy {policy}): a version's records and bundle "
            "could vanish while it is served; set maxmemory-policy noeviction (writes are then refused, and events get 503, when memory is full)"
        )
    ds = load_dataset(Path(dataset))
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    mark = ds.manifest.extra.get(MERGED_KEY) or {}
    merged_to = mark.get("last_id") if mark.get("stream") == store.keys.events else None  # type: ignore[union-attr]
    applied = applied_erasures(mark) if merged_to else None
    seen = store.erasures()  # a user erased from here on is deleted from the version after its writes
    erased = pending_erasures(seen, merged_to, applied, store.erasure_counts())  # type: ignore[arg-type]
    kept = drop_users(ds.events, ds.users, erased)
    log = EventLog.from_frame(kept.events, catalog, kept.users)
    if at is None:
        if not len(ds.events):
            raise HomepageError(f"{dataset}: has no events; give --at")
        at = int(ds.events["ts"].max())
    check_publish_time(int(at), log.first_ts, dataset)
    if models is None:
        check_keeps_a_model(store, dataset)
    bundle_dir, bundle_version = locate_bundle(models) if models is not None else (None, None)
    trained = check_bundle_serves(bundle_dir, catalog, dataset) if bundle_dir is not None else None
    world = log.global_state(int(at), check_half_life(half_life, trained, bundle_version))
    replaced = _without_erased_weights(bundle_dir, store.erasures()) if bundle_dir is not None else {}
    listed, unlisted = bundle_file_lists(bundle_dir) if bundle_dir is not None else (None, [])
    meta = store.publish(
        version or new_version_name(),
        log,
        catalog,
        kept.users,
        world,
        bundle_dir,
        bundle_version=bundle_version,
        source=str(Path(dataset).resolve()),
        progress=progress,
        replaced_files=replaced,
        only_files=listed,
        erasures_seen=seen,
    )
    erase_user_weights(store, [meta.version])  # users erased while it was written
    deleted = store.gc(keep if keep is not None else store.settings.versions_keep)
    return PublishResult(
        meta=meta,
        users_written=len(log.user_ids),
        seconds=time.perf_counter() - t0,
        deleted_versions=tuple(deleted),
        unlisted_files=tuple(unlisted),
    )


def bundle_file_lists(bundle_dir: Path) -> tuple[set[str] | None, list[str]]:
    """(the files a publish uploads, the other files in the directory): its manifest, the files the
    manifest lists and the per-user weights. A core dump or an editor's swap file beside them went into
    Redis and onto every worker's disk. A bundle from before manifests listed files: everything."""
    manifest = json.loads((bundle_dir / "manifest.json").read_bytes())
    if "files" not in manifest:
        return None, []
    listed = {"manifest.json", *manifest["files"]} | ({w} if (w := user_weight_path(manifest)) else set())
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    return listed, sorted(on_disk - listed - {MARK})


def _without_erased_weights(bundle_dir: Path, erasures: Mapping[int, str]) -> dict[str, bytes]:
    """The bundle's per-user weight file without every erased user's (whatever the dataset's merge mark: a bundle
    trained before an erasure holds them), as {relative path: bytes}; empty when there is nothing to leave out."""
    manifest = bundle_dir / "manifest.json"
    rel = user_weight_file(manifest.read_bytes() if manifest.is_file() else None)
    if rel is None or not erasures or not (bundle_dir / rel).is_file():
        return {}
    rewritten = file_without_users((bundle_dir / rel).read_bytes(), erasures)
    return {} if rewritten is None else {rel: rewritten}
