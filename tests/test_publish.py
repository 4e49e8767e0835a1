"""``homepage publish`` / ``rollback`` end to end, and a publish killed half-way."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from redis_fixtures import *  # noqa: F403
from redis_fixtures import make_store, write_small_dataset
from typer.testing import CliRunner

from homepage.catalog import Catalog
from homepage.cli import _register, app
from homepage.dataset import load_dataset
from homepage.errors import HomepageError
from homepage.eventlog import EventLog
from homepage.publish import locate_bundle, publish_dataset
from homepage.settings import Settings, get_settings
from homepage.store import RedisStore, StoreUnavailable


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment variables that make the CLI use ``settings``' back end and prefix."""
    env = {"HOMEPAGE_KEY_PREFIX": settings.key_prefix, "HOMEPAGE_EMBEDDED_DIR": str(settings.embedded_dir)}
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env.update(extra)
    return env


@pytest.fixture
def cli_settings(store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Point ``get_settings()`` (what the CLI reads) at the test's back end and prefix."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    for k, v in cli_env(store_settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield store_settings
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("ds") / "small")


@pytest.fixture(scope="module")
def models(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir (with LATEST) holding a real bundle trained on ``small`` (no page model: cheap)."""
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig

    root = tmp_path_factory.mktemp("models")
    train_bundle(load_dataset(small), root, PipelineConfig(page=PageConfig(train_model=False)))
    return root


def test_cli_publish_then_rollback(
    store: RedisStore, cli_settings: Settings, small: Path, models: Path, tmp_path: Path
) -> None:
    _register()
    runner = CliRunner()
    ds = load_dataset(small)
    t_mid = int(np.quantile(ds.events["ts"], 0.5))
    iso = datetime.datetime.fromtimestamp(t_mid, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")  # ISO, as --until takes
    first = runner.invoke(app, ["publish", str(small), "--at", iso])
    assert first.exit_code == 0, first.output
    v1 = store.active_version()
    assert v1 is not None and v1 in first.output
    # where it went, named: a misspelt REDIS_URL otherwise published into an embedded Redis nothing serves from
    into = "the Redis at REDIS_URL " if cli_settings.redis_url else "the embedded Redis in "
    assert f"published {v1} into {into}" in first.output and f"prefix {cli_settings.key_prefix!r}" in first.output
    second = runner.invoke(app, ["publish", str(small), "--models", str(models)])
    assert second.exit_code == 0, second.output
    v2 = store.active_version()
    assert v2 != v1 and store.versions() == [v1, v2]
    assert (store.meta(v1).as_of, store.meta(v2).as_of) == (t_mid, int(ds.events["ts"].max()))
    out = store.materialize_bundle(v2, tmp_path)
    bundle = models / (models / "LATEST").read_text().strip()
    for f in bundle.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(bundle)).read_bytes() == f.read_bytes()
    assert store.meta(v2).bundle_version == bundle.name

    listed = runner.invoke(app, ["versions"])
    assert listed.exit_code == 0 and listed.output.splitlines()[-1].startswith(f"* {v2}")

    refused = runner.invoke(app, ["rollback"])  # v1 has no model: workers could not serve it
    assert isinstance(refused.exception, HomepageError) and "published without a model bundle" in str(refused.exception)
    assert store.active_version() == v2 and store.versions() == [v1, v2]
    third = runner.invoke(app, ["publish", str(small), "--models", str(models)])
    assert third.exit_code == 0, third.output
    back = runner.invoke(app, ["rollback"])
    assert back.exit_code == 0 and v2 in back.output
    assert store.active_version() == v2
    again = runner.invoke(app, ["rollback"])
    assert isinstance(again.exception, HomepageError) and "without a model bundle" in str(again.exception)


def test_publish_keeps_the_configured_number_of_versions(store: RedisStore, cli_settings: Settings, small: Path) -> None:
    names = [publish_dataset(store, small, keep=2).meta.version for _ in range(3)]
    assert store.versions() == names[1:]
    assert not list(store.client.scan_iter(match=store.keys.version_pattern(names[0])))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "not a model bundle"),
        ({"LATEST": "nope"}, "names 'nope'"),
        ({"manifest.json": "{oops"}, "manifest.json: line 1"),
    ],
)
def test_bad_models_dir_is_a_one_line_error(tmp_path: Path, layout: dict[str, str], message: str) -> None:
    for name, text in layout.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(HomepageError, match=message):
        locate_bundle(tmp_path)


@pytest.mark.parametrize("at", ["-5", "5", "99999999999999999999", "yesterday"])
def test_publish_refuses_a_time_with_no_state_before_touching_the_store(store: RedisStore, cli_settings: Settings, small: Path, at: str) -> None:
    """A state as of before the first event would serve every user an empty page, and gc would drop a good version."""
    _register()
    good = publish_dataset(store, small).meta.version
    res = CliRunner().invoke(app, ["publish", str(small), "--at", at])
    assert res.exit_code != 0 and isinstance(res.exception, (HomepageError, SystemExit)), res.output
    assert "--at" in (str(res.exception) + res.output)
    assert store.active_version() == good and store.versions() == [good]


def test_publish_refuses_a_bundle_that_the_api_could_not_serve(store: RedisStore, cli_settings: Settings, small: Path, models: Path) -> None:
    """A dataset directory given as --models, or a bundle trained on another catalog, is refused before the flip."""
    from redis_fixtures import WORLD_SMALL

    good = publish_dataset(store, small, models=models).meta.version
    with pytest.raises(HomepageError, match="not a model bundle"):
        publish_dataset(store, small, models=small)
    with pytest.raises(HomepageError, match="trained on another catalog: 3% of"):
        publish_dataset(store, WORLD_SMALL, models=models)  # 1,000 titles; the bundle knows 30 of them
    assert store.active_version() == good and store.versions() == [good]


def test_publish_takes_the_bundles_trending_half_life(
    store: RedisStore, cli_settings: Settings, small: Path, tmp_path: Path
) -> None:
    """A bundle trained with ``trending_half_life_days`` 2, published without ``--config``: the version's trending
    counters decayed over 7 days (the default), not the 2 that replay and explain measured the bundle with."""
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig

    _register()
    runner = CliRunner()
    bundle = train_bundle(load_dataset(small), tmp_path / "models", PipelineConfig(trending_half_life_days=2.0, page=PageConfig(train_model=False)))
    done = runner.invoke(app, ["publish", str(small), "--models", str(bundle.path)])
    assert done.exit_code == 0, done.output
    assert store.meta(store.active_version()).half_life == 2 * 86_400.0
    (tmp_path / "week.json").write_text('{"trending_half_life_days": 7}')
    refused = runner.invoke(app, ["publish", str(small), "--models", str(bundle.path), "--config", str(tmp_path / "week.json")])
    assert isinstance(refused.exception, HomepageError), refused.output
    assert "--config: trending_half_life_days 7, but bundle" in str(refused.exception) and "trained with 2 " in str(refused.exception)
    assert len(store.versions()) == 1


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_publish_killed_half_way_leaves_the_old_version_served(
    store: RedisStore, store_settings: Settings, small: Path, tmp_path: Path
) -> None:
    ds = load_dataset(small)
    catalog = Catalog.from_frames(ds.titles)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    old = publish_dataset(store, small).meta.version
    big = write_small_dataset(tmp_path / "big", n_users=20_000, events_per_user=2, seed=3)

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(cli_env(store_settings, HOMEPAGE_PUBLISH_BATCH_USERS="1", HOMEPAGE_PUBLISH_LEASE_SECONDS="1"))
    code = "from homepage.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "publish", str(big)], env=env, stderr=subprocess.PIPE)
    try:
        def wrote_a_user() -> bool:
            new = [v.decode() for v in store.client.smembers(store.keys.all_versions) if v.decode() != old]
            return bool(new) and any(k.endswith(b":hist") for k in store.client.scan_iter(match=store.keys.version_pattern(new[0]), count=1000))

        # killed once it has written some users (a fixed sleep was too short on a loaded machine)
        _wait(lambda: wrote_a_user() or proc.poll() is not None, 60, "the publish to write a user")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the publish finished before it was killed: make the dataset bigger"
    orphan = next(v.decode() for v in store.client.smembers(store.keys.all_versions) if v.decode() != old)
    assert store.client.hget(store.keys.meta(orphan), "state") == b"writing"
    orphan_keys = list(store.client.scan_iter(match=store.keys.version_pattern(orphan), count=1000))
    assert any(k.endswith(b":hist") for k in orphan_keys), "killed before any user was written"

    # the old version is still the one served, intact
    assert store.active_version() == old and store.versions() == [old]
    t = int(ds.events["ts"].max())
    for u in log.user_ids[:5]:
        np.testing.assert_array_equal(store.read_user_state(int(u), t, catalog).ts, log.user_state(int(u), t).ts)

    # gc leaves it alone while its lease lives, and deletes it once the lease has expired
    _wait(lambda: not store.client.exists(store.keys.lease(orphan)), 10, "the orphan's lease to expire")
    newer = publish_dataset(store, small, keep=5)
    assert orphan in newer.deleted_versions
    assert not any(store.client.scan_iter(match=store.keys.version_pattern(orphan), count=1000))
    assert store.versions() == [old, newer.meta.version]


def test_store_fixture_is_isolated(store: RedisStore, store_settings: Settings) -> None:
    """Each test's prefix is its own: nothing published yet under it."""
    assert store.active_version() is None and store.versions() == []
    assert make_store(store.client, store_settings).keys.prefix == store_settings.key_prefix


def test_publish_refuses_a_bundle_of_another_catalog_that_shares_the_ids(
    store: RedisStore, cli_settings: Settings, small: Path, models: Path, tmp_path: Path
) -> None:
    """Catalogs numbered alike (1..n) pass an id check: the bundle's side and the titles' names are checked too."""
    from homepage.dataset import write_dataset

    good = publish_dataset(store, small, models=models).meta.version
    fewer = write_small_dataset(tmp_path / "fewer", n_titles=10)  # all its ids are in the bundle, a third of the bundle's in it
    with pytest.raises(HomepageError, match=r"another catalog: 33% of its 30 titles are in"):
        publish_dataset(store, fewer, models=models)
    ds = load_dataset(small)
    renamed = ds.titles.assign(name=[f"Other film {i}" for i in range(len(ds.titles))])
    write_dataset(tmp_path / "renamed", source="other", events=ds.events, titles=renamed, users=ds.users, variants=ds.variants)
    with pytest.raises(HomepageError, match=r"another catalog: 0% of the 30 title ids both hold name the same title"):
        publish_dataset(store, tmp_path / "renamed", models=models)
    assert store.active_version() == good and store.versions() == [good]


def test_publish_without_models_never_replaces_a_served_model(store: RedisStore, cli_settings: Settings, small: Path, models: Path) -> None:
    """Workers cannot load a version without a model: such a publish over a served one is refused, and store untouched."""
    good = publish_dataset(store, small, models=models).meta.version
    with pytest.raises(HomepageError, match=rf"no --models, but the active version {good} serves model bundle"):
        publish_dataset(store, small, keep=1)
    assert store.active_version() == good and store.versions() == [good]
    _register()
    res = CliRunner().invoke(app, ["publish", str(small), "--keep", "1"])
    assert res.exit_code != 0 and "give --models" in (str(res.exception) + res.output)
    assert store.active_version() == good and store.versions() == [good]


def test_gc_keeps_the_newest_version_with_a_model_while_the_active_one_has_none(store: RedisStore, small: Path, models: Path) -> None:
    """The workers still serve the last version they could load; gc must not delete it."""
    ds = load_dataset(small)
    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    world = log.global_state(int(ds.events["ts"].max()), 86_400.0)
    bundle, bundle_version = locate_bundle(models)
    store.publish("v1", log, catalog, ds.users, world, bundle, bundle_version=bundle_version)
    store.publish("v2", log, catalog, ds.users, world)  # the low-level call does not check
    store.publish("v3", log, catalog, ds.users, world)
    assert store.gc(1) == ["v2"]
    assert store.versions() == ["v1", "v3"] and store.bundle_files("v1")
    store.publish("v4", log, catalog, ds.users, world, bundle, bundle_version=bundle_version)
    assert store.gc(1) == ["v1", "v3"]


def test_publish_uploads_only_the_files_the_bundle_lists(store: RedisStore, cli_settings: Settings, small: Path, models: Path, tmp_path: Path) -> None:
    """A 30 MB core dump and an editor's swap file beside a bundle went into Redis and onto every worker's disk."""
    import json
    import shutil

    _register()
    bundle = tmp_path / "bundle"
    shutil.copytree(models / (models / "LATEST").read_text().strip(), bundle)
    (bundle / "core.dump").write_bytes(b"\0" * 1000)
    (bundle / "page_model").mkdir(exist_ok=True)
    (bundle / "page_model" / ".model.txt.swp").write_bytes(b"swap")
    res = CliRunner().invoke(app, ["publish", str(small), "--models", str(bundle)])
    assert res.exit_code == 0, res.output
    assert "warning: not published, as the bundle's manifest does not list them: core.dump, page_model/.model.txt.swp" in res.output
    published = set(store.bundle_files(store.active_version()))
    listed = set(json.loads((bundle / "manifest.json").read_text())["files"])
    assert published == listed | {"manifest.json"}


def test_publish_refuses_a_bundle_serving_titles_the_dataset_withdrew(
    store: RedisStore, cli_settings: Settings, small: Path, models: Path, tmp_path: Path
) -> None:
    """A title dropped from the movies file (its licence ended) while its ratings stay in the history: the
    bundle trained before still serves it (workers serve the bundle's catalog), so publishing the two together
    is refused, naming it; a catalog that only grew (a new release the bundle lacks) publishes."""
    from homepage.dataset import write_dataset

    good = publish_dataset(store, small, models=models).meta.version
    ds = load_dataset(small)
    listed = ds.events[ds.events["title_id"].isin(ds.titles["title_id"])]
    gone = int(listed["title_id"].value_counts().index[0])  # the most watched title
    write_dataset(tmp_path / "withdrawn", source="edited", events=ds.events, users=ds.users,
                  titles=ds.titles[ds.titles["title_id"] != gone], variants=ds.variants[ds.variants["title_id"] != gone])
    with pytest.raises(HomepageError, match=rf"serves 1 titles .*withdrawn does not list \({gone} '"):
        publish_dataset(store, tmp_path / "withdrawn", models=models)
    assert store.active_version() == good and store.versions() == [good]
    new_id = int(ds.titles["title_id"].max()) + 1
    new = ds.titles.iloc[:1].assign(title_id=new_id, name="A New Release")
    new_variants = ds.variants[ds.variants["title_id"] == int(ds.titles["title_id"].iloc[0])].assign(title_id=new_id)
    new_variants = new_variants.assign(variant_id=[f"{new_id}-{i}" for i in range(len(new_variants))])
    write_dataset(tmp_path / "grown", source="edited", events=ds.events, users=ds.users,
                  titles=pd.concat([ds.titles, new], ignore_index=True), variants=pd.concat([ds.variants, new_variants], ignore_index=True))
    grown = publish_dataset(store, tmp_path / "grown", models=models).meta.version
    assert store.active_version() == grown


def test_a_rollback_that_serves_withdrawn_titles_again_names_them(
    store: RedisStore, cli_settings: Settings, small: Path, models: Path, tmp_path: Path
) -> None:
    """Publish refuses a bundle serving titles its dataset withdrew, but a rollback restored the older bundle as it was,
    silently: the withdrawn title was on pages again. It still rolls back (the lever for a broken version), naming them."""
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.dataset import write_dataset

    _register()
    before = publish_dataset(store, small, models=models).meta.version
    ds = load_dataset(small)
    gone = int(ds.events["title_id"].value_counts().index[0])
    name = str(ds.titles.set_index("title_id").loc[gone, "name"])
    write_dataset(tmp_path / "withdrawn", source="edited", events=ds.events, users=ds.users,
                  titles=ds.titles[ds.titles["title_id"] != gone], variants=ds.variants[ds.variants["title_id"] != gone])
    trained = tmp_path / "models-withdrawn"
    train_bundle(load_dataset(tmp_path / "withdrawn"), trained, PipelineConfig(page=PageConfig(train_model=False)))
    after = publish_dataset(store, tmp_path / "withdrawn", models=trained).meta.version
    res = CliRunner().invoke(app, ["rollback"])
    assert res.exit_code == 0, res.output
    assert store.active_version() == before
    said = " ".join(res.output.split())
    assert f"warning: {before} serves 1 titles {after} did not ({gone} {name!r})" in said, res.output

    again = publish_dataset(store, small, models=models).meta.version  # the same titles: nothing to say
    assert store.active_version() == again
    res = CliRunner().invoke(app, ["rollback"])
    assert res.exit_code == 0 and store.active_version() == before and "warning" not in res.output, res.output


def test_a_rollback_whose_checks_fail_afterwards_still_says_it_rolled_back(
    store: RedisStore, cli_settings: Settings, small: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison of the two bundles runs after the rollback: an outage there was an error and exit 1 while the
    rollback was done, and an operator running it again rolled back one version more."""
    _register()
    before = publish_dataset(store, small, models=models).meta.version
    publish_dataset(store, small, models=models)

    def outage(*_: object) -> None:
        raise StoreUnavailable("redis unavailable: ConnectionError")

    monkeypatch.setattr(RedisStore, "bundle_titles", outage)
    res = CliRunner().invoke(app, ["rollback"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert store.active_version() == before
    said = " ".join(res.output.split())
    assert f"active version: {before}" in said and f"warning: rolled back to {before}, but what it serves again could not be checked" in said, said
