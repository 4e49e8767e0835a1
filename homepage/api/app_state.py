"""What a route takes from the app: the page service the lifespan made, and the version it has loaded."""

from __future__ import annotations

from fastapi import HTTPException, Request

from homepage.service import Loaded, PageService


def service(request: Request) -> PageService:
    """The app's ``PageService`` (made by the lifespan)."""
    return request.app.state.service


def loaded(request: Request) -> Loaded:
    """The version the service has loaded; 503 with ``Retry-After`` while there is none yet."""
    cur = service(request).loaded
    if cur is None:
        raise HTTPException(503, "model not loaded yet", headers={"Retry-After": "1"})
    return cur
