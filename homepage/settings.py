"""Runtime settings from the environment (``REDIS_URL``, ``HOMEPAGE_*``), read once and cached.

Tests and the API override them the FastAPI way: ``get_settings.cache_clear()`` after
changing the environment, or a dependency override that returns another ``Settings``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from homepage.errors import HomepageError

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")  # rediss: TLS to every node
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)
KEY_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class SettingsError(HomepageError):
    """A setting read from the environment is invalid; the message names the variable."""


def shown_url(url: str) -> str:
    """``url`` as an error message may show it: any user info and ``password=`` masked (messages reach logs).

    Malformed URLs are the ones reported, so nothing about their shape is assumed: everything
    up to the last ``@`` (after the scheme, if any) is user info.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    rest = re.sub(r"(?i)(password=)[^&#]*", r"\1***", rest)
    return repr(f"{head}{sep}{rest}")


def _has_secret(url: str) -> bool:
    return "@" in url or "password=" in url.lower()



def check_redis_url(url: str) -> None:
    """Raise ``ValueError`` (the message naming ``REDIS_URL``) for a URL redis-py would reject or misread.

    redis-py reads ``redis://host/abc`` as database 0 without a word, and a bad port or
    IPv6 host only when connecting; these are caught here. Whether a database index exists
    is the server's to say (``homepage.cli.versions.open_store`` asks it).
    """
    if not url.startswith(REDIS_SCHEMES):
        raise ValueError(f"REDIS_URL {shown_url(url)}: use one of {', '.join(REDIS_SCHEMES)}")
    if url.startswith(CLUSTER_SCHEMES):
        # host:port list, checked by homepage.store.cluster_nodes; a cluster has database 0 only, and a
        # database named anyway was ignored: two deployments told apart by it shared one keyspace
        rest, _, query = url.split("://", 1)[1].partition("?")
        db = rest.rpartition("@")[2].partition("/")[2].strip("/") or ",".join(parse_qs(query).get("db", []))
        if db not in ("", "0"):
            shown = "" if _has_secret(url) else f" {db!r}"
            raise ValueError(
                f"REDIS_URL {shown_url(url)}: database{shown}: a Redis Cluster has database 0 only; keep deployments apart with HOMEPAGE_KEY_PREFIX"
            )
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        why = "" if _has_secret(url) else f" ({e})"  # the parser's words may quote part of a password
        raise ValueError(f"REDIS_URL {shown_url(url)}: not a valid URL{why}") from None
    if port == 0:
        raise ValueError(f"REDIS_URL {shown_url(url)}: port 0 is not a port")
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"REDIS_URL {shown_url(url)}: give the socket path, as unix:///path/to/redis.sock")
        dbs = query.get("db", [])
    else:
        dbs = query.get("db") or ([parts.path.strip("/")] if parts.path.strip("/") else [])
    for db in dbs:
        if not db.isdigit():
            shown = "" if _has_secret(url) else f" {db!r}"
            raise ValueError(f"REDIS_URL {shown_url(url)}: database{shown} is not a database index (0, 1, ...: redis://host:port/0)")


class Settings(BaseSettings):
    """Where Redis is and how the store uses it."""

    model_config = SettingsConfigDict(
        env_prefix="HOMEPAGE_", extra="ignore", frozen=True, populate_by_name=True
    )

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "HOMEPAGE_REDIS_URL"),
        description=(
            "redis://host:port/db (one server; rediss:// with TLS), redis+cluster://[user:password@]host:port[,host:port...]"
            " (Redis Cluster; rediss+cluster:// with TLS);"
            " unset means the embedded Redis in ``embedded_dir``"
        ),
    )
    key_prefix: str = Field(default="hp", pattern=KEY_PREFIX_PATTERN, description="namespace of every key")
    socket_timeout: float = Field(default=2.0, gt=0, le=600, description="seconds per Redis command")
    connect_timeout: float = Field(default=1.0, gt=0, le=600, description="seconds to open a connection")
    embedded_dir: Path = Field(default=Path("var/redis"), description="data dir and socket of the embedded Redis")
    versions_keep: int = Field(default=3, ge=1, le=100, description="published versions kept by gc")
    publish_batch_users: int = Field(default=500, ge=1, le=100_000, description="users per pipelined batch")
    publish_lease_seconds: int = Field(
        default=60, ge=1, le=86_400, description="an unfinished publish silent this long is an orphan gc may delete"
    )
    events_maxlen: int = Field(default=1_000_000, ge=1000, description="approximate cap of the events stream")
    served_maxlen: int = Field(default=1_000_000, ge=1000, description="approximate cap of the served-pages stream")
    max_history_records: int = Field(
        default=100_000, ge=100, le=10_000_000,
        description="records a user's history keeps as events arrive (the newest; 2.9 MB): a flood for one user made every page miss move it all",
    )
    max_regions: int = Field(
        default=256, ge=1, le=100_000,
        description="regions with counters of their own in a version (every worker holds two catalog-sized arrays for each); events of users in other regions count overall",
    )
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1, description="how long an idempotency key is remembered")
    active_cache_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="how long a store trusts its cached active-version pointer"
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None:
            check_redis_url(url)
        return url

    @property
    def redis_cluster(self) -> bool:
        """True when ``redis_url`` names a Redis Cluster."""
        return bool(self.redis_url and self.redis_url.startswith(CLUSTER_SCHEMES))


def env_name(field: str) -> str:
    """The environment variable a ``Settings`` field (or alias) is read from."""
    if field in ("redis_url", "REDIS_URL"):
        return "REDIS_URL"
    return field if field.isupper() else f"HOMEPAGE_{field.upper()}"


def settings_error(e: ValidationError) -> SettingsError:
    """One line naming the variable, its value and what is wrong, for the first error of ``e``."""
    first = e.errors()[0]
    loc = first["loc"]
    name = env_name(str(loc[0])) if loc else "settings"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if msg.startswith(f"{name} "):  # the validator's message already names it
        return SettingsError(msg)
    if first["type"] == "string_pattern_mismatch" and loc and loc[0] == "key_prefix":
        msg = f"{prefix_problem(str(first['input']))}: use 1 to 64 letters, digits, '_', '.' or '-'"
    if name == "REDIS_URL":
        shown = shown_url(str(first["input"]))
    elif name.endswith("API_KEY") or "PASSWORD" in name or "SECRET" in name:
        shown = "(value not shown)"
    else:
        shown = repr(first["input"])
    return SettingsError(f"{name} {shown}: {msg}")


def prefix_problem(prefix: str) -> str:
    """What makes ``prefix`` no key prefix: its first character outside ``KEY_PREFIX_PATTERN``, or its length.

    Refused rather than escaped: with ':' one prefix's keys fall under another's SCAN patterns
    (prefix ``hp``'s page-cache pattern ``hp:v:*:{u:*}:page`` matches prefix ``hp:v``'s pages,
    whatever is escaped), '{' or '}' would move the prefix's hash tags to another Redis Cluster slot, and
    '*', '?', '[' and '\\' are SCAN glob characters.
    """
    bad = next((c for c in prefix if not re.fullmatch(r"[A-Za-z0-9_.-]", c)), None)
    if bad is not None:
        return f"{bad!r} is not allowed"
    return f"{len(prefix)} characters" if prefix else "empty"


OTHER_VARIABLES = frozenset({"HOMEPAGE_SPARK_DRIVER_MEMORY", "HOMEPAGE_SPARK_WORKDIR", "HOMEPAGE_TEST_REDIS_SERVER"})


def variables_of(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (upper case; its aliases included)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    out = set()
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            out |= {str(c).upper() for c in choices}
        else:
            out.add(str(alias).upper() if isinstance(alias, str) else prefix + name.upper())
    return out


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``HOMEPAGE_*`` variable no setting reads (a misspelt one is otherwise silently ignored)."""
    import difflib

    from homepage.log_setup import LogSettings

    known = variables_of(Settings) | variables_of(LogSettings) | OTHER_VARIABLES
    ours = sorted(n for n in environ if n.upper().startswith("HOMEPAGE_") and n.upper() not in known)
    if not ours:
        return []
    from homepage.api.routes_viewer import ViewerSettings  # the API's own: imported only when needed
    from homepage.api.settings import ServeSettings

    known |= variables_of(ServeSettings) | variables_of(ViewerSettings)
    out = []
    for n in ours:
        if n.upper() in known:
            continue
        close = difflib.get_close_matches(n.upper(), sorted(known), n=1, cutoff=0.7)
        out.append(f"{n} is not a setting of this version; it is ignored" + (f" (did you mean {close[0]}?)" if close else ""))
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use; a ``SettingsError`` names a bad variable."""
    try:
        return Settings()
    except ValidationError as e:
        raise settings_error(e) from None
