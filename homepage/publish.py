"""Loading a dataset's state (and optionally a model bundle) into the store as a new version."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from homepage.catalog import Catalog
from homepage.dataset import load_dataset
from homepage.erasure import drop_users, pending_erasures
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.events_merge import MERGED_KEY
from homepage.store import RedisStore, VersionMeta


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What ``publish_dataset`` did."""

    meta: VersionMeta
    users_written: int
    seconds: float
    deleted_versions: tuple[str, ...]


def new_version_name(now: float | None = None) -> str:
    """A sortable, unique version name such as ``20261122T040600Z-3fa2c1``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def locate_bundle(models: Path) -> tuple[Path, str]:
    """(bundle directory, bundle version) for ``--models``: a bundle dir or a MODELS root with ``LATEST``."""
    models = Path(models)
    if (models / "LATEST").is_file():
        name = (models / "LATEST").read_text().strip()
        bundle = models / name
        if not (bundle / "manifest.json").is_file():
            raise HomepageError(f"{models / 'LATEST'}: names {name!r}, but {bundle}/manifest.json does not exist")
    elif (models / "manifest.json").is_file():
        bundle = models
    else:
        raise HomepageError(f"{models}: not a model bundle (no manifest.json) nor a models dir (no LATEST)")
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise HomepageError(f"{bundle / 'manifest.json'}: line {e.lineno}: {e.msg}") from e
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return bundle, str(version or bundle.name)


def publish_dataset(
    store: RedisStore,
    dataset: Path,
    *,
    at: int | None = None,
    models: Path | None = None,
    half_life: float = 7 * 86_400.0,
    keep: int | None = None,
    version: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PublishResult:
    """Publish the dataset's state as of ``at`` (default: its last event), flip, then gc to ``keep``.

    Users erased with ``DELETE /users`` are not brought back: unless the dataset was merged
    from the events stream after their erasure, their rows are left out (``homepage.erasure``).
    """
    t0 = time.perf_counter()
    ds = load_dataset(Path(dataset))
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    mark = ds.manifest.extra.get(MERGED_KEY) or {}
    merged_to = mark.get("last_id") if mark.get("stream") == store.keys.events else None  # type: ignore[union-attr]
    kept = drop_users(ds.events, ds.users, pending_erasures(store.erasures(), merged_to))  # type: ignore[arg-type]
    log = EventLog.from_frame(kept.events, catalog, kept.users)
    if at is None:
        if not len(ds.events):
            raise HomepageError(f"{dataset}: has no events; give --at")
        at = int(ds.events["ts"].max())
    bundle_dir, bundle_version = locate_bundle(models) if models is not None else (None, None)
    world = log.global_state(int(at), half_life)
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
    )
    deleted = store.gc(keep if keep is not None else store.settings.versions_keep)
    return PublishResult(
        meta=meta,
        users_written=len(log.user_ids),
        seconds=time.perf_counter() - t0,
        deleted_versions=tuple(deleted),
    )
