"""The pipeline configuration: which rankers run and the defaults shared by train, replay and serve."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from homepage.errors import HomepageError
from rankers.registry import RankerSpec

DEFAULT_RANKERS: tuple[RankerSpec, ...] = (
    RankerSpec(name="continue_watching"),
    RankerSpec(name="personalized"),
    RankerSpec(name="top_n"),
    RankerSpec(name="trending"),
    RankerSpec(name="video_to_video"),
)


class PipelineConfig(BaseModel):
    """Everything that must agree between offline training, replay and the API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rankers: tuple[RankerSpec, ...] = DEFAULT_RANKERS
    split_quantile: float = Field(default=0.8, gt=0.0, lt=1.0, description="default train/test split")
    trending_half_life_days: float = Field(default=7.0, gt=0.0, le=3650.0)

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def half_life_seconds(self) -> float:
        return self.trending_half_life_days * 86_400.0


def load_config(path: Path | None) -> PipelineConfig:
    """Read a JSON config file; the default config when ``path`` is None."""
    if path is None:
        return PipelineConfig()
    try:
        return PipelineConfig.model_validate_json(Path(path).read_text())
    except FileNotFoundError as e:
        raise HomepageError(f"{path}: config file not found") from e
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise HomepageError(f"{path}: {field}: {first['msg']}") from e
