"""What a route takes from the app: the page service the lifespan made, the version it has loaded, a title in its catalog."""

from __future__ import annotations

import numpy as np
from fastapi import HTTPException, Request

from homepage.catalog import Catalog
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


def title_index(catalog: Catalog, title_id: int) -> int:
    """The title's index in the served catalog; 404 naming the id when it has none."""
    idx = int(catalog.index_of(np.array([title_id]))[0])
    if idx < 0:
        raise HTTPException(404, f"title_id: {title_id} is not in the catalog")
    return idx
