"""Admin endpoints: erase a user (privacy) and reload the active model version."""

from __future__ import annotations

from fastapi import Request

from homepage.api import app_state
from homepage.api.schemas import COMMON_RESPONSES, Deleted, ErrorOut, Reloaded, UserId
from homepage.api.security import protected_router

router = protected_router(responses=COMMON_RESPONSES)
ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 503: {"model": ErrorOut}}



@router.delete("/users/{user_id}", response_model=Deleted, responses=ERRORS)
async def delete_user(request: Request, user_id: UserId) -> Deleted:
    """Erase every key and stream entry of the user, in every version, and their own weights in the model bundles."""
    service = app_state.service(request)
    n = await service.run_admin(service.erase_user, user_id)
    return Deleted(user_id=user_id, deleted=n)


@router.post("/admin/reload", response_model=Reloaded, responses=ERRORS)
async def reload(request: Request) -> Reloaded:
    """Re-read the active version and load its model bundle now; the other workers do so at their next refresh (2 s)."""
    service = app_state.service(request)
    ok = await service.run_admin(service.refresh, True, True)
    cur = service.loaded
    return Reloaded(
        store_version=cur.store_version if cur else None,
        model_version=cur.models.version if cur else None,
        ok=ok,
        error=service.last_error,
    )
