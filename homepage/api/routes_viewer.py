"""The homepage viewer: a web page to see, explain and compare pages, and placeholder artwork.

``GET /`` serves a static page (``static/viewer.html``, plain JS, no build step) that reads:

- ``GET /viewer/config``: policies this bundle can build, the default one, and whether
  click-to-play is on (development mode only: ``HOMEPAGE_DEV=1`` with no API key);
- ``GET /viewer/users``: sample users (heavy, light, cold-start) from the published state;
- ``GET /viewer/page/{user}?policy=``: the page for a policy, built by the same
  ``build_page`` on the same Redis state as ``GET /homepage``, always with explain data and
  the page model's top feature contributions per row. Viewer pages are neither cached nor
  logged as served pages: looking at a page in the viewer is not an impression.

Its posters come from ``routes_artwork``, which is served with the viewer off too.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from homepage.api import app_state
from homepage.api.echo import quoted
from homepage.api.schemas import (
    COMMON_RESPONSES,
    REGION_PATTERN,
    Device,
    ErrorOut,
    PageOut,
    UserId,
)
from homepage.api.settings import ServeSettings
from homepage.domain import RequestContext
from homepage.errors import HomepageError
from homepage.page import build_page
from homepage.page_json import dumps, page_json
from homepage.pagebuilder.features import DEVICES, FEATURE_NAMES
from homepage.pagebuilder.model import PageModel
from homepage.pagebuilder.policies import policy as get_policy
from homepage.pagebuilder.policies import policy_names
from homepage.service import Loaded, PageParams, PageService, region_note

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"viewer.js": "text/javascript", "viewer.css": "text/css", "favicon.svg": "image/svg+xml"}  # the icon: else the browser asks /favicon.ico, a 404 in the console
COLD_START_BASE = 1_000_000_000  # cold-start samples are the first ids from here with no history
HTML_CSP = "default-src 'self'; img-src 'self'{extra}; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'"
TOP_FEATURES = 3

router = APIRouter(responses=COMMON_RESPONSES, tags=["viewer"])


class ViewerSettings(BaseSettings):
    """Viewer options from the environment (``HOMEPAGE_VIEWER_*``); tests set ``app.state.viewer_settings``."""

    model_config = SettingsConfigDict(env_prefix="HOMEPAGE_VIEWER_", extra="ignore", frozen=True)

    external_images: bool = Field(default=False, description="show a variant's absolute http(s) image URL instead of the placeholder")
    sample_size: int = Field(default=200, ge=10, le=5000, description="users sampled to pick the heavy and light examples")


@lru_cache(maxsize=1)
def _env_viewer_settings() -> ViewerSettings:
    return ViewerSettings()


def viewer_settings(request: Request) -> ViewerSettings:
    return getattr(request.app.state, "viewer_settings", None) or _env_viewer_settings()


class ViewerConfig(BaseModel):
    play_enabled: bool = Field(description="clicking a card records a play (development mode with no API key)")
    external_images: bool
    policies: list[str] = Field(description="policies the loaded bundle can build")
    default_policy: str
    model_version: str | None
    store_version: str | None


class SampleUser(BaseModel):
    label: str = Field(description="heavy, light or cold-start")
    user_id: int
    events: int = Field(description="events in the user's history")


class SampleUsers(BaseModel):
    samples: list[SampleUser]


class FeatureContribution(BaseModel):
    name: str
    value: float | None
    category: str | None = Field(default=None, description="the name behind a categorical feature's code (ranker, reason kind, device)")
    contribution: float


class ViewerPageOut(PageOut):
    """A page as ``GET /homepage`` returns it with ``explain``, plus per row the model's top feature contributions."""

    top_features: list[list[FeatureContribution]] | None = Field(description="per row; null when the policy uses no model")




def available_policies(cur: Loaded) -> list[str]:
    """Registered policies the loaded bundle can build (those needing a page model only when it has one)."""
    out = []
    for name in policy_names():
        try:
            spec = get_policy(name)
        except HomepageError:
            continue
        if not spec.needs_model or cur.models.page_model is not None:
            out.append(name)
    return out


# ------------------------------------------------------------------ the page and its assets
@router.get("/", include_in_schema=False)
async def viewer(request: Request) -> FileResponse:
    """The viewer page."""
    extra = " https:" if viewer_settings(request).external_images else ""
    return FileResponse(STATIC / "viewer.html", media_type="text/html", headers={"Content-Security-Policy": HTML_CSP.format(extra=extra)})


@router.get("/viewer/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "Not Found")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


def play_enabled(serve: ServeSettings) -> bool:
    """Click-to-play records plays through ``POST /events`` without a key: development mode with no key only."""
    return bool(serve.dev_allow_writes and (serve.api_key is None or not serve.api_key.get_secret_value()))


@router.get("/viewer/config", response_model=ViewerConfig, responses={503: {"model": ErrorOut}})
async def config(request: Request) -> ViewerConfig:
    """What the viewer may do here: policies, default policy, click-to-play, external images."""
    cur = app_state.loaded(request)
    return ViewerConfig(
        play_enabled=play_enabled(request.app.state.settings),
        external_images=viewer_settings(request).external_images,
        policies=available_policies(cur),
        default_policy=cur.policy,
        model_version=cur.models.version,
        store_version=cur.store_version,
    )


# ------------------------------------------------------------------ sample users
def pick_samples(history_lengths: dict[int, int]) -> list[tuple[str, int, int]]:
    """(label, user, events) for the heaviest and the lightest user with any history (ties: lowest id)."""
    active = sorted((n, u) for u, n in history_lengths.items() if n > 0)
    if not active:
        return []
    heavy = max(active, key=lambda nu: (nu[0], -nu[1]))
    light = active[0]
    out = [("heavy", heavy[1], heavy[0])]
    if light[1] != heavy[1]:
        out.append(("light", light[1], light[0]))
    return out


def _active_samples(service: PageService, cur: Loaded, size: int) -> list[SampleUser]:
    """Heavy and light users from a random sample of the version's active users."""
    store, v, cat = service.store, cur.store_version, cur.models.catalog
    now = service.now(cur)
    ids = store.sample_users(size, v)
    lengths = {u: len(store.read_user_state(u, now, cat, v)) for u in ids}
    return [SampleUser(label=label, user_id=u, events=n) for label, u, n in pick_samples(lengths)]


def _cold_user(service: PageService, cur: Loaded) -> SampleUser:
    """The first id from ``COLD_START_BASE`` with no history (a click in the viewer makes a user warm)."""
    now = service.now(cur)
    for u in range(COLD_START_BASE, COLD_START_BASE + 100):
        if not len(service.store.read_user_state(u, now, cur.models.catalog, cur.store_version)):
            return SampleUser(label="cold-start", user_id=u, events=0)
    raise HTTPException(409, f"no user without history in {COLD_START_BASE}..{COLD_START_BASE + 99}")


@router.get("/viewer/users", response_model=SampleUsers, responses={503: {"model": ErrorOut}})
async def users(request: Request) -> SampleUsers:
    """Sample users: the heaviest and lightest of a random sample of active users, and a user with no history."""
    cur = app_state.loaded(request)
    service = app_state.service(request)
    cached: tuple[str, list[SampleUser]] | None = getattr(request.app.state, "viewer_samples", None)
    if cached is not None and cached[0] == cur.store_version:
        active = cached[1]
    else:
        active = await service.run(_active_samples, service, cur, viewer_settings(request).sample_size)
        request.app.state.viewer_samples = (cur.store_version, active)
    cold = await service.run(_cold_user, service, cur)
    return SampleUsers(samples=[*active, cold])


# ------------------------------------------------------------------ pages for a policy
def top_contributions(model: PageModel, features: list[dict[str, float | None] | None], k: int = TOP_FEATURES) -> list[list[FeatureContribution]]:
    """Per row, the ``k`` features with the largest absolute contribution (LightGBM's SHAP values) to its score."""
    X = np.array([[np.nan if f is None or f.get(n) is None else f[n] for n in FEATURE_NAMES] for f in features], dtype=np.float64)
    X = X.reshape(len(features), len(FEATURE_NAMES))
    if len(X) == 0:
        return []
    contrib = np.asarray(model.booster.predict(X[:, model.columns], pred_contrib=True, num_threads=1))[:, :-1]
    vocab = {"ranker": model.ranker_vocab, "reason_kind": model.kind_vocab, "device": DEVICES}
    out = []
    for i in range(len(X)):
        order = np.argsort(-np.abs(contrib[i]), kind="stable")[:k]
        row = []
        for j in order:
            name, x = model.features[j], X[i, model.columns[j]]
            value = None if np.isnan(x) else float(x)
            row.append(FeatureContribution(name=name, value=value, category=_category(vocab.get(name), value), contribution=round(float(contrib[i, j]), 6)))
        out.append(row)
    return out


def _category(vocab: tuple[str, ...] | None, code: float | None) -> str | None:
    if vocab is None or code is None or not 0 <= code < len(vocab) or code != int(code):
        return None
    return vocab[int(code)]


def _policy_page(service: PageService, cur: Loaded, user_id: int, policy: str, ctx: RequestContext) -> bytes:
    """Build the page for ``policy`` from the user's Redis state: no cache, no served log."""
    user = service.store.read_user_state(user_id, ctx.now, cur.models.catalog, cur.store_version)
    page = build_page(user, cur.world, cur.models, ctx, policy=policy, explain=True, nonce=secrets.token_hex(4))
    request = {"rows": ctx.rows, "cols": ctx.cols, "device": ctx.device, "region": ctx.region, "hour": ctx.hour, "now": ctx.now}
    body = page_json(page, cur.cards, store_version=cur.store_version, world_as_of=cur.world.as_of, request=request)
    if ctx.region is not None and (note := region_note(cur.world, ctx.region)):
        body["notes"] = [*body["notes"], note]
    model = cur.models.page_model
    uses_model = model is not None and (get_policy(policy).needs_model or policy == "row-ranking")
    if uses_model and model is not None:
        top = top_contributions(model, [r.features for r in page.rows])
        body["top_features"] = [[c.model_dump() for c in row] for row in top]
    else:
        body["top_features"] = None
    return dumps(body)


@router.get("/viewer/page/{user_id}", response_model=ViewerPageOut, responses={503: {"model": ErrorOut}})
async def policy_page(
    request: Request,
    user_id: UserId,
    policy: str | None = None,
    rows: Annotated[int | None, Query(ge=1, le=50)] = None,
    cols: Annotated[int | None, Query(ge=1, le=50)] = None,
    device: Annotated[Device | None, Query()] = None,
    region: Annotated[str | None, Query(pattern=REGION_PATTERN)] = None,
) -> Response:
    """The user's page under ``policy`` (default: the service's), with explain data; for the viewer's compare view."""
    cur = app_state.loaded(request)
    name = policy or cur.policy
    known = available_policies(cur)
    if name not in known:
        raise HTTPException(422, f"policy: {quoted(name)} is not one of {', '.join(known)}")
    service = app_state.service(request)
    if not service.published:  # the loaded version's keys are gone: a page would hold no history
        raise HTTPException(503, "the loaded version is not in Redis (restarted empty?): publish again", headers={"Retry-After": "1"})
    now = service.now(cur)
    shape = PageParams(rows, cols).shaped(cur.models)  # the bundle's page shape unless asked otherwise, as GET /homepage
    ctx = RequestContext(user_id, now, shape.rows, shape.cols, device, (now // 3600) % 24, region)
    body = await service.run(_policy_page, service, cur, user_id, name, ctx)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})
