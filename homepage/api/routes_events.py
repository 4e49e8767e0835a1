"""Write endpoints: events (acknowledged only once Redis has them) and user profiles."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, HTTPException, Request
from fastapi.exceptions import RequestValidationError

from homepage.api import app_state
from homepage.api.schemas import (
    COMMON_RESPONSES,
    ErrorOut,
    EventBatch,
    EventIn,
    EventsAccepted,
    EventsBody,
    ProfileIn,
    ProfileOut,
    UserId,
)
from homepage.api.security import protected_router
from homepage.domain import Event
from homepage.service import PageService
from homepage.store import (
    IdempotencyConflict,
    StoreError,
    StoreUnavailable,
    event_digest,
)

router = protected_router(responses=COMMON_RESPONSES)
MAX_FUTURE_SECONDS = 86_400  # client clocks drift (such an event is taken as the server's time); from further ahead it is a bug
WRITE_ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 413: {"model": ErrorOut}, 503: {"model": ErrorOut}}
BODY_ERRORS = {**WRITE_ERRORS, 415: {"model": ErrorOut}}  # a body sent as anything but JSON (``KeyFirstRoute``)



@router.post("/events", status_code=202, response_model=EventsAccepted, responses=BODY_ERRORS)
async def post_events(request: Request, body: Annotated[EventsBody, Body()]) -> EventsAccepted:
    """One event or a batch of up to 1,000. 202 only after Redis applied them (user state, stream, counters), each exactly once.

    A retry with the same ``idempotency_key`` and the same event counts as a duplicate; the key
    with a different event is a 422 naming it, and nothing of the batch is written, unless a
    concurrent request took the key between the batch's check and its write: then the batch's
    events of other users were applied, and the message says how many (resend only the refused).
    Events of titles the served catalog lacks are accepted, as ingest keeps such ratings: the
    store leaves them out of the counters, and another node may already serve a newer catalog.
    """
    items = body.events if isinstance(body, EventBatch) else [body]
    service = app_state.service(request)
    cur = service.loaded
    if cur is None:  # nor a clock, on the data clock
        service.metrics.events_rejected.inc(len(items))
        raise StoreUnavailable("no model loaded yet")
    now = service.now(cur)  # the wall clock, or the published data's time (HOMEPAGE_CLOCK=data)
    events = [e.to_event(now) for e in items]
    for i, e in enumerate(events):
        if e.ts > now + MAX_FUTURE_SECONDS:
            loc = ("body", "events", i, "ts") if isinstance(body, EventBatch) else ("body", "ts")
            msg = f"{e.ts} is more than a day after the server's time ({now})"
            raise RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error", "input": e.ts}])
    # a client clock running fast: the event happened now. Stored as sent, it would stay out of the
    # user's pages (state as of now) until the server's clock passed it, and over-count in trending
    events = [e if e.ts <= now else e.model_copy(update={"ts": now}) for e in events]
    try:
        n = await service.run(_ingest_as_sent, service, events, items, cur.store_version)
    except IdempotencyConflict as e:  # counted by the service: not an outage
        raise _reused(e, isinstance(body, EventBatch)) from None
    except (StoreUnavailable, StoreError) as e:
        service.metrics.events_rejected.inc(len(events))
        raise StoreUnavailable(str(e)) from e
    return EventsAccepted(accepted=n, duplicates=len(events) - n)


def _ingest_as_sent(service: PageService, events: list[Event], items: list[EventIn], version: str) -> int:
    """``service.ingest`` with each keyed event's digest as sent; in the thread pool (1,000 digests take ~7 ms)."""
    return service.ingest(events, [e.idempotency_key for e in items], version, [_sent_digest(e) for e in items])


def _sent_digest(item: EventIn) -> str | None:
    """The digest stored under the event's idempotency key: of the event as the client sent it.

    As sent, not as stamped: an event without ``ts`` gets the server's time, and its retry (a
    moment later, also without ``ts``) must still be the same event, a duplicate. The same event
    sent once with ``ts`` and once without is two different requests. Nulls are left out of the
    digest, so a field added to ``EventIn`` later must default to None, or a retry that straddles
    the deploy stops matching its first attempt.
    """
    if item.idempotency_key is None:
        return None
    return event_digest(item.model_dump(mode="json", exclude={"idempotency_key"}))


def _reused(e: IdempotencyConflict, batch: bool) -> RequestValidationError:
    """422 naming each event's ``idempotency_key`` that the user already sent with a different event.

    422, not 409, as the IETF Idempotency-Key draft says for a key reused with another payload
    (409 there is a request still in progress); and it is the shape of every other bad field.
    """
    note = f" (a concurrent request took it; the batch's {e.applied} events of other users were applied)" if e.applied else ""
    msg = "already used for a different event: a retry must resend the same event, a new event needs a new key" + note
    return RequestValidationError(
        [{"loc": ("body", "events", i, "idempotency_key") if batch else ("body", "idempotency_key"), "msg": msg, "type": "value_error"} for i in e.indices]
    )


def _check_genres(service: PageService, profile: ProfileIn) -> None:
    """422 naming every favourite genre the served catalog lacks, with the genres it has.

    Genres are matched as the catalog spells them; a client has no other way to learn them
    (a user's "comedy" for the catalog's "Comedy" is offered back).
    """
    cur = service.loaded
    if cur is None or "favourite_genres" not in profile.model_fields_set:
        return
    genres = cur.models.catalog.genres
    bad = [(i, g) for i, g in enumerate(profile.favourite_genres) if g not in set(genres)]
    if bad:
        raise RequestValidationError(
            [{"loc": ("body", "favourite_genres", i), "msg": _unknown_genre(g, genres), "type": "value_error", "input": g} for i, g in bad]
        )


def _unknown_genre(genre: str, genres: tuple[str, ...]) -> str:
    """``unknown genre 'comedy' (did you mean 'Comedy'?); the catalog's genres: 'Action', ...``."""
    folded = {g.casefold(): g for g in genres}
    hint = f" (did you mean {folded[genre.casefold()]!r}?)" if genre.casefold() in folded else ""
    return f"unknown genre {genre!r}{hint}; the catalog's genres: {', '.join(repr(g) for g in genres) or 'none'}"


@router.put("/users/{user_id}", response_model=ProfileOut, responses=BODY_ERRORS)
async def put_user(request: Request, user_id: UserId, profile: ProfileIn) -> ProfileOut:
    """Replace a profile (region, favourite genres): a field left out is cleared. ``PATCH`` changes only the fields sent."""
    service = app_state.service(request)
    _check_genres(service, profile)
    await service.run(service.set_profile, user_id, profile.region, profile.favourite_genres)
    return ProfileOut(user_id=user_id, **profile.model_dump())


@router.patch("/users/{user_id}", response_model=ProfileOut, responses=BODY_ERRORS)
async def patch_user(request: Request, user_id: UserId, profile: ProfileIn) -> ProfileOut:
    """Change only the profile fields sent (``"region": null`` clears the region); returns the whole profile."""
    service = app_state.service(request)
    _check_genres(service, profile)
    changes = profile.model_dump(include=profile.model_fields_set)
    if changes:
        await service.run(service.patch_profile, user_id, changes)
    return await get_user(request, user_id)


@router.get("/users/{user_id}", response_model=ProfileOut, responses={**WRITE_ERRORS, 404: {"model": ErrorOut}})
async def get_user(request: Request, user_id: UserId) -> ProfileOut:
    """A user's profile as served (published with the dataset, or set through ``PUT``/``PATCH``); 404 when there is none."""
    service = app_state.service(request)
    return _profile_out(user_id, await service.run(service.get_profile, user_id))


def _profile_out(user_id: int, got: tuple[str | None, tuple[str, ...]] | None) -> ProfileOut:
    if got is None:
        raise HTTPException(404, f"user_id: no profile for user {user_id}")
    return ProfileOut(user_id=user_id, region=got[0], favourite_genres=list(got[1]))
