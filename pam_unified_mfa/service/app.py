"""The FastAPI application: the three APIs, the Keycloak bridge, the user and admin portals,
`/healthz`, `/metrics`, and error mapping.

`build_app()` is the application without a core (enough for the OpenAPI document);
`create_app(mfa, events)` binds it to a core and to the events the core reports after commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from keycloak_bridge import api as keycloak_api
from pam_unified_mfa import __version__, portal
from pam_unified_mfa.core import MFA
from pam_unified_mfa.loop_calls import core_calls
from pam_unified_mfa.service import admin_api, auth_api, device_api, errors, wait_stream
from pam_unified_mfa.service.changes import follow_changes
from pam_unified_mfa.service.clients import document_security
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.service.housekeeping import purge_forever
from pam_unified_mfa.service.metrics import CONTENT_TYPE, Metrics
from pam_unified_mfa.service.notifier import Notifier
from pam_unified_mfa.service.ratelimit import RateLimiter
from pam_unified_mfa.service.routing import add_routes
from pam_unified_mfa.service.runtime import Runtime
from pam_unified_mfa.service.waiter import Waiter

DESCRIPTION = ("Unified MFA: push approval or TOTP after the password. Every error is "
               '`{"detail": "<one line>"}`. See docs/api.md.')


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


# The service's metrics are Prometheus's (/metrics, docs/api.md); FastAPI's own
# OpenTelemetry instrumentation, which no deployment of ours configures, otherwise asks the
# global providers on every request whether it is wanted.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

# The auth API's routes are matched first: it carries most requests. Starlette tries routes in
# order, about 2 µs each, so FastAPI's documentation pages, which it adds first, go last.
API_ROUTERS = (auth_api.router, device_api.router, wait_stream.router, keycloak_api.router,
               admin_api.router)


def build_app(lifespan: Any = None) -> FastAPI:
    app = FastAPI(title="Unified MFA", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, telemetry=NO_TELEMETRY)
    documentation = list(app.router.routes)  # /openapi.json, /docs, /redoc
    app.router.routes.clear()
    for router in API_ROUTERS:
        add_routes(app, router)
    portal.install(app)
    errors.install(app)

    @app.get("/healthz", response_model=Health, tags=["service"],
             responses={503: {"model": Health, "description": "The store does not answer"}})
    async def healthz(request: Request) -> JSONResponse:
        """ok when the store answers, else 503; nothing more (it is not authenticated)."""
        mfa: MFA = request.app.state.runtime.mfa
        try:
            version = await run_in_threadpool(mfa.store.schema_version)
        except Exception:  # unreachable, or anything else: either way not healthy
            version = None
        if version is None:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format"}})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this instance."""
        runtime: Runtime = request.app.state.runtime
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    app.router.routes.extend(documentation)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with each operation's security schemes (clients.py) and validation
    errors shown as they are sent: one line."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = FastAPI.openapi(app)
    document_security([route for router in API_ROUTERS for route in router.routes], spec)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            response = operation.get("responses", {}).get("422")
            if response is not None:
                response["content"] = {"application/json": {"schema": error_ref}}
                response["description"] = "A malformed body or parameter"
    schemas = spec.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.setdefault("Error", errors.Error.model_json_schema())
    app.openapi_schema = spec
    return spec


def create_app(mfa: MFA, events: ServiceEvents) -> FastAPI:
    """The service for this core; `events` must be the one the core was opened with."""
    waiter = Waiter()
    metrics = Metrics()
    metrics.watch_waiters(lambda: waiter.pending)
    notifier = Notifier(mfa.push_endpoints, metrics)
    service = mfa.settings.service
    runtime = Runtime(mfa, waiter, metrics, notifier,
                      RateLimiter(service.client_rate, service.client_burst),
                      core_calls(mfa.store.is_sqlite))

    def push_created(account_id: str, push_id: str) -> None:
        metrics.pushes_sent.inc()
        waiter.wake(account_id)
        notifier.push_created(account_id, push_id)

    async def changes_since(since: float) -> set[str]:
        return await run_in_threadpool(mfa.push_changes_since, since)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await notifier.start()
        events.attach(asyncio.get_running_loop(), push_created, waiter.wake)
        sweeper = asyncio.create_task(
            follow_changes(waiter, mfa.store, changes_since, mfa.env.clock))
        purger = asyncio.create_task(purge_forever(mfa))
        try:
            yield
        finally:
            await Waiter.stop(purger)
            await Waiter.stop(sweeper)
            events.detach()
            await notifier.stop()

    app = build_app(lifespan)
    app.state.runtime = runtime
    return app
