"""An erased user's own weights in the model bundles (the artwork selector's) go with their data (real Redis).

``DELETE /users`` rewrites the selector of every bundle in Redis without the user (compare-and-set:
concurrent erasures keep each other's), the worker that took it stops using them at once, another
worker at its next refresh, one that loads a bundle later or started from its last-good copy on
disk when it loads from Redis; a publish of a bundle trained before an erasure, or written while
one ran, stores it without them.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from redis_fixtures import *  # noqa: F403  (fixtures: store, ...)
from typer.testing import CliRunner

from artwork.selector import ArtworkSelector
from fixtures.world import WorldParams, generate_world, write_world
from homepage.bundle import train_bundle
from homepage.cli import _register, app
from homepage.config import PageConfig, PipelineConfig
from homepage.dataset import load_dataset
from homepage.events_merge import merge_stream_into_dataset
from homepage.publish import publish_dataset
from homepage.service import PageService, ServiceConfig
from homepage.store import RedisStore

SELECTOR = "artwork/selector.npz"


@pytest.fixture(scope="module")
def world_and_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small world and a bundle whose artwork selector learnt per-user weights from simulated logs."""
    root = tmp_path_factory.mktemp("erasure-models")
    world = root / "world"
    write_world(generate_world(WorldParams(n_users=120, n_titles=100, seed=5)), world)
    _register()
    sim = CliRunner().invoke(app, ["artwork", "simulate", str(world), "--out", str(root / "logs.parquet"), "--impressions", "20000", "--seed", "2"])
    assert sim.exit_code == 0, sim.output
    bundle = train_bundle(load_dataset(world), root / "models", PipelineConfig(page=PageConfig(train_model=False)), artwork_logs=root / "logs.parquet")
    return world, bundle.path


def _stored_users(store: RedisStore, version: str) -> np.ndarray:
    data = store.bundle_file(version, SELECTOR)
    assert data is not None
    with np.load(io.BytesIO(data)) as z:
        return z["user_ids"]


def test_selector_copies_without_users_leave_the_original_alone(world_and_bundle: tuple[Path, Path]) -> None:
    _, bundle = world_and_bundle
    sel = ArtworkSelector.load(bundle / "artwork" / "selector")
    u = int(sel.user_ids_[0])
    out = sel.without_users([u, 10**9])
    assert out is not None and u not in out.user_ids_ and out.user_ids_.size == sel.user_ids_.size - 1
    assert u in sel.user_ids_  # a copy: pages being built keep the model they started with
    assert out.user_weights_.shape == (out.user_ids_.size, sel.user_weights_.shape[1])
    assert sel.without_users([10**9]) is None and sel.without_users([]) is None
    saved = (bundle / "artwork" / "selector.npz").read_bytes()
    assert ArtworkSelector.saved_without_users(saved, [10**9]) is None
    rewritten = ArtworkSelector.saved_without_users(saved, [u])
    assert rewritten is not None
    with np.load(io.BytesIO(rewritten)) as z, np.load(io.BytesIO(saved)) as before:
        assert u not in z["user_ids"] and np.array_equal(z["theta"], before["theta"])
        keep = before["user_ids"] != u
        assert np.array_equal(z["user_weights"], before["user_weights"][keep])


def test_an_erasure_removes_the_users_artwork_weights_everywhere(
    store: RedisStore, world_and_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    world, bundle = world_and_bundle
    v1 = publish_dataset(store, world, models=bundle).meta.version
    u = int(_stored_users(store, v1)[0])
    taker = PageService(store, ServiceConfig(models_dir=tmp_path / "a"))
    other = PageService(store, ServiceConfig(models_dir=tmp_path / "b"))
    try:
        assert taker.refresh() and other.refresh()
        for svc in (taker, other):
            assert svc.loaded is not None and u in svc.loaded.models.artwork.selector.user_ids_
        assert taker.erase_user(u) > 0
        assert u not in _stored_users(store, v1)
        assert u not in taker.loaded.models.artwork.selector.user_ids_  # at once, in the worker that took it
        assert u in other.loaded.models.artwork.selector.user_ids_
        assert other.refresh() and u not in other.loaded.models.artwork.selector.user_ids_  # its next refresh
        # a publish of the bundle trained before the erasure leaves them out, merged dataset or not
        merged = tmp_path / "merged"
        shutil.copytree(world, merged)
        merge_stream_into_dataset(merged, store)  # its merge mark is now past the erasure
        for dataset in (world, merged):
            v2 = publish_dataset(store, dataset, models=bundle).meta.version
            assert v2 != v1 and u not in _stored_users(store, v2) and _stored_users(store, v2).size == _stored_users(store, v1).size
        assert u in ArtworkSelector.load(bundle / "artwork" / "selector").user_ids_  # the training output is the operator's
        # a worker that loads a version after the erasure's minute of sweeps does not use them either
        late = PageService(store, ServiceConfig(models_dir=tmp_path / "c"))
        store.client.delete(store.keys.served_sweeps)
        try:
            assert late.refresh() and u not in late.loaded.models.artwork.selector.user_ids_
        finally:
            late.close()
    finally:
        taker.close()
        other.close()


def test_concurrent_rewrites_of_a_bundle_keep_each_others_changes(store: RedisStore, world_and_bundle: tuple[Path, Path]) -> None:
    """Two erasures rewriting one stored selector at once: the second to write starts again from the first's bytes."""
    world, bundle = world_and_bundle
    v = publish_dataset(store, world, models=bundle).meta.version
    a, b = (int(x) for x in _stored_users(store, v)[:2])
    raced: list[bool] = []

    def without_a(data: bytes) -> bytes | None:
        if not raced:  # another erasure writes between this one's read and its write
            raced.append(store.rewrite_bundle_file(v, SELECTOR, lambda d: ArtworkSelector.saved_without_users(d, [b])))
        return ArtworkSelector.saved_without_users(data, [a])

    assert store.rewrite_bundle_file(v, SELECTOR, without_a) and raced == [True]
    left = _stored_users(store, v)
    assert a not in left and b not in left
    assert not store.rewrite_bundle_file(v, SELECTOR, lambda d: ArtworkSelector.saved_without_users(d, [a]))  # nothing to do


def test_a_user_erased_while_a_publish_writes_is_not_in_its_bundle(store: RedisStore, world_and_bundle: tuple[Path, Path]) -> None:
    world, bundle = world_and_bundle
    u = int(ArtworkSelector.load(bundle / "artwork" / "selector").user_ids_[3])
    erased: list[int] = []

    def erase_midway(done: int, total: int) -> None:
        if not erased:
            erased.append(store.delete_user(u))

    v = publish_dataset(store, world, models=bundle, progress=erase_midway).meta.version
    assert erased and u not in _stored_users(store, v)


def test_a_worker_started_from_its_last_good_copy_reloads_from_redis(
    store: RedisStore, world_and_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    """A worker that started while Redis was down serves its copy on disk; once Redis answers it loads the version
    from Redis again (the copy can hold an erased user's weights, and the erasure's minute of sweeps may be over)."""
    world, bundle = world_and_bundle
    publish_dataset(store, world, models=bundle)
    first = PageService(store, ServiceConfig(models_dir=tmp_path))
    try:
        assert first.refresh()  # keeps last-good.npz in tmp_path
        u = int(first.loaded.models.artwork.selector.user_ids_[0])
    finally:
        first.close()
    store.delete_user(u)
    store.client.delete(store.keys.served_sweeps)
    started = PageService(store, ServiceConfig(models_dir=tmp_path))
    try:
        started._serve_last_good()  # what a start during an outage does
        assert started.loaded is not None and started.loaded.from_disk and u in started.loaded.models.artwork.selector.user_ids_
        assert started.refresh() and not started.loaded.from_disk
        assert u not in started.loaded.models.artwork.selector.user_ids_
    finally:
        started.close()

