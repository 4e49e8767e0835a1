"""Operator logs: time, level, process and logger on every line; JSON lines hold a traceback in one field."""

from __future__ import annotations

import json
import logging
import sys

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
