"""Who is calling: FastAPI dependencies for the three kinds of caller.

Each checks the `Authorization` header through the core (devices: a JWT signed by the device
key; API clients: a Basic secret or a signed assertion; admins: an admin API token) and yields
the caller's id. API clients are also rate-limited per client name (429 past
`[service] client_rate`).

The dependencies read the header from the request themselves rather than through FastAPI's
`Security()`, which resolves one more dependency per scheme on every request: on the auth
API's hot path that was a sixth of the framework's time. Which schemes each one accepts is
declared with `secured_by`, and `document_security` writes them into the OpenAPI document as
`Security()` would, so that the contract still shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from pam_unified_mfa.errors import AuthenticationFailed
from pam_unified_mfa.service.runtime import Runtime, runtime

Call = TypeVar("Call", bound=Callable[..., Any])


@dataclass(frozen=True)
class Scheme:
    """A security scheme as the OpenAPI document declares it."""

    name: str
    model: HTTPBaseModel


DEVICE = Scheme("device", HTTPBearerModel(
    bearerFormat="JWT", description="A JWT signed by the device key: header `kid` = device id, "
    "`aud` = unified-mfa-device, `iat`, `exp` at most 120 s later"))
CLIENT_SECRET = Scheme("client_secret", HTTPBaseModel(
    scheme="basic", description="An API client's name and secret"))
CLIENT_ASSERTION = Scheme("client_assertion", HTTPBearerModel(
    bearerFormat="JWT", description="An assertion signed by the API client's key: `iss` = `sub` "
    "= client name, `aud` = public_url + /v1/auth, `exp` at most 300 s ahead, a fresh `jti`"))
ADMIN = Scheme("admin_token", HTTPBearerModel(
    description="An admin API token (`unified-mfa admin token NAME`)"))

_SECURED: dict[Callable[..., Any], tuple[Scheme, ...]] = {}


def secured_by(*schemes: Scheme) -> Callable[[Call], Call]:
    """Declare that a dependency authenticates its caller by one of `schemes`."""
    def mark(call: Call) -> Call:
        _SECURED[call] = schemes
        return call
    return mark


def _schemes_of(dependant: Dependant) -> list[Scheme]:
    """The schemes of the secured dependencies under `dependant`, in order, each once."""
    found: list[Scheme] = []
    for dependency in dependant.dependencies:
        own = _SECURED.get(dependency.call, ()) if dependency.call is not None else ()
        for scheme in (*own, *_schemes_of(dependency)):
            if scheme not in found:
                found.append(scheme)
    return found


def document_security(routes: list[BaseRoute], spec: dict[str, Any]) -> None:
    """Each operation's accepted schemes (any one of them), and the schemes' definitions."""
    schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        found = _schemes_of(route.dependant)
        if not found:
            continue
        for method in route.methods or ():
            operation = spec["paths"][route.path_format][method.lower()]
            operation["security"] = [{scheme.name: []} for scheme in found]
        for scheme in found:
            schemes[scheme.name] = scheme.model.model_dump(mode="json", by_alias=True,
                                                         exclude_none=True)


def authorization(request: Request) -> str:
    """The raw `Authorization` header, for the core to check."""
    return request.headers.get("authorization", "")


def _bearer(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationFailed("a Bearer token is required")
    return value.strip()


async def check_client(rt: Runtime, header: str) -> str:
    """The API client's name, from its Basic secret or signed assertion, within its rate."""
    if not header:
        raise AuthenticationFailed("client authentication required")
    name = await rt.call(rt.mfa.authenticate_client, header)
    if not rt.limiter.allow(name):
        raise HTTPException(429, "too many requests for this client; slow down",
                            headers={"Retry-After": "1"})
    return name


@secured_by(DEVICE)
async def device_id(request: Request) -> str:
    rt = await runtime(request)
    return await run_in_threadpool(rt.mfa.authenticate_device, _bearer(authorization(request)))


@secured_by(CLIENT_SECRET, CLIENT_ASSERTION)
async def client_name(request: Request) -> str:
    return await check_client(await runtime(request), authorization(request))


@secured_by(ADMIN)
async def admin_name(request: Request) -> str:
    rt = await runtime(request)
    return await run_in_threadpool(rt.mfa.authenticate_admin, _bearer(authorization(request)))


DeviceId = Annotated[str, Depends(device_id)]
ClientName = Annotated[str, Depends(client_name)]
AdminName = Annotated[str, Depends(admin_name)]
