"""Who is calling: FastAPI dependencies for the three kinds of caller.

Each checks the `Authorization` header through the core (devices: a JWT signed by the device
key; API clients: a Basic secret or a signed assertion; admins: an admin API token) and yields
the caller's id. The security schemes are declared so that the OpenAPI contract shows them.
API clients are also rate-limited per client name (429 past `[service] client_rate`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.errors import AuthenticationFailed
from pam_unified_mfa.service.runtime import Runtime, runtime


class _Authorization(SecurityBase):
    """Declares a scheme in the OpenAPI document; yields the raw header for the core to check."""

    def __init__(self, name: str, model: HTTPBaseModel) -> None:
        self.scheme_name = name
        self.model = model

    async def __call__(self, request: Request) -> str:
        return request.headers.get("authorization", "")


DEVICE = _Authorization("device", HTTPBearerModel(
    bearerFormat="JWT", description="A JWT signed by the device key: header `kid` = device id, "
    "`aud` = unified-mfa-device, `iat`, `exp` at most 120 s later"))
CLIENT_SECRET = _Authorization("client_secret", HTTPBaseModel(
    scheme="basic", description="An API client's name and secret"))
CLIENT_ASSERTION = _Authorization("client_assertion", HTTPBearerModel(
    bearerFormat="JWT", description="An assertion signed by the API client's key: `iss` = `sub` "
    "= client name, `aud` = public_url + /v1/auth, `exp` at most 300 s ahead, a fresh `jti`"))
ADMIN = _Authorization("admin_token", HTTPBearerModel(
    description="An admin API token (`unified-mfa admin token NAME`)"))


def _bearer(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationFailed("a Bearer token is required")
    return value.strip()


async def device_id(header: Annotated[str, Security(DEVICE)],
                    rt: Annotated[Runtime, Depends(runtime)]) -> str:
    return await run_in_threadpool(rt.mfa.authenticate_device, _bearer(header))


async def client_name(secret: Annotated[str, Security(CLIENT_SECRET)],
                      assertion: Annotated[str, Security(CLIENT_ASSERTION)],
                      rt: Annotated[Runtime, Depends(runtime)]) -> str:
    if not secret:
        raise AuthenticationFailed("client authentication required")
    name = await rt.call(rt.mfa.authenticate_client, secret)
    if not rt.limiter.allow(name):
        raise HTTPException(429, "too many requests for this client; slow down",
                            headers={"Retry-After": "1"})
    return name


async def admin_name(header: Annotated[str, Security(ADMIN)],
                     rt: Annotated[Runtime, Depends(runtime)]) -> str:
    return await run_in_threadpool(rt.mfa.authenticate_admin, _bearer(header))


DeviceId = Annotated[str, Depends(device_id)]
ClientName = Annotated[str, Depends(client_name)]
AdminName = Annotated[str, Depends(admin_name)]
