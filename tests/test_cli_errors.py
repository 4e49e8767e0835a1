"""Bad input to the CLI is one line naming the culprit, exit code 2, never a traceback, and the store is left alone.

A bad ``--config``, a corrupt dataset directory, a bad ``REDIS_URL`` / ``HOMEPAGE_*`` setting,
a rollback with nothing before the active version; and help texts whose brackets rich
markup would swallow.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
from redis_fixtures import BACKENDS, WORLD_SMALL, write_small_dataset
from typer.testing import CliRunner

from homepage.embedded_redis import EmbeddedRedis
from homepage.errors import HomepageError
from homepage.publish import publish_dataset
from homepage.settings import Settings, get_settings
from homepage.store import RedisStore

SETTING_VARS = ("REDIS_URL", "HOMEPAGE_REDIS_URL", "HOMEPAGE_KEY_PREFIX", "HOMEPAGE_EMBEDDED_DIR")


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[object, str]:
    """(exit code, stderr) of ``homepage ARGV`` run through the console-script entry point."""
    from homepage.cli import main

    monkeypatch.setattr("sys.argv", ["homepage", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def assert_one_line_error(code: object, stderr: str, *parts: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") <= 1, stderr
    flat = " ".join(stderr.split())
    for part in parts:
        assert part in flat, stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No Redis settings from the caller's environment; an embedded dir of our own; fresh cached settings."""
    for var in SETTING_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOMEPAGE_EMBEDDED_DIR", str(tmp_path / "redis"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def cli_store(store: RedisStore, store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisStore]:
    """The test's store (unique prefix, cleaned up by ``store``), with the CLI's settings pointing at it."""
    for var in SETTING_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOMEPAGE_KEY_PREFIX", store_settings.key_prefix)
    monkeypatch.setenv("HOMEPAGE_EMBEDDED_DIR", str(store_settings.embedded_dir))
    if store_settings.redis_url:
        monkeypatch.setenv("REDIS_URL", store_settings.redis_url)
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("ds") / "small")


@pytest.fixture(scope="module")
def models(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle trained on ``small`` (rankers only: cheap), for replay."""
    from homepage.bundle import train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.dataset import load_dataset

    root = tmp_path_factory.mktemp("models")
    train_bundle(load_dataset(small), root, PipelineConfig(page=PageConfig(train_model=False)))
    return root


# ---------------------------------------------------------------- --config
CONFIGS = {
    "directory": (None, "is a directory"),
    "bad-json.json": ('{\n  "split_quantile": 0.5,\n}\n', "bad-json.json:3: not valid JSON"),
    "binary.json": (b"\xff\xfe\x00{", "binary.json: not a JSON config: not UTF-8"),
    "list.json": ("[1, 2]", "list.json: not a JSON object"),
    "empty.json": ("\n", "empty.json: the config file is empty"),
    "rules.json": ('{"rankers": [{"name": "top_n"}]}',
                   "rules.json: page.rules[0] (pin): unknown ranker 'continue_watching' (configured: top_n); that is a default rule: keep the rankers"),
    "viewport.json": ('{"rankers": [{"name": "top_n"}], "page": {"rules": {"viewport_rows": 3}}}',
                      "viewport.json: page.rules[0] (pin): unknown ranker 'continue_watching' (configured: top_n); that is a default rule: keep the rankers"),
    "own-rules.json": ('{"rankers": [{"name": "top_n"}], "page": {"rules": {"rules": [{"rule": "max_rows", "ranker": "trending", "max": 2}]}}}',
                       "own-rules.json: page.rules[0] (max_rows): unknown ranker 'trending' (configured: top_n)"),
    "ranker.json": ('{"rankers": [{"name": "top_n", "config": {"bogus": 1}}], "page": {"rules": {"rules": []}}}',
                    "ranker.json: rankers.0.config.bogus: Extra inputs are not permitted"),
}


@pytest.mark.parametrize("command", ["train", "publish"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_config_file_is_named(name: str, command: str, tmp_path: Path, clean_env: None, monkeypatch, capsys) -> None:
    """The config is read before the dataset or the store: neither exists here."""
    content, message = CONFIGS[name]
    cfg = tmp_path / name
    if content is None:
        cfg.mkdir()
    elif isinstance(content, bytes):
        cfg.write_bytes(content)
    else:
        cfg.write_text(content)
    extra = ["--out", str(tmp_path / "models")] if command == "train" else []
    code, err = run_cli(monkeypatch, capsys, command, str(tmp_path / "no-dataset"), *extra, "--config", str(cfg))
    assert_one_line_error(code, err, str(cfg), message)
    assert not (tmp_path / "redis").exists()  # failed before connecting to (or starting) Redis


def test_only_a_default_rule_is_called_one(tmp_path: Path) -> None:
    """A rule the config gave itself is not blamed on the defaults (the hint is for rules the user never wrote)."""
    from homepage.config import load_config
    from homepage.errors import HomepageError

    cfg = tmp_path / "own-rules.json"
    cfg.write_text(CONFIGS["own-rules.json"][0])
    with pytest.raises(HomepageError) as e:
        load_config(cfg)
    assert "unknown ranker 'trending'" in str(e.value) and "default rule" not in str(e.value)


# ---------------------------------------------------------------- corrupt datasets
def _not_json(d: Path) -> None:
    (d / "manifest.json").write_text('{"source": "test",\n "created": }')


def _missing_keys(d: Path) -> None:
    (d / "manifest.json").write_text('{"format_version": 1, "source": "test"}')


def _wrong_type(d: Path) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["counts"]["events"] = "many"
    (d / "manifest.json").write_text(json.dumps(m))


def _truncated(d: Path) -> None:
    data = (d / "events.parquet").read_bytes()
    (d / "events.parquet").write_bytes(data[: len(data) // 2])


def _not_parquet(d: Path) -> None:
    (d / "titles.parquet").write_text("title_id,name\n1,x\n")


def _wrong_table(d: Path) -> None:
    shutil.copy(d / "titles.parquet", d / "users.parquet")


CORRUPTIONS = {
    "manifest-not-json": (_not_json, "manifest.json:2: not valid JSON"),
    "manifest-missing-keys": (_missing_keys, "manifest.json: not a dataset manifest: missing 'created', 'counts'"),
    "manifest-wrong-type": (_wrong_type, "manifest.json: counts['events'] is \"many\", expected int"),
    "events-truncated": (_truncated, "events.parquet: not a readable Parquet file"),
    "titles-not-parquet": (_not_parquet, "titles.parquet: not a readable Parquet file"),
    "users-wrong-table": (_wrong_table, "users.parquet: not the users table: it has no column 'user_id'"),
}


@pytest.fixture(params=list(CORRUPTIONS))
def corrupt(request: pytest.FixtureRequest, small: Path, tmp_path: Path) -> tuple[Path, str]:
    """(a copy of ``small`` damaged one way, the error message after the directory)."""
    damage, message = CORRUPTIONS[request.param]
    d = tmp_path / "corrupt"
    shutil.copytree(small, d)
    damage(d)
    return d, message


@pytest.mark.parametrize("command", ["train", "replay", "dataset info"])
def test_corrupt_dataset_names_the_file(command: str, corrupt, models: Path, tmp_path: Path, clean_env: None, monkeypatch, capsys) -> None:
    d, message = corrupt
    argv = {
        "train": ["train", str(d), "--out", str(tmp_path / "models")],
        "replay": ["replay", str(d), "--models", str(models), "--policies", "row-ranking", "--bootstrap", "100"],
        "dataset info": ["dataset", "info", str(d)],
    }[command]
    code, err = run_cli(monkeypatch, capsys, *argv)
    assert_one_line_error(code, err, f"{d}/{message}")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_publishing_a_corrupt_dataset_keeps_the_active_version(corrupt, small: Path, cli_store: RedisStore, monkeypatch, capsys) -> None:
    good = publish_dataset(cli_store, small).meta.version
    d, message = corrupt
    code, err = run_cli(monkeypatch, capsys, "publish", str(d))
    assert_one_line_error(code, err, f"{d}/{message}")
    assert cli_store.active_version() == good and cli_store.versions() == [good]


# ---------------------------------------------------------------- Redis settings
BAD_SETTINGS = [
    ("REDIS_URL", "http://localhost:6379/0", "use one of redis://"),
    ("REDIS_URL", "redis://localhost:notaport/0", "not a valid URL"),
    ("REDIS_URL", "redis://[::1/0", "not a valid URL"),
    ("REDIS_URL", "redis://localhost:6379/abc", "database 'abc' is not a database index"),
    ("REDIS_URL", "redis://localhost:6379/-1", "database '-1' is not a database index"),
    ("REDIS_URL", "unix://", "give the socket path"),
    ("HOMEPAGE_KEY_PREFIX", "has space", "' ' is not allowed: use 1 to 64 letters"),
    ("HOMEPAGE_KEY_PREFIX", "a:b", "':' is not allowed: use 1 to 64 letters"),  # prefix 'a' would SCAN a:b's keys
    ("HOMEPAGE_KEY_PREFIX", "hp*", "'*' is not allowed"),
    ("HOMEPAGE_KEY_PREFIX", "hp{eu}", "'{' is not allowed"),  # a hash tag of its own: another slot
    ("HOMEPAGE_KEY_PREFIX", "p" * 65, "65 characters: use 1 to 64 letters"),
    ("HOMEPAGE_SOCKET_TIMEOUT", "soon", "valid number"),
]
REDIS_COMMANDS = [["versions"], ["rollback"], ["publish", "no-dataset"], ["logs", "export", "--out", "x.parquet"]]


@pytest.mark.parametrize("argv", REDIS_COMMANDS, ids=lambda a: a[0] if a[0] != "logs" else "logs-export")
@pytest.mark.parametrize(("var", "value", "message"), BAD_SETTINGS)
def test_bad_redis_setting_is_named(var: str, value: str, message: str, argv: list[str], tmp_path: Path, clean_env: None, monkeypatch, capsys) -> None:
    monkeypatch.setenv(var, value)
    code, err = run_cli(monkeypatch, capsys, *argv)
    assert_one_line_error(code, err, f"{var} {value!r}", message)
    assert not (tmp_path / "redis").exists()


@pytest.mark.parametrize("argv", REDIS_COMMANDS[:2] + REDIS_COMMANDS[3:], ids=["versions", "rollback", "logs-export"])
def test_database_the_server_lacks_names_redis_url(argv: list[str], embedded_redis: EmbeddedRedis, clean_env: None, monkeypatch, capsys) -> None:
    """Only the server knows how many databases it has: redis-py's bare ResponseError becomes an error naming REDIS_URL."""
    url = f"unix://{embedded_redis.start()}?db=99999"
    monkeypatch.setenv("REDIS_URL", url)
    code, err = run_cli(monkeypatch, capsys, *argv)
    assert_one_line_error(code, err, f"REDIS_URL {url!r}", "DB index is out of range")


def test_wrong_password_names_redis_url(embedded_redis: EmbeddedRedis, clean_env: None, monkeypatch, capsys) -> None:
    """A password the server refuses is not an outage: one line naming REDIS_URL, no retrying, no traceback."""
    import redis

    sock = embedded_redis.start()
    admin = redis.Redis(unix_socket_path=str(sock))
    admin.config_set("requirepass", "right-one")
    try:
        url = f"unix://{sock}?password=wrong-one"
        monkeypatch.setenv("REDIS_URL", url)
        code, err = run_cli(monkeypatch, capsys, "versions")
        assert_one_line_error(code, err, f"REDIS_URL {url.replace('wrong-one', '***')!r}", "the server refuses it")
        assert "unavailable" not in err and "wrong-one" not in err
    finally:
        with redis.Redis(unix_socket_path=str(sock), password="right-one") as reset:
            reset.config_set("requirepass", "")
        admin.close()


@pytest.mark.parametrize(("rules", "argv", "parts"), [
    (["~other:*", "+@all"], ["versions"], ["the server refuses it", "ACL", "keys", "starts with 'hp:'", "HOMEPAGE_KEY_PREFIX"]),
    (["~other:*", "+@all"], ["gc"], ["the server refuses it", "ACL", "starts with 'hp:'"]),
    (["~*", "+@all", "-lrange"], ["versions"], ["REDIS_URL's user is refused by the server's ACL", "lrange"]),
    (["~*", "+@read", "+@write", "+@connection"], ["versions"], ["the server refuses it", "eval", "Lua scripts"]),  # least privilege, no scripts
])
def test_an_acl_refusing_the_store_is_one_line(
    rules: list[str], argv: list[str], parts: list[str], embedded_redis: EmbeddedRedis, clean_env: None, monkeypatch, capsys
) -> None:
    """A managed Redis's ACL user limited to other keys (``~app:*``) or commands: one line naming the ACL (and, for
    keys, the prefix and the variable that sets it), not a traceback; the password never shown."""
    import redis

    sock = embedded_redis.start()
    user, secret = "acl-" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex
    admin = redis.Redis(unix_socket_path=str(sock))
    admin.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], keys=[r.removeprefix("~") for r in rules if r.startswith("~")],
                      commands=[r for r in rules if not r.startswith("~")])
    try:
        monkeypatch.setenv("REDIS_URL", f"unix://{sock}?username={user}&password={secret}")
        code, err = run_cli(monkeypatch, capsys, *argv)
        assert_one_line_error(code, err, *parts)
        assert secret not in err
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_no_password_where_the_server_asks_for_one_says_so(embedded_redis: EmbeddedRedis, clean_env: None, monkeypatch, capsys) -> None:
    """redis-py's RESP3 handshake makes the server's reply talk of HELLO, not of a password: the line says what is missing."""
    import redis

    sock = embedded_redis.start()
    admin = redis.Redis(unix_socket_path=str(sock))
    admin.config_set("requirepass", "right-one")
    try:
        monkeypatch.setenv("REDIS_URL", f"unix://{sock}")
        code, err = run_cli(monkeypatch, capsys, "versions")
        assert_one_line_error(code, err, "the server asks for a password and REDIS_URL gives none")
        assert "HELLO" not in err
    finally:
        with redis.Redis(unix_socket_path=str(sock), password="right-one") as reset:
            reset.config_set("requirepass", "")
        admin.close()


def test_versions_of_an_empty_store_say_where_they_looked(cli_store: RedisStore, monkeypatch, capsys) -> None:
    """Nothing published (another prefix, another database, a fresh embedded Redis): a line on stderr
    naming the prefix and the Redis, instead of no output at all; stdout stays an empty listing."""
    from homepage.cli import main

    monkeypatch.setattr("sys.argv", ["homepage", "versions"])
    main()
    out, err = capsys.readouterr()
    assert out == ""
    flat = " ".join(err.split())
    assert f"no published versions under key prefix {cli_store.keys.prefix!r} at " in flat and "run `homepage publish`" in flat
    assert ("REDIS_URL" if cli_store.settings.redis_url else "HOMEPAGE_EMBEDDED_DIR") in flat


def test_embedded_dir_that_is_a_file_is_named(tmp_path: Path, clean_env: None, monkeypatch, capsys) -> None:
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("HOMEPAGE_EMBEDDED_DIR", str(tmp_path / "file"))
    code, err = run_cli(monkeypatch, capsys, "versions")
    assert_one_line_error(code, err, f"HOMEPAGE_EMBEDDED_DIR '{tmp_path / 'file'}'", "cannot use it")
    assert (tmp_path / "file").read_text() == "not a directory"


# ---------------------------------------------------------------- rollback
@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_rollback_with_nothing_published_says_so(cli_store: RedisStore, monkeypatch, capsys) -> None:
    code, err = run_cli(monkeypatch, capsys, "rollback")
    assert_one_line_error(code, err, "nothing to roll back: no version is published", repr(cli_store.keys.prefix))
    assert "None" not in err


@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_rollback_of_the_oldest_version_says_there_is_no_earlier_one(cli_store: RedisStore, small: Path, monkeypatch, capsys) -> None:
    only = publish_dataset(cli_store, small).meta.version
    code, err = run_cli(monkeypatch, capsys, "rollback")
    assert_one_line_error(code, err, "no earlier version to roll back to", only)
    assert cli_store.active_version() == only and cli_store.versions() == [only]


@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_rollback_warns_of_the_events_the_previous_version_lacks(cli_store: RedisStore, small: Path, monkeypatch, capsys) -> None:
    from homepage.catalog import Catalog
    from homepage.dataset import load_dataset
    from homepage.domain import Event

    first = publish_dataset(cli_store, small).meta.version
    publish_dataset(cli_store, small)
    ds = load_dataset(small)
    title = int(ds.titles["title_id"].iloc[0])
    now = int(ds.events["ts"].max()) + 60
    events = [Event(user_id=1, title_id=title, kind="play", ts=now + i, progress=0.3) for i in range(3)]
    cli_store.append_events(events, Catalog.from_frames(ds.titles, ds.variants))
    from homepage.cli import main

    monkeypatch.setattr("sys.argv", ["homepage", "rollback"])
    main()
    err = capsys.readouterr().err
    assert cli_store.active_version() == first
    assert f"3 events acknowledged since {first} was last live are not in its user" in " ".join(err.split())
    assert "merge-events" in err


# ---------------------------------------------------------------- rich markup
@pytest.mark.parametrize(("argv", "text"), [(["train", "--help"], "[spark]"), (["artwork", "evaluate", "--help"], "model:PATH[@EPS]")])
def test_help_shows_bracketed_text(argv: list[str], text: str) -> None:
    from homepage.cli import _register, app

    _register()
    res = CliRunner().invoke(app, argv, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert text in res.output


def test_error_message_with_brackets_is_printed_as_is(tmp_path: Path, clean_env: None, monkeypatch, capsys) -> None:
    """A path that looks like rich markup is neither swallowed nor a MarkupError traceback."""
    d = tmp_path / "[/x]" / "[red]ds"
    d.mkdir(parents=True)
    code, err = run_cli(monkeypatch, capsys, "dataset", "info", str(d))
    assert_one_line_error(code, err, f"{d}: not a dataset")


@pytest.mark.parametrize("url", [
    "redis://:s3cret@127.0.0.1:6379/abc",  # a bad database
    "Redis://:s3cret@h",  # a scheme in capitals
    "redis-cluster://u:s3cret@h",  # an unknown scheme
    "s3cret@h",  # no scheme
    "redis://:ab?s3cret@h:6379",  # an unencoded '?' in the password: the parser's words quote it
    "redis://:12345/s3cret@h",  # an unencoded '/': the "database" holds the password
    "redis://user:pa@s3cret@h:1/x",  # an unencoded '@'
])
def test_a_password_in_redis_url_is_masked_in_errors(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors reach logs: a bad REDIS_URL is named without its password, however malformed."""
    from homepage.settings import SettingsError, get_settings

    monkeypatch.setenv("REDIS_URL", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as e:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert "s3cret" not in str(e.value) and "***" in str(e.value) and "REDIS_URL" in str(e.value)


def test_serve_refuses_a_database_the_server_lacks_before_starting(embedded_redis: EmbeddedRedis, clean_env: None, monkeypatch, capsys) -> None:
    """A refused REDIS_URL stops `serve` with one line (it logged a traceback every refresh instead); a Redis that is down does not."""
    url = f"unix://{embedded_redis.start()}?db=99999"
    monkeypatch.setenv("REDIS_URL", url)
    code, err = run_cli(monkeypatch, capsys, "serve", "--host", "256.0.0.1")  # an unbindable host: without the check, uvicorn fails at once
    assert_one_line_error(code, err, f"REDIS_URL {url!r}", "DB index is out of range")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_port_in_use_before_starting_anything(workers: int, clean_env: None, tmp_path: Path, monkeypatch, capsys) -> None:
    """A second `serve` on a busy port (a deploy's mistake) is one line naming the port, before it starts the embedded
    Redis or loads a model: uvicorn binds only after a worker's start-up, so it printed "serving on", loaded the
    bundle into the models directory, then exited 3 with uvicorn's own line."""
    monkeypatch.setenv("HOMEPAGE_MODELS_DIR", str(tmp_path / "models"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_cli(monkeypatch, capsys, "serve", "--port", str(port), "--workers", str(workers))
    assert_one_line_error(code, err, f"--port {port}: 127.0.0.1:{port} is in use")
    assert not (tmp_path / "redis").exists() and not (tmp_path / "models").exists()


def test_the_port_check_leaves_a_host_of_a_family_the_machine_lacks_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --host ::1` on a machine without IPv6: the port check's socket() failed with a traceback before uvicorn could say why."""
    from homepage.cli import serve as serve_cli

    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        return real_socket(family, *args)  # type: ignore[call-overload]

    monkeypatch.setattr(serve_cli.socket, "socket", no_ipv6)
    serve_cli._check_port_free("::1", 8000)  # returns: nothing to check, uvicorn reports the family itself


@pytest.mark.parametrize(("var", "value", "message"), [
    ("HOMEPAGE_DEADLINE_MS", "abc", "valid number"),
    ("HOMEPAGE_THREADS", "0", "greater than or equal to 1"),
    ("HOMEPAGE_POLICY", "stage_wise", "unknown policy 'stage_wise' (known: "),
])
def test_serve_names_a_bad_serving_variable(var: str, value: str, message: str, clean_env: None, monkeypatch, capsys) -> None:
    """A bad HOMEPAGE_* serving variable stops `serve` in one line (it was a pydantic traceback from the worker)."""
    monkeypatch.setenv(var, value)
    code, err = run_cli(monkeypatch, capsys, "serve", "--host", "256.0.0.1")
    assert_one_line_error(code, err, f"{var} {value!r}", message)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_models_dir_it_cannot_write_before_starting(workers: int, clean_env: None, tmp_path: Path, monkeypatch, capsys) -> None:
    """An unwritable HOMEPAGE_MODELS_DIR (the default is relative to the working directory, read-only in a container
    image) served a node never ready, a traceback logged at every retry and every page a fallback saying
    `redis_unavailable`; now one line before anything starts. (A file stands in the way: root writes anywhere else.)"""
    (tmp_path / "ro").write_text("")
    monkeypatch.setenv("HOMEPAGE_MODELS_DIR", str(tmp_path / "ro" / "models"))
    code, err = run_cli(monkeypatch, capsys, "serve", "--host", "256.0.0.1", "--workers", str(workers))
    assert_one_line_error(code, err, f"HOMEPAGE_MODELS_DIR {tmp_path / 'ro' / 'models'}:", "set HOMEPAGE_MODELS_DIR to a writable directory")
    assert not (tmp_path / "redis").exists()


def test_serve_names_the_working_directory_of_the_default_models_dir(clean_env: None, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HOMEPAGE_MODELS_DIR", raising=False)
    (tmp_path / "var").write_text("")  # var/serving-models cannot be made here
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "serve", "--host", "256.0.0.1")
    assert_one_line_error(code, err, "HOMEPAGE_MODELS_DIR var/serving-models:", f"(the default, under the working directory {tmp_path})")


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_serve_refuses_a_metrics_dir_the_workers_cannot_write(kind: str, clean_env: None, tmp_path: Path, monkeypatch, capsys) -> None:
    """A PROMETHEUS_MULTIPROC_DIR that is missing (prometheus_client does not create it) crashed every worker at
    start-up, uvicorn starting new ones in a loop of tracebacks while `serve` ran on, never serving."""
    metrics = tmp_path / "metrics"
    if kind == "file":
        metrics.write_text("")
    monkeypatch.setenv("HOMEPAGE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics))
    code, err = run_cli(monkeypatch, capsys, "serve", "--host", "256.0.0.1", "--workers", "2")
    assert_one_line_error(code, err, f"PROMETHEUS_MULTIPROC_DIR {metrics}: not a directory")


def test_train_refuses_an_out_it_cannot_write_before_loading(small: Path, clean_env: None, tmp_path: Path, monkeypatch, capsys) -> None:
    """`homepage train --out` on a read-only volume was a PermissionError traceback (exit 1) after loading the dataset."""
    (tmp_path / "ro").write_text("")
    code, err = run_cli(monkeypatch, capsys, "train", str(small), "--out", str(tmp_path / "ro" / "models"))
    assert_one_line_error(code, err, f"--out {tmp_path / 'ro' / 'models'}:")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("HOMEPAGE_DEADLINE_MS", "abc", "valid number"),
    ("HOMEPAGE_POLICY", "stage_wise", "unknown policy 'stage_wise' (known: "),
])
def test_demo_names_a_bad_serving_variable_before_generating_anything(
    var: str, value: str, message: str, clean_env: None, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`homepage demo` checked none of the variables its workers read: with HOMEPAGE_POLICY mistyped it generated,
    trained, published, printed "try: curl ..." and served a node that was never ready (every version refused);
    a bad HOMEPAGE_DEADLINE_MS was a traceback from the worker after the training. Now one line, before any work."""
    monkeypatch.setenv(var, value)
    with socket.socket() as s:  # a port free now, so the demo's own port check passes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = run_cli(monkeypatch, capsys, "demo", "--var", str(tmp_path / "var"), "--port", str(port), "--users", "10", "--titles", "10")
    assert_one_line_error(code, err, f"{var} {value!r}", message)
    assert not (tmp_path / "var").exists()


def test_demo_on_redis_url_names_a_password_the_server_refuses_before_generating_anything(
    embedded_redis: EmbeddedRedis, clean_env: None, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`homepage demo --use-redis-url` with a wrong password generated and trained for a minute, then failed at the publish."""
    import redis

    sock = embedded_redis.start()
    admin = redis.Redis(unix_socket_path=str(sock))
    admin.config_set("requirepass", "right-one")
    try:
        monkeypatch.setenv("REDIS_URL", f"unix://{sock}?password=wrong-one")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code, err = run_cli(
            monkeypatch, capsys, "demo", "--use-redis-url", "--var", str(tmp_path / "var"), "--port", str(port), "--users", "10", "--titles", "10"
        )
        assert_one_line_error(code, err, "REDIS_URL", "the server refuses it")
        assert "wrong-one" not in err and not (tmp_path / "var").exists()
    finally:
        with redis.Redis(unix_socket_path=str(sock), password="right-one") as reset:
            reset.config_set("requirepass", "")
        admin.close()


def _listed_commands(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(command path, the help text its group's listing shows) for every command under ``group``
    (typer's own vendored click groups: anything with ``commands``)."""
    for name, cmd in getattr(group, "commands").items():
        yield " ".join((*path, name)), cmd.short_help or cmd.help or ""
        if hasattr(cmd, "commands"):
            yield from _listed_commands(cmd, (*path, name))


def _commands(group: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(command path, command) for every command under ``group``."""
    for name, cmd in getattr(group, "commands").items():
        yield " ".join((*path, name)), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


def test_command_listings_are_one_sentence_without_rst() -> None:
    """A command list shows the first paragraph of each docstring with its line breaks kept (typer's
    rich mode), so a first paragraph wrapped in the source came out as ragged lines in ``--help``."""
    import inspect

    import typer

    from homepage.cli import _register, app

    _register()
    listed = dict(_listed_commands(typer.main.get_command(app)))
    assert {"train", "replay", "explain", "eval rankers", "artwork evaluate"} <= set(listed)
    for name, text in listed.items():
        first = inspect.cleandoc(text).split("\n\n")[0]
        assert "\n" not in first, f"{name}: the listing's line is wrapped in the source: {first!r}"
        assert "``" not in first, f"{name}: reStructuredText markup shown as is: {first!r}"
    # a command's own --help shows every paragraph with its line breaks: each must be one line
    helps = {name: cmd.help or "" for name, cmd in _commands(typer.main.get_command(app))}
    assert "\n\n" in helps["explain"] and "\n\n" in helps["config show"]
    for name, text in helps.items():
        for paragraph in text.split("\n\n"):
            assert "\n" not in paragraph and "``" not in paragraph, f"{name}: ragged in --help: {paragraph!r}"


def test_every_command_is_in_a_help_panel_in_the_declared_order() -> None:
    """``homepage --help`` groups its commands by job (data, models, evaluation, logs, serving); a new
    command left out of ``COMMAND_PANELS`` would land in a catch-all panel at the end."""
    import typer

    from homepage.cli import COMMAND_PANELS, UNPLACED_PANEL, _register, app

    _register()
    group = typer.main.get_command(app)
    listed = [(name, getattr(cmd, "rich_help_panel", None)) for name, cmd in getattr(group, "commands").items()]
    assert not [name for name, panel in listed if panel in (None, UNPLACED_PANEL)]
    declared = {name: panel for panel, names in COMMAND_PANELS.items() for name in names}
    assert {name for name, _ in listed} == set(declared)
    panels_in_order = list(dict.fromkeys(panel for _, panel in listed))
    assert panels_in_order == list(COMMAND_PANELS)
    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    positions = [res.output.index(f"─ {panel} ") for panel in COMMAND_PANELS]
    assert positions == sorted(positions)


def test_logs_export_with_nothing_served_says_so_and_names_the_prefix(
    cli_store: RedisStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Nothing served yet under the prefix (a new deployment, or a mistyped HOMEPAGE_KEY_PREFIX): the export said
    'served log: ts is float64, not integer Unix seconds', as if the served stream were damaged."""
    publish_dataset(cli_store, WORLD_SMALL)
    out = tmp_path / "served.parquet"
    code, err = run_cli(monkeypatch, capsys, "logs", "export", "--out", str(out))
    assert_one_line_error(code, err, "no served pages", repr(cli_store.keys.prefix))
    assert "float64" not in err and not out.exists()


@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_versions_lists_the_others_when_one_versions_record_is_lost(cli_store: RedisStore, small: Path, monkeypatch, capsys) -> None:
    """A listed version whose record Redis lost (evicted, a partial restore) made `homepage versions` one error line
    and no listing, just when the operator needs to see what is left; now that line says so and the others are listed."""
    from homepage.cli import main

    old = publish_dataset(cli_store, small).meta.version
    new = publish_dataset(cli_store, small).meta.version
    cli_store.client.delete(cli_store.keys.meta(old))
    monkeypatch.setattr("sys.argv", ["homepage", "versions"])
    main()
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith(f"  {old}  record missing from Redis")
    assert lines[1].startswith(f"* {new}  as of ")


@pytest.mark.parametrize("redis_backend", BACKENDS, indirect=True)
def test_rollback_to_a_version_whose_record_is_lost_says_so(cli_store: RedisStore, small: Path, monkeypatch, capsys) -> None:
    """The version a rollback would restore lost its record (evicted, a partial restore): refused, as before, but saying
    why instead of only "version V: not found" about a version `homepage versions` lists."""
    old = publish_dataset(cli_store, small).meta.version
    new = publish_dataset(cli_store, small).meta.version
    cli_store.client.delete(cli_store.keys.meta(old))
    code, err = run_cli(monkeypatch, capsys, "rollback")
    assert_one_line_error(code, err, f"the version before {new}, {old}, has lost its record in Redis", "publish the dataset again")
    assert cli_store.active_version() == new


def test_an_error_importing_the_commands_is_one_line(clean_env: None, monkeypatch, capsys) -> None:
    """The commands' modules are imported before any command runs; an error there (numba with no place to cache its
    kernels: a read-only image with no writable temporary directory) was a traceback, not the one line other errors get."""
    import homepage.cli

    def no_cache() -> None:
        raise HomepageError("numba has nowhere to cache the compiled kernels: ...; set NUMBA_CACHE_DIR or TMPDIR to a writable directory")

    monkeypatch.setattr(homepage.cli, "_register", no_cache)
    code, err = run_cli(monkeypatch, capsys, "versions")
    assert_one_line_error(code, err, "nowhere to cache the compiled kernels", "set NUMBA_CACHE_DIR or TMPDIR")
