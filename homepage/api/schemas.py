"""Request and response models of the API (bounded: sizes, lengths, id charsets)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from homepage.api.echo import quoted
from homepage.domain import Event, EventKind
from homepage.ingest.ratings import RATING_MAX, RATING_MIN
from homepage.pagebuilder.features import DEVICES

MAX_ID = 2**62
ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
REGION_PATTERN = r"^[A-Za-z0-9_-]{1,16}$"
MAX_BATCH = 1000


def _digits_only(v: Any) -> Any:
    """A path id is written in decimal digits: ``/homepage/1.0`` or ``/homepage/+1`` is not user 1."""
    if isinstance(v, str) and not (v.isascii() and v.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be a whole number written in decimal digits")
    return v


_PATH_ID_SCHEMA = WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_ID})  # JSON Schema's words, not pydantic's ge/le
UserId = Annotated[int, BeforeValidator(_digits_only), Path(ge=0, le=MAX_ID, description="user id"), _PATH_ID_SCHEMA]
TitleId = Annotated[int, BeforeValidator(_digits_only), Path(ge=0, le=MAX_ID, description="title id"), _PATH_ID_SCHEMA]
StrictId = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
"""An id in a JSON body: a JSON integer (``true``, ``"1500"`` and ``1500.0`` are refused, not read as ids)."""


def _known_device(v: str) -> str:
    if v not in DEVICES:
        expected = ", ".join(repr(d) for d in DEVICES)
        raise PydanticCustomError("enum", "Input should be one of {expected}, not {got}", {"expected": expected, "got": quoted(v, 32)})
    return v


Device = Annotated[str, AfterValidator(_known_device), WithJsonSchema({"type": "string", "enum": list(DEVICES)})]
"""A client device the page model knows (``DEVICES``): a closed set, so another value is a 422 listing it.

Served silently as "no device", a client sending ``TV`` or ``phone`` would believe its pages
were tuned for it. Region, by contrast, is data: an unknown one is a note (``routes_pages``).
"""


class Reason(BaseModel):
    kind: str
    anchor_title_id: int | None = None
    genre: str | None = None
    region: str | None = None


class TitleCard(BaseModel):
    title_id: int
    name: str
    year: int | None = None
    variant_id: str | None = Field(default=None, description="artwork variant shown")
    image_url: str | None = None
    score: float | None = None
    propensity: float | None = Field(default=None, description="probability the artwork selector chose this variant")


class Row(BaseModel):
    row_id: str
    ranker: str
    display_title: str
    reason: Reason
    score: float | None = None
    titles: list[TitleCard]
    stage: int | None = Field(default=None, description="explain: the page-building stage that placed the row (0 = first)")
    forced_by: str | None = Field(default=None, description="explain: the rule that placed the row regardless of its score, if any")
    features: dict[str, float | None] | None = Field(default=None, description="explain: the page model's features of the row at its stage")


class PageQuery(BaseModel):
    """The query parameters of ``GET /homepage/{user_id}``, validated in one pass (``routes_pages.page_params``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    rows: int | None = Field(default=None, ge=1, le=50, description="rows on the page; default: the published bundle's page.rows (10 unless configured)")
    cols: int | None = Field(default=None, ge=1, le=50, description="titles per row; default: the published bundle's page.cols (10 unless configured)")
    device: Device | None = Field(default=None, description=f"client device ({', '.join(DEVICES)}): a page-model feature; another value is a 422")
    region: str | None = Field(
        default=None, pattern=REGION_PATTERN, description="region for regional rows and the fallback page; one without regional data is served with a note saying so"
    )
    explain: bool = Field(default=False, description="per row: stage, features, score, the rule that forced it")


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` entries for a query model's fields (for routes that parse their query themselves)."""
    props = model.model_json_schema()["properties"]
    return [
        {"name": name, "in": "query", "required": False, "schema": _not_null(schema), **({"description": schema["description"]} if "description" in schema else {})}
        for name, schema in props.items()
    ]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as ``X``: a query parameter is left out, never null (``anyOf`` with null hides X's bounds from client generators)."""
    kinds = [k for k in schema.get("anyOf", []) if k != {"type": "null"}]
    if len(kinds) != 1 or len(schema["anyOf"]) != 2:
        return schema
    return {**{k: v for k, v in schema.items() if k not in ("anyOf", "default")}, **kinds[0]}


class PageRequestEcho(BaseModel):
    rows: int
    cols: int
    device: str | None = None
    region: str | None = None
    hour: int
    now: int = Field(description="request time (Unix seconds) the page was built for")


class PageOut(BaseModel):
    """A homepage."""

    page_id: str
    user_id: int
    model_version: str | None
    store_version: str | None
    config_hash: str | None
    policy: str
    generated_at: float
    world_as_of: int | None = Field(description="time of the world state (trending counters) used")
    degraded: bool = Field(description="true for the fallback page (Redis or the model did not answer in time)")
    request: PageRequestEcho
    rows: list[Row]
    notes: list[str]


class EventIn(BaseModel):
    """One event. A play from a served page names where it was: the page's ``page_id`` and, of the title
    as served, its row (``row_id``, ``row_index``), column (``col_index``), artwork (``variant_id``) and
    ``propensity``; the served-page log credits the play to that slot (a play whose indices are not the
    slot's, e.g. counted from 1 or after the client re-ordered rows, is not credited: leave them out then).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: StrictId
    title_id: StrictId
    kind: EventKind
    ts: int | None = Field(
        default=None, strict=True, ge=0, le=2**40, description="when it happened, Unix time in seconds (not milliseconds); default: the server's time"
    )
    watch_seconds: float | None = Field(default=None, strict=True, ge=0, le=10**6)
    progress: float | None = Field(default=None, strict=True, ge=0.0, le=1.0, description="share of the title watched, 0 to 1")
    stars: float | None = Field(
        default=None, strict=True, ge=RATING_MIN, le=RATING_MAX, validate_default=True, description="required for a rating; the range ingest accepts"
    )
    page_id: str | None = Field(default=None, max_length=64, pattern=ID_PATTERN, description="the served page's page_id")
    row_id: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$", description="rows[i].row_id of that page")
    row_index: int | None = Field(
        default=None, strict=True, ge=0, le=1000, description="i: the row's 0-based position in the page's rows, as served"
    )
    col_index: int | None = Field(
        default=None, strict=True, ge=0, le=1000, description="j: the title's 0-based position in rows[i].titles, as served"
    )
    variant_id: str | None = Field(default=None, max_length=128, pattern=ID_PATTERN, description="rows[i].titles[j].variant_id: the artwork shown")
    propensity: float | None = Field(
        default=None, strict=True, gt=0.0, le=1.0, description="rows[i].titles[j].propensity as served (leave it out where it was null)"
    )
    idempotency_key: str | None = Field(
        default=None, min_length=8, max_length=128, pattern=ID_PATTERN,
        description="drawn by the client once per event (e.g. a UUID): a retry with the same key and event within the server's "
        "idempotency window (24 h by default) is a duplicate, accepted and not counted again; the same key with another event: 422",
    )

    @field_validator("ts", mode="before")
    @classmethod
    def _seconds_not_milliseconds(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v > 2**40:
            raise PydanticCustomError("ts_unit", "must be Unix time in seconds; {value} is too large for that (milliseconds?)", {"value": v})
        return v

    @field_validator("stars")
    @classmethod
    def _rating_has_stars(cls, v: float | None, info: ValidationInfo) -> float | None:
        # a field validator (not a model validator) so the error's loc is ``stars``
        if v is None and info.data.get("kind") == EventKind.RATING:
            raise PydanticCustomError("missing", "Field required for a rating event")
        return v

    def to_event(self, now: int) -> Event:
        data = self.model_dump(exclude={"idempotency_key"}, exclude_none=True)
        data.setdefault("ts", now)
        return Event(**data)


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]

    @field_validator("events", mode="before")
    @classmethod
    def _at_most_max_batch(cls, v: Any) -> Any:
        # before the items: an oversized batch is one error, not one more per bad event
        if isinstance(v, list) and len(v) > MAX_BATCH:
            raise PydanticCustomError("too_long", f"at most {MAX_BATCH:,} events in a batch, not {len(v):,}")
        return v


def _event_or_batch(value: Any, handler: ValidatorFunctionWrapHandler) -> EventIn | EventBatch:
    """Validate the body as the one shape its keys name, so errors are that shape's alone.

    Validated as a plain union, every error came twice (once per shape, with pydantic's
    ``function-after[...]``/class names in the loc); pydantic's tagged unions would put the
    tag in the loc instead. A ``ValidationError`` raised here keeps the model's own locs.
    """
    model = EventBatch if isinstance(value, dict) and "events" in value else EventIn
    return model.model_validate(value, from_attributes=True)  # as FastAPI validates bodies: the same messages


EventsBody = Annotated[EventIn | EventBatch, WrapValidator(_event_or_batch)]
"""``POST /events``: one event or ``{"events": [...]}`` (the OpenAPI schema stays the union)."""


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events applied now")
    duplicates: int = Field(description="events skipped: their idempotency key was already applied with the same event")


class ProfileIn(BaseModel):
    """A profile. ``PUT`` replaces it (an omitted field is cleared); ``PATCH`` changes only the fields sent."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(
        default=None, pattern=REGION_PATTERN, description="regional rows (a degraded page takes only the request's region parameter)"
    )
    # letters of any script (\w is Unicode here): a catalog's "Ciência-Ficção" or "アニメ" was refused by
    # an ASCII pattern; the route then checks the name against the catalog's genres
    favourite_genres: list[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w '&()./-]+$")]] = Field(
        default_factory=list,
        max_length=20,
        description="catalog genre names, at most 20 entries as sent (repeats are then dropped); a new user's genre rows, and the artwork chosen for the user",
    )

    @field_validator("favourite_genres")
    @classmethod
    def _drop_repeats(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class ProfileOut(ProfileIn):
    user_id: int


class TitleOut(BaseModel):
    title_id: int
    name: str
    year: int | None = None
    genres: list[str]
    cast: list[str]
    director: list[str]
    maturity: str | None = None
    variants: list[TitleCard]


class SimilarOut(BaseModel):
    title_id: int
    similar: list[TitleCard]


class Deleted(BaseModel):
    user_id: int
    deleted: int = Field(description="keys and stream entries erased")


class Reloaded(BaseModel):
    store_version: str | None
    model_version: str | None
    ok: bool
    error: str | None = None


class Health(BaseModel):
    status: str
    store_version: str | None = None
    model_version: str | None = None
    error: str | None = None


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    field: str
    message: str


class InvalidOut(BaseModel):
    """422: the request does not validate; ``detail`` names the field(s)."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list, description="the first 20 errors")
    errors_omitted: int | None = Field(default=None, description="errors beyond the first 20, when there are more")


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": InvalidOut}}
