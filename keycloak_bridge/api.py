"""The Keycloak bridge API: begin, answer and poll on the core's dialogue (docs/keycloak.md).

The Keycloak authenticator calls these after Keycloak checked the password, and renders the
`KeycloakForm` it gets back; every decision is the core's, taken through the same `MFA` calls
as the auth API, with adapter `keycloak` in the audit trail and the metrics.

Only API clients registered with a public key may call it: each request carries a fresh signed
assertion, so what sits in Keycloak's configuration is a private key that never leaves it,
not a secret the service would also accept when replayed from a copy of that configuration.
A Basic secret is refused here even when it is valid for the auth API.

Every dialogue is bound to the browser's address (`client_address`), as the auth API binds it:
a token lifted from one browser's form finds the login expired when sent for another.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from keycloak_bridge.form import KeycloakForm, form_of
from pam_unified_mfa.core import RequestContext, Step
from pam_unified_mfa.errors import AuthenticationFailed
from pam_unified_mfa.service.auth_api import decision
from pam_unified_mfa.service.clients import (
    CLIENT_ASSERTION,
    authorization,
    check_client,
    secured_by,
)
from pam_unified_mfa.service.errors import errors
from pam_unified_mfa.service.routing import LoginPathRoute
from pam_unified_mfa.service.runtime import Runtime, runtime

__all__ = ["MAX_WAIT", "KeycloakAnswer", "KeycloakBegin", "KeycloakPoll", "router"]

router = APIRouter(prefix="/v1/keycloak", tags=["keycloak"], route_class=LoginPathRoute)

ADAPTER = "keycloak"

# Keycloak holds a worker thread and the browser's request while it polls: 25 s stays under
# the 30 s that proxies and HTTP clients commonly allow, and a login page re-polls anyway.
MAX_WAIT = 25

_SIGNED_ONLY = "the Keycloak bridge takes a signed client assertion (Bearer), not a secret"

_ADDRESS = "The browser's IP address as Keycloak sees it; the login is bound to it"
_SERVICE = 'For the audit trail and the push shown on the device: "keycloak:<realm>/<client_id>"'
_FAIL_MODE = ("The authenticator's fail mode (S07): what an outage of the store decides; null: "
              "the service's `fail_mode`")
FailMode = Literal["secure", "safe"]


class KeycloakBegin(BaseModel):
    user: str = Field(max_length=256, description="The Keycloak username, once the password "
                      "(or another first factor) succeeded")
    client_address: str = Field(max_length=255, description=_ADDRESS)
    service: str = Field(max_length=256, description=_SERVICE)
    fail_mode: FailMode | None = Field(None, description=_FAIL_MODE)


class KeycloakAnswer(BaseModel):
    token: str = Field(max_length=256, description="The token of the form being answered")
    answer: str = Field(max_length=256, description="A code (TOTP, bypass, or the enrollment's "
                        "first code) or `push`")
    client_address: str = Field(max_length=255, description=_ADDRESS + " (as given to begin)")
    service: str = Field(max_length=256, description=_SERVICE)
    fail_mode: FailMode | None = Field(None, description=_FAIL_MODE)


class KeycloakPoll(BaseModel):
    token: str = Field(max_length=256, description="The token of the `push_pending` form")
    client_address: str = Field(max_length=255, description=_ADDRESS + " (as given to begin)")
    service: str = Field(max_length=256, description=_SERVICE)
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="Seconds to wait at most for the "
                        "push's decision; 0 answers at once")
    fail_mode: FailMode | None = Field(None, description=_FAIL_MODE)


Rt = Annotated[Runtime, Depends(runtime)]


@secured_by(CLIENT_ASSERTION)
async def keycloak_client(request: Request) -> str:
    """The calling client's name, checked as the auth API checks its clients (signature,
    audience, expiry, single-use jti, rate limit), but for a Bearer assertion only.

    With the store unreachable the caller cannot be verified (its key and the used jtis live
    there): that is a 503, and the authenticator applies its own fail mode (S07), as for a
    service that does not answer at all.
    """
    header = authorization(request)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationFailed(_SIGNED_ONLY)
    return await check_client(await runtime(request), header)


Caller = Annotated[str, Depends(keycloak_client)]


def context(client: str, service: str, client_address: str,
            fail_mode: FailMode | None) -> RequestContext:
    """As the auth API's: bound to the browser's address, else to the client's name; the
    authenticator's fail mode decides an outage met after the caller was verified (S07)."""
    return RequestContext(adapter=ADAPTER, client=client_address or client, service=service,
                          fail_mode=fail_mode)


async def _form(rt: Runtime, step: Awaitable[Step]) -> KeycloakForm:
    """Count one dialogue call as the auth API does, and narrow it to the form."""
    result = await step
    rt.metrics.decision(ADAPTER, result.outcome.value)
    return form_of(result)


RESPONSES = errors(401, 429, 503)


@router.post("/begin", response_model=KeycloakForm, responses=RESPONSES)
async def begin(body: KeycloakBegin, client: Caller, rt: Rt) -> KeycloakForm:
    """Start MFA for a user whose password Keycloak has just accepted."""
    ctx = context(client, body.service, body.client_address, body.fail_mode)
    return await _form(rt, rt.call(rt.mfa.begin, body.user, ctx))


@router.post("/answer", response_model=KeycloakForm, responses=RESPONSES)
async def answer(body: KeycloakAnswer, client: Caller, rt: Rt) -> KeycloakForm:
    """Answer the form: a code or `push`. The token sent dies; the form carries the next."""
    ctx = context(client, body.service, body.client_address, body.fail_mode)
    return await _form(rt, rt.call(rt.mfa.answer, body.token, body.answer, ctx))


@router.post("/poll", response_model=KeycloakForm, responses=RESPONSES)
async def poll(body: KeycloakPoll, client: Caller, rt: Rt) -> KeycloakForm:
    """Follow a pending push without spending the token; with `wait`, return at the decision
    (or after `wait` seconds, still `push_pending` with the same token)."""
    ctx = context(client, body.service, body.client_address, body.fail_mode)
    return await _form(rt, decision(rt, body.token, ctx, body.wait))
