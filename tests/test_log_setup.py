"""Operator logs: time, level, process and logger on every line; JSON lines hold a traceback in one field."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from homepage.log_setup import JsonFormatter, LogSettings, install, log_settings, uvicorn_log_config
from homepage.settings import SettingsError


def _record(exc: bool) -> logging.LogRecord:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        info = sys.exc_info() if exc else None
    return logging.LogRecord("homepage.page", logging.ERROR, __file__, 1, "ranker %s failed", ("x",), info)


def test_json_lines_carry_the_traceback_in_one_field() -> None:
    line = JsonFormatter().format(_record(exc=True))
    assert "\n" not in line  # one line a record, whatever the traceback
    got = json.loads(line)
    assert got["level"] == "ERROR" and got["logger"] == "homepage.page" and got["message"] == "ranker x failed"
    assert got["ts"].endswith("+00:00") and isinstance(got["pid"], int)
    assert "RuntimeError: boom" in got["exc"]
    assert "exc" not in json.loads(JsonFormatter().format(_record(exc=False)))


def test_install_writes_text_lines_to_the_current_stderr_and_replaces_itself(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        install(LogSettings(format="text", level="WARNING"))
        install(LogSettings(format="json", level="WARNING"))  # replaces the first: one line per record, not two
        logging.getLogger("homepage.test").warning("first %d", 1)
        logging.getLogger("homepage.test").info("not written")
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and json.loads(err[0])["message"] == "first 1"
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEPAGE_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="HOMEPAGE_LOG_FORMAT 'xml'"):
        log_settings()


def test_the_uvicorn_config_is_valid_for_dictconfig() -> None:
    """dictConfig builds it (uvicorn applies it in each worker); the root gets the one handler."""
    import logging.config

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logging.config.dictConfig(uvicorn_log_config(LogSettings(format="json", level="INFO")))
        assert [type(h).__name__ for h in root.handlers] == ["StderrHandler"]
        assert isinstance(root.handlers[0].formatter, JsonFormatter) and root.level == logging.INFO
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_worker_that_died_is_a_warning_at_the_default_level(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn's supervisor says "Child process [N] died" at info: at WARNING (the default) an OOM-killed worker left no line."""
    import logging.config

    root, error_log = logging.getLogger(), logging.getLogger("uvicorn.error")
    saved = (list(root.handlers), root.level, error_log.level, list(error_log.filters))
    try:
        logging.config.dictConfig(uvicorn_log_config(LogSettings(level="WARNING")))
        error_log.info("Started server process [%d]", 4321)
        error_log.info("Child process [%d] died", 4321)
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and " WARNING " in lines[0] and "Child process [4321] died" in lines[0], lines
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        error_log.setLevel(saved[2])
        error_log.filters[:] = saved[3]


_SERVE_JUNK = """
import sys, uvicorn
from homepage.api.nodelay import http_protocol
from homepage.log_setup import uvicorn_log_config

async def ok(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

uvicorn.run(ok, host="127.0.0.1", port=int(sys.argv[1]), http=http_protocol(), log_config=uvicorn_log_config(), lifespan="off")
"""


def test_a_peer_sending_junk_cannot_write_a_log_line_per_connection(tmp_path: Path) -> None:
    """uvicorn warns once per malformed request: 400 junk connections (a TLS handshake on the HTTP port, websocket
    upgrades) wrote 500 lines at the default level. Each of its warnings now passes once a minute, with the count."""
    import os
    import socket
    import subprocess
    import time

    from redis_fixtures import free_port

    port = free_port()
    env = {**os.environ, "HOMEPAGE_LOG_FORMAT": "text", "HOMEPAGE_LOG_LEVEL": "WARNING"}
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _SERVE_JUNK, str(port)], env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.1)
        junk = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(50)] * 200  # a TLS ClientHello
        junk += [b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"] * 100
        for data in junk:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                s.recv(1000)  # the 400, or the page: the server has dealt with it
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # a good request is still served
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [ln for ln in err.read_text().splitlines() if "WARNING" in ln]
    assert any("Invalid HTTP request received." in ln for ln in lines), lines  # the first of each still says it happens
    assert any("Unsupported upgrade request." in ln for ln in lines), lines
    assert len(lines) <= 5, lines[:10]
