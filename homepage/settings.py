"""Runtime settings from the environment (``REDIS_URL``, ``HOMEPAGE_*``), read once and cached.

Tests and the API override them the FastAPI way: ``get_settings.cache_clear()`` after
changing the environment, or a dependency override that returns another ``Settings``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://")


class Settings(BaseSettings):
    """Where Redis is and how the store uses it."""

    model_config = SettingsConfigDict(
        env_prefix="HOMEPAGE_", extra="ignore", frozen=True, populate_by_name=True
    )

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "HOMEPAGE_REDIS_URL"),
        description=(
            "redis://host:port/db (one server), redis+cluster://host:port[,host:port...] (Redis Cluster);"
            " unset means the embedded Redis in ``embedded_dir``"
        ),
    )
    key_prefix: str = Field(default="hp", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="namespace of every key")
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
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1, description="how long an idempotency key is remembered")
    active_cache_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="how long a store trusts its cached active-version pointer"
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(REDIS_SCHEMES):
            raise ValueError(f"REDIS_URL {url!r}: use one of {', '.join(REDIS_SCHEMES)}")
        return url

    @property
    def redis_cluster(self) -> bool:
        """True when ``redis_url`` names a Redis Cluster."""
        return bool(self.redis_url and self.redis_url.startswith("redis+cluster://"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
