"""The user portal (`/portal/`) and the admin portal (`/admin/`), served by `unified-mfa serve`.

Server-rendered HTML forms (Jinja2), no JavaScript; sign-in through the configured first
factor and then the core's MFA dialogue; sessions in the store. See docs/portal.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from pam_unified_mfa.portal import admin, security, signin
from pam_unified_mfa.service.routing import add_routes

__all__ = ["STATIC", "install"]

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Add both portals to the service; none of their pages is part of the API document."""
    for router in (*signin.routers(), security.router, admin.router):
        add_routes(app, router)
    app.mount("/portal/static", StaticFiles(directory=STATIC), name="portal-static")

    @app.get("/portal", include_in_schema=False)
    @app.get("/admin", include_in_schema=False)
    async def to_home(request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=308)
