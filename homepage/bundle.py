"""The versioned model bundle: everything the API needs to serve, in one directory.

Layout::

    MODELS/
      LATEST                      the newest version name, written last
      v20261122T101500-1a2b3c4d/
        manifest.json             version, train window, dataset, config + hash, rankers, ...
        rankers/<name>/           each ranker's artifact (manifest.json + arrays.npz)
        catalog/                  titles.parquet and variants.parquet from the dataset

A bundle is written into a temporary directory and renamed into place, so a reader sees a
whole bundle or none. ``load_bundle`` refuses an artifact whose ranker is not registered or
whose config hash differs from the bundle manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from homepage.catalog import Catalog
from homepage.config import PipelineConfig
from homepage.dataset import TITLE_SCHEMA, VARIANT_SCHEMA, Dataset, conform
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.ingest.titles import titles_as_of
from homepage.progress_bar import ProgressBar
from homepage.provenance import dataset_sha256, environment, git_commit, git_dirty
from homepage.training_dir import remove_abandoned, training_dir
from rankers.base import ArtifactError, FitInput, Ranker, config_blob_hash, fit_ranker
from rankers.registry import build_rankers, ranker_class

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

    from artwork.training_logs import TrainingLogs

BUNDLE_FORMAT = 1
LATEST = "LATEST"


class BundleError(HomepageError):
    """A model bundle is missing, incomplete or inconsistent with the code loading it."""


class Fitter(Protocol):
    """How the heavy training steps run (``homepage.engines``): fitting a ranker, training the page model."""

    def fit(self, ranker: Ranker, data: FitInput) -> None: ...

    def fit_page_model(
        self, log: EventLog, catalog: Catalog, config: PipelineConfig, until: int, progress: bool, catalog_at: Callable[[int], Catalog] | None = None
    ) -> Any: ...


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A loaded (or just written) bundle."""

    path: Path
    version: str
    manifest: dict[str, Any]
    config: PipelineConfig
    catalog: Catalog
    rankers: tuple[Ranker, ...]

    @property
    def until(self) -> int:
        """The training cut-off: events with ts <= until were used."""
        return int(self.manifest["train_window"][1])


def version_name(created: float, config_hash: str, dataset: Dataset, until: int) -> str:
    """``v<UTC time>-<hash8>``; the hash covers the config, the dataset and the cut-off."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(created))
    blob = json.dumps([config_hash, str(dataset.path), dataset.manifest.to_json(), until], sort_keys=True, default=str)
    return f"v{stamp}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def train_bundle(
    dataset: Dataset,
    out: Path,
    config: PipelineConfig,
    until: int | None = None,
    progress: bool = False,
    artwork_logs: Path | None = None,
    artwork_grid: tuple[tuple[float, float, float], ...] | None = None,
    fitter: Fitter | None = None,
    workers: int = 1,
) -> ModelBundle:
    """Fit every configured ranker on events with ts <= ``until`` and write one bundle under ``out``.

    ``until`` defaults to ``EventLog.quantile_time(config.split_quantile)``, the split that
    evaluation and replay use. ``artwork_logs`` (served logs or artwork feedback) trains the
    artwork selector, its regularisation chosen from ``artwork_grid`` (default
    ``artwork.tuning.DEFAULT_GRID``) on a validation split; without logs the bundle ships the
    untrained selector.
    ``fitter`` runs the heavy steps elsewhere (the Spark engine); by default they run in this
    process, the page model's stage data in ``workers`` forked processes.
    """
    out = Path(out)
    check_models_dir(out)
    rankers = build_rankers(list(config.rankers))  # fail on a bad name before any work
    catalog = Catalog.from_frames(dataset.titles, dataset.variants)
    log = EventLog.from_frame(dataset.events, catalog, dataset.users)
    if not len(log) or not log.t_ts.size:
        what = "of titles in its catalog " if len(log) else ""
        raise BundleError(f"{dataset.path}: no plays or ratings {what}to train on")
    until = log.quantile_time(config.split_quantile) if until is None else int(until)
    if log.first_ts is not None and until < log.first_ts:
        raise BundleError(f"--until {until}: before the first event of {dataset.path} ({log.first_ts})")
    titles = titles_as_of(dataset.titles, dataset.tag_events, until)  # no tags from after the cut
    if titles is not dataset.titles:
        catalog = Catalog.from_frames(titles, dataset.variants)  # same titles in the same order: the log's indices hold
    art_data = _read_artwork_logs(artwork_logs, catalog, log, config, until)  # bad logs fail before any fitting
    world = log.global_state(until, config.half_life_seconds)
    data = FitInput(log=log, catalog=catalog, until=until, world=world)
    # before the fitting: the bytes just loaded and the code just imported, not a checkout changed while training ran
    data_sha256, commit, dirty = dataset_sha256(dataset.path), git_commit(), git_dirty()
    created = time.time()
    chash = config.config_hash()
    version = version_name(created, chash, dataset, until)

    out.mkdir(parents=True, exist_ok=True)
    if gone := remove_abandoned(out):
        logger.warning("removed %d half-written bundles that trainings killed mid-write left in %s: %s", len(gone), out, ", ".join(gone))
    with training_dir(out, version) as tmp:  # locked while written: a training killed outright leaves it for the next one to remove
        try:
            entries = _fit_and_save(rankers, data, tmp, progress, fitter)
            _write_catalog(dataset, tmp / "catalog", titles)
            components: dict[str, Any] = {}
            if config.page.train_model:
                components["page_model"] = _fit_page_model(log, catalog, config, until, tmp, progress, fitter, workers, _catalog_at(dataset))
            components["artwork"] = _artwork_component(catalog, config, tmp, artwork_logs, art_data, progress, artwork_grid)
            manifest: dict[str, Any] = {
                "bundle_format": BUNDLE_FORMAT,
                "version": version,
                "created": created,
                "train_window": [log.first_ts, until],
                "dataset": {
                    "path": str(dataset.path),
                    "source": dataset.manifest.source,
                    "counts": dataset.manifest.counts,
                    "sha256": data_sha256,
                    "events_used": int(data.log.interactions(until)[0].size),
                },
                "config": json.loads(config.model_dump_json()),
                "config_hash": chash,
                "rankers": entries,
                "components": components,
                "git_commit": commit,
                "git_dirty": dirty,
                "environment": environment(),
                "metrics": {},
            }
            manifest["files"] = file_digests(tmp, manifest)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
            os.chmod(tmp, 0o755)
            final = out / version
            if final.exists():  # same inputs in the same second: replace, the contents are equivalent
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _write_latest(out, version)
    return ModelBundle(final, version, manifest, config, catalog, tuple(rankers))


def _fit_and_save(rankers: list[Ranker], data: FitInput, tmp: Path, progress: bool, fitter: Fitter | None = None) -> list[dict[str, str]]:
    """Fit each ranker and save its artifact into ``tmp/rankers/<dir>``, with a progress bar when asked."""
    entries: list[dict[str, str]] = []
    used: set[str] = set()
    with ProgressBar(
        TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), disable=not progress, transient=False,
        console=Console(stderr=True),  # stdout is the bundle's path, for `BUNDLE=$(homepage train ...)`
    ) as bar:
        for ranker in rankers:
            task = bar.add_task(f"fit {ranker.name}", total=1)
            fit_ranker(ranker, data, None if fitter is None else fitter.fit)
            d = ranker.name
            i = 2
            while d in used:  # the same ranker configured twice
                d, i = f"{ranker.name}-{i}", i + 1
            used.add(d)
            ranker.save(tmp / "rankers" / d)
            entries.append({"name": ranker.name, "dir": f"rankers/{d}", "config_hash": ranker.config.config_hash()})
            bar.update(task, completed=1)
    return entries


def _catalog_at(dataset: Dataset) -> Callable[[int], Catalog] | None:
    """The catalog as known at a time (titles' tags up to it); None when the dataset keeps no tag events."""
    if dataset.tag_events is None:
        return None
    return lambda t: Catalog.from_frames(titles_as_of(dataset.titles, dataset.tag_events, t), dataset.variants)


def _fit_page_model(
    log: EventLog,
    catalog: Catalog,
    config: PipelineConfig,
    until: int,
    tmp: Path,
    progress: bool,
    fitter: Fitter | None = None,
    workers: int = 1,
    catalog_at: Callable[[int], Catalog] | None = None,
) -> dict[str, Any]:
    """Train the stage-wise page model and save it into ``tmp/page_model``."""
    from homepage.pagebuilder.training import fit_page_model

    try:
        if fitter is None:
            model, report = fit_page_model(log, catalog, config, until, progress, workers=workers, catalog_at=catalog_at)
        else:
            model, report = fitter.fit_page_model(log, catalog, config, until, progress, catalog_at=catalog_at)
    except ValueError as e:
        raise BundleError(f"page model: {e}") from e
    model.save(tmp / "page_model")
    return {"dir": "page_model", "training": report.__dict__}


def _read_artwork_logs(logs: Path | None, catalog: Catalog, log: EventLog, config: PipelineConfig, until: int) -> TrainingLogs | None:
    """The artwork training impressions up to ``until`` with their users' contexts, or None without ``logs``."""
    if logs is None:
        return None
    from artwork.training_logs import read_training_logs

    return read_training_logs(Path(logs), catalog, log, _artwork_period(config), until)


def _artwork_period(config: PipelineConfig) -> int:
    return max(int(config.artwork_stable_days * 86_400), 1)


def _artwork_component(
    catalog: Catalog,
    config: PipelineConfig,
    tmp: Path,
    logs: Path | None = None,
    data: TrainingLogs | None = None,
    progress: bool = False,
    grid: tuple[tuple[float, float, float], ...] | None = None,
) -> dict[str, Any]:
    """The artwork selector, trained from ``logs`` when given (the manifest records on what and how).

    Without logs it starts untrained: the neutral variant, exploring at ``artwork_epsilon``
    with logged propensities, which is the data its training needs.
    """
    from artwork.page_artwork import PageArtwork

    if logs is None or data is None:
        PageArtwork.default(catalog, config.artwork_epsilon, config.artwork_stable_days).save(tmp / "artwork")
        return {"dir": "artwork", "trained": False}
    from artwork.tuning import DEFAULT_GRID, train_selector

    period = _artwork_period(config)
    say = (lambda m: print(f"artwork: {m}", file=sys.stderr)) if progress else None
    selector, report = train_selector(data, catalog, config.artwork_epsilon, period, grid or DEFAULT_GRID, progress=say)
    PageArtwork.of(selector, catalog).save(tmp / "artwork")
    return {
        "dir": "artwork",
        "trained": True,
        "logs": {"path": str(Path(logs).resolve()), "sha256": _sha256(Path(logs)), **data.summary()},
        "training": report.to_json(),
    }


def _sha256(path: Path) -> str:
    """The file's SHA-256: which logs a model learnt from, and that a bundle's files are whole."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_catalog(dataset: Dataset, out: Path, titles: pd.DataFrame) -> None:
    """The bundle's catalog: ``titles`` (the dataset's, tags as of the cut) and the dataset's variants.

    A table the bundle takes unchanged is copied from the dataset's file when there is one.
    """
    out.mkdir(parents=True)
    for name, frame, schema in (("titles", titles, TITLE_SCHEMA), ("variants", dataset.variants, VARIANT_SCHEMA)):
        src = Path(dataset.path) / f"{name}.parquet"
        if src.is_file() and not (name == "titles" and titles is not dataset.titles):
            shutil.copyfile(src, out / f"{name}.parquet")
        else:
            pq.write_table(conform(frame, schema), out / f"{name}.parquet")


def _write_latest(out: Path, version: str) -> None:
    """Point ``LATEST`` at ``version`` with an atomic replace."""
    tmp = out / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, out / LATEST)


def check_models_dir(out: Path) -> None:
    """``out`` must be a models directory (new, empty or holding bundles), never a bundle or a dataset.

    A bundle written inside another bundle would make ``resolve`` (which prefers the
    directory's own manifest) and ``LATEST`` name different bundles; one written inside a
    dataset would be deleted with it by the next ``ingest``/``generate`` into that dataset.
    """
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out}: is a file, not a models directory")
    if (out / "manifest.json").is_file():
        what = "a dataset" if (out / "events.parquet").exists() else "a model bundle"
        raise BundleError(
            f"--out {out}: is {what} (it has a manifest.json), not a models directory; "
            f"give the directory that holds the bundles (e.g. {out.parent}) or a new one"
        )


def resolve(path: str | os.PathLike[str]) -> Path:
    """A bundle directory: ``path`` itself, or ``path/<LATEST>`` for a MODELS directory."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        version = latest.read_text().strip()
        if not (path / version / "manifest.json").is_file():
            raise BundleError(f"{latest}: names version {version!r}, which has no manifest.json")
        return path / version
    raise BundleError(f"{path}: not a model bundle (no manifest.json) nor a models directory (no {LATEST})")


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Load a bundle (a bundle directory, or a models directory's latest) and check it against the code."""
    bdir = resolve(path)
    mpath = bdir / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(manifest, dict) or "bundle_format" not in manifest:
        raise BundleError(f"{mpath}: not a model bundle's manifest (no bundle_format); give the MODELS directory `homepage train` wrote")
    if manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{mpath}: bundle format {manifest.get('bundle_format')}, this code reads {BUNDLE_FORMAT}")
    try:
        config = PipelineConfig.model_validate(manifest["config"], context={"stored": True})
    except Exception as e:
        raise BundleError(f"{mpath}: config: {e}") from e
    # checked on the config as stored: fields the code gained since (with defaults) do not invalidate it
    stored_hash = PipelineConfig.hash_of(manifest["config"])
    if stored_hash != manifest.get("config_hash"):
        raise BundleError(f"{mpath}: config_hash {manifest.get('config_hash')} does not match its config ({stored_hash})")
    rankers = tuple(_load_ranker(bdir, entry) for entry in manifest.get("rankers", []))
    try:
        catalog = Catalog.from_frames(
            pq.read_table(bdir / "catalog" / "titles.parquet").to_pandas(),
            pq.read_table(bdir / "catalog" / "variants.parquet").to_pandas(),
        )
    except FileNotFoundError as e:
        raise BundleError(f"{bdir}: catalog missing ({e.filename})") from e
    check_file_digests(bdir, manifest)
    return ModelBundle(bdir, str(manifest["version"]), manifest, config, catalog, rankers)


def file_digests(bdir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every file of a bundle but its manifest and the file of per-user weights (an erasure rewrites it)."""
    from homepage.erasure import user_weight_path

    skip = {"manifest.json", user_weight_path(manifest)}
    files = (p for p in sorted(bdir.rglob("*")) if p.is_file())
    return {rel: _sha256(p) for p in files if (rel := p.relative_to(bdir).as_posix()) not in skip}


def check_file_digests(bdir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a bundle whose files are not those it was written with (truncated in a copy, corrupted on disk or in Redis).

    Checked before the page model is parsed: LightGBM aborts the process on some broken
    model files instead of raising. Bundles from before the manifest listed its files pass.
    """
    for rel, digest in manifest.get("files", {}).items():
        path = bdir / rel
        if not path.is_file():
            raise BundleError(f"{path}: missing (the bundle's manifest lists it)")
        if _sha256(path) != digest:
            raise BundleError(f"{path}: corrupt or changed since training (its SHA-256 is not the manifest's)")


def _load_ranker(bdir: Path, entry: dict[str, Any]) -> Ranker:
    """One ranker artifact, refused when unregistered or when its config hash disagrees with the manifest."""
    name = entry.get("name")
    cls = ranker_class(str(name))  # RankerNotFound names the ranker
    adir = bdir / str(entry.get("dir", f"rankers/{name}"))
    try:
        ranker = cls.load(adir)
    except ArtifactError as e:
        raise BundleError(f"ranker {name!r}: {e}") from e
    except Exception as e:
        raise BundleError(f"ranker {name!r}: cannot load {adir}: {e}") from e
    art = json.loads((adir / "manifest.json").read_text())
    # the hash of the config as the artifact stored it: a field added to the code later, with a
    # default that keeps the old behaviour, must not make every earlier bundle unloadable
    got = config_blob_hash(art.get("config", {}))
    if got != entry.get("config_hash") or art.get("config_hash") != entry.get("config_hash"):
        raise BundleError(
            f"ranker {name!r}: artifact config hash {art.get('config_hash')} (recomputed {got}) "
            f"differs from the bundle manifest's {entry.get('config_hash')}"
        )
    return ranker
