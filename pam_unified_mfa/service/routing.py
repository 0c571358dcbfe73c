"""Adding a router's routes to the application, without FastAPI's include layer."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add `router`'s routes to `app` as they are.

    Since 0.165, FastAPI's `include_router` keeps the router behind a layer that matches every
    request into it twice and records the route's context in the request scope on the way:
    about 45 µs of CPU per auth API call, a twentieth of a whole validation
    (docs/performance.md). Our routers give their prefix, tags and schema flag where they are
    made, so their routes are already complete, and nothing is set at inclusion that the layer
    would have to carry.
    """
    app.router.routes.extend(router.routes)
