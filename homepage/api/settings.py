"""API settings from the environment (``HOMEPAGE_*``), read once and cached; tests pass their own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from homepage.service import ServiceConfig


class ServeSettings(BaseSettings):
    """How the API serves: deadline, cache, security and bounds."""

    model_config = SettingsConfigDict(env_prefix="HOMEPAGE_", extra="ignore", frozen=True, populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, description="X-API-Key required by write and admin endpoints")
    dev_allow_writes: bool = Field(
        default=False,
        validation_alias=AliasChoices("HOMEPAGE_DEV", "HOMEPAGE_DEV_ALLOW_WRITES"),
        description="development only: accept writes when no API key is configured",
    )
    deadline_ms: float = Field(default=50.0, gt=0, le=60_000, description="per-request deadline of GET /homepage")
    page_cache_seconds: int = Field(default=30, ge=1, le=86_400)
    page_cache_reads: bool = Field(default=True, description="off: every request builds its page (benchmarks of the miss path)")
    policy: str | None = Field(default=None, description="page policy; default stage-wise when the bundle has a page model")
    refresh_seconds: float = Field(default=2.0, gt=0, le=3600, description="how often the active version (and Redis health) is re-read")
    world_refresh_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="how often the world state (popularity, trending counters) is re-read; a user's own events count at once regardless",
    )
    redis_timeout: float = Field(default=0.25, gt=0, le=60, description="Redis socket timeout of the API (short: a hung Redis must not hold requests)")
    models_dir: Path = Field(default=Path("var/serving-models"), description="where published bundles are unpacked")
    threads: int = Field(default=8, ge=1, le=256)
    max_body_bytes: int = Field(default=2_000_000, ge=1024, le=100_000_000)
    bench_endpoints: bool = Field(default=False, description="expose the benchmark floor endpoint")
    viewer: bool = Field(
        default=True,
        description="serve the viewer (/, /viewer/*): it lists active users and explains their pages to anyone who can reach the API",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="the API's address as clients reach it (e.g. https://api.example.com): site-relative image URLs (/artwork/...) are served absolute under it",
    )
    cors_origins: str = Field(
        default="",
        description="comma-separated web origins allowed to call the API from a browser (CORS), or '*'; empty: none",
    )
    gzip_min_bytes: int = Field(
        default=1024, ge=0, le=100_000_000, description="responses at least this large are gzipped for clients that accept it; 0: never"
    )
    clock: Literal["wall", "data"] = Field(
        default="wall",
        description="the service's time: the wall clock, or 'data': the published state's time advancing from the publish (a historical dataset)",
    )

    def cors_origin_list(self) -> list[str]:
        """The allowed origins, without blanks and trailing slashes (a browser's Origin has none)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    def service_config(self) -> ServiceConfig:
        return ServiceConfig(
            deadline_seconds=self.deadline_ms / 1000.0,
            page_cache_seconds=self.page_cache_seconds,
            cache_reads=self.page_cache_reads,
            policy=self.policy,
            refresh_seconds=self.refresh_seconds,
            world_refresh_seconds=self.world_refresh_seconds,
            models_dir=self.models_dir,
            threads=self.threads,
            clock=self.clock,
            public_url=self.public_url.rstrip("/") if self.public_url else None,
        )


@lru_cache(maxsize=1)
def get_serve_settings() -> ServeSettings:
    return ServeSettings()
