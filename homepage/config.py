"""The pipeline configuration: which rankers run and the defaults shared by train, replay and serve."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from homepage.errors import HomepageError
from homepage.pagebuilder.rules import PageRules
from rankers.registry import RankerSpec

# A homepage is chosen from 20 to 60 candidate rows: enough overlap between rows that
# what is placed above matters, which is what the stage-wise page builder exploits.
DEFAULT_RANKERS: tuple[RankerSpec, ...] = (
    RankerSpec(name="continue_watching", config={"max_rows": 1}),
    # "More picks" rows continue the personal list (backtest on ml-latest-small: see README, Page builder)
    RankerSpec(name="personalized", config={"max_rows": 10, "more_picks": 4}),
    RankerSpec(name="top_n", config={"max_rows": 2}),
    RankerSpec(name="trending", config={"max_rows": 2}),
    RankerSpec(name="video_to_video", config={"max_rows": 8}),
)


class PageConfig(BaseModel):
    """The page shape, its business rules, and how the page model is trained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int = Field(default=10, ge=1, le=100)
    cols: int = Field(default=10, ge=1, le=100)
    rules: PageRules = Field(default_factory=PageRules)
    train_model: bool = Field(default=True, description="train the stage-wise LightGBM page model in `homepage train`")
    inner_quantile: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="rankers for page-model training data are fitted up to this quantile of the training window"
    )
    requests_per_user: int = Field(default=30, ge=1, le=1000)
    max_requests: int = Field(default=6000, ge=10)
    num_rounds: int = Field(default=400, ge=1, le=10_000)
    dagger_rounds: int = Field(
        default=0, ge=0, le=5, description="extra training rounds on stage contexts that follow the model's own choices (DAgger); 0: validation on ml-latest-small did not support it"
    )


class PipelineConfig(BaseModel):
    """Everything that must agree between offline training, replay and the API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rankers: tuple[RankerSpec, ...] = DEFAULT_RANKERS
    split_quantile: float = Field(default=0.8, gt=0.0, lt=1.0, description="default train/test split")
    trending_half_life_days: float = Field(default=7.0, gt=0.0, le=3650.0)
    page: PageConfig = Field(default_factory=PageConfig)
    artwork_epsilon: float = Field(default=0.05, ge=0.0, le=1.0, description="share of artwork choices explored")
    artwork_stable_days: float = Field(default=7.0, gt=0.0, le=365.0, description="a user keeps a title's artwork this long")

    @model_validator(mode="after")
    def _rules_name_configured_rankers(self, info: ValidationInfo) -> PipelineConfig:
        try:  # a bundle's stored config (context {"stored": True}) keeps loading as it was trained
            self.page.rules.check({r.name for r in self.rankers}, stored=bool((info.context or {}).get("stored")))
        except HomepageError as e:
            # a config listing its own rankers keeps the default rules unless it gives some (page.rules.rules: a
            # page.rules giving only the viewport keeps them too): say whose rule it is
            default = "rules" not in self.page.rules.model_fields_set
            hint = "; that is a default rule: keep the rankers `homepage config show` lists, or give page.rules.rules of your own" if default else ""
            raise ValueError(f"page.{e}{hint}") from e
        return self

    def config_hash(self) -> str:
        return self.hash_of(self.model_dump(mode="json"))

    @staticmethod
    def hash_of(config: dict[str, Any]) -> str:
        """The hash of a config as JSON; bundles check it against the config as they stored it."""
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def half_life_seconds(self) -> float:
        return self.trending_half_life_days * 86_400.0


def load_config(path: Path | None) -> PipelineConfig:
    """Read a JSON config file; the default config when ``path`` is None.

    Every way the file can be wrong (missing, a directory, not UTF-8, not JSON, a field out
    of range, a ranker that is not registered or a ranker config it rejects) is a
    ``HomepageError`` naming the file, and the line for bad JSON.
    """
    if path is None:
        return PipelineConfig()
    path = Path(path)
    if path.is_dir():
        raise HomepageError(f"{path}: is a directory, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise HomepageError(f"{path}: config file not found") from e
    except UnicodeDecodeError as e:
        raise HomepageError(f"{path}: not a JSON config: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise HomepageError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    if not text.strip():  # `homepage config show --config F > F`: the shell empties F before the command reads it
        raise HomepageError(f"{path}: the config file is empty (a command's output redirected onto it, `> {path.name}`, empties it first)")
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise HomepageError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from e
    try:
        config = PipelineConfig.model_validate_json(text)
    except ValidationError as e:
        raise HomepageError(f"{path}: {_first_error(e)}") from e
    _check_ranker_configs(config, path)
    return config


def _first_error(e: ValidationError, prefix: str = "") -> str:
    """``field.path: message`` of a validation error's first error (the message alone for the whole document)."""
    first = e.errors()[0]
    field = prefix + ".".join(str(p) for p in first["loc"])
    if not first["loc"] and first["type"] in ("model_type", "dict_type"):
        return "not a JSON object" if not prefix else f"{prefix.rstrip('.')}: not a JSON object"
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{field.rstrip('.')}: {msg}" if field else msg


def _check_ranker_configs(config: PipelineConfig, path: Path) -> None:
    """Fail on a ranker that is not registered or whose config its class rejects, naming the file (not at train time)."""
    from rankers.registry import ranker_class

    for i, spec in enumerate(config.rankers):
        try:
            cls = ranker_class(spec.name)
        except HomepageError as e:
            raise HomepageError(f"{path}: rankers.{i}.name: {e}") from e
        try:
            cls.Config.model_validate(spec.config)
        except ValidationError as e:
            raise HomepageError(f"{path}: {_first_error(e, f'rankers.{i}.config.')}") from e
