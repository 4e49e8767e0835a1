"""Log lines for operators: time, level, process and logger on every line, as text or one JSON object a line.

``HOMEPAGE_LOG_FORMAT`` (``text`` or ``json``) and ``HOMEPAGE_LOG_LEVEL`` choose. The command
line installs the handler for its own process (``install``); ``homepage serve`` hands uvicorn
the same configuration (``uvicorn_log_config``), which uvicorn applies in every worker process.
Without it, Python printed bare messages with no time or process, and tracebacks as loose lines
a log collector splits apart.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from homepage.settings import SettingsError

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class LogSettings(BaseSettings):
    """How the service and the command line write their logs."""

    model_config = SettingsConfigDict(env_prefix="HOMEPAGE_LOG_", extra="ignore", frozen=True)

    format: Literal["text", "json"] = Field(default="text", description="text lines, or one JSON object a line (for a log collector)")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="WARNING", description="the least severe level written")


def log_settings() -> LogSettings:
    """The log settings from the environment; a ``SettingsError`` naming the variable when one is bad."""
    try:
        return LogSettings()
    except ValidationError as e:
        first = e.errors()[0]
        name = f"HOMEPAGE_LOG_{str(first['loc'][0]).upper()}" if first["loc"] else "HOMEPAGE_LOG_*"
        raise SettingsError(f"{name} {first['input']!r}: {first['msg']}") from None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ms), level, logger, pid, message, and the traceback as one field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a handler keeping the stream it was made with
    writes into a closed one after a test or a tool swapped ``sys.stderr``)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def formatter(fmt: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def install(settings: LogSettings | None = None) -> None:
    """Put this module's handler on the root logger (replacing one it put there before; others stay)."""
    s = settings or log_settings()
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "homepage", False)]:
        root.removeHandler(h)
    handler = StderrHandler()
    handler.homepage = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(s.format))
    handler.setLevel(s.level)
    root.addHandler(handler)
    if root.level > logging.getLevelName(s.level):
        root.setLevel(s.level)


def _at_most_info(level: str) -> str:
    return level if logging.getLevelName(level) <= logging.INFO else "INFO"


class WorkerDeaths:
    """A logging filter for ``uvicorn.error``: a worker that died (an OOM kill, a crash) is a warning, not uvicorn's info line.

    At the default level (``WARNING``) the supervisor's "Child process [N] died" was dropped, so a
    worker killed and replaced left no line in the log at all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and _WORKER_DIED.fullmatch(record.getMessage()):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = f"{record.getMessage()}; uvicorn starts another worker in its place", None
        return True


_WORKER_DIED = re.compile(r"Child process \[\d+\] died")


def uvicorn_log_config(settings: LogSettings | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn: its loggers and ours through one handler, in each worker."""
    s = settings or log_settings()
    fmt: dict[str, Any] = {"()": "homepage.log_setup.JsonFormatter"} if s.format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"homepage": fmt},
        "handlers": {"stderr": {"()": "homepage.log_setup.StderrHandler", "formatter": "homepage", "level": s.level}},
        # uvicorn warns once per malformed request or connection: once a minute per message instead
        "filters": {"repeated": {"()": "homepage.log_throttle.RepeatedWarnings"}, "worker_deaths": {"()": "homepage.log_setup.WorkerDeaths"}},
        "root": {"handlers": ["stderr"], "level": s.level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": s.level, "propagate": True},
            # INFO at most: the supervisor's line about a dead worker must reach ``WorkerDeaths`` (the handler drops other info lines)
            "uvicorn.error": {"handlers": [], "level": _at_most_info(s.level), "propagate": True, "filters": ["repeated", "worker_deaths"]},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
