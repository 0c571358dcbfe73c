"""The auth API: the dialogue for remote adapters (docs/api.md, "Auth API").

The adapter renders the returned `Step`; every decision is the core's. `wait` follows a pending
push without holding a thread: it sleeps until the core reports the push decided (or the
periodic re-check finds it decided on another node, or expired).

The core binds a dialogue token to the client it began with. Here that client is the end
user's `client_address` when the adapter sends one (it must then repeat it on `answer` and
`wait`), else the API client's name: stable across the nodes of an adapter, never the HTTP
peer, which may change between the steps of one login.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from pam_unified_mfa.core import RequestContext, Step
from pam_unified_mfa.service.clients import ClientName
from pam_unified_mfa.service.errors import errors
from pam_unified_mfa.service.routing import LoginPathRoute
from pam_unified_mfa.service.runtime import Runtime, runtime
from pam_unified_mfa.service.waiter import until_decided

router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=LoginPathRoute)

MAX_WAIT = 300  # server-to-server: a push (60 s by default) fits in one wait


class BeginRequest(BaseModel):
    user: str = Field(max_length=256)
    service: str = Field("", max_length=256, description="What the user logs in to")
    client_address: str = Field("", max_length=255,
                                description="The end user's address, for the audit trail; "
                                "the dialogue is bound to it")
    kind: Literal["user", "admin"] = "user"


class CheckRequest(BaseModel):
    user: str = Field(max_length=256)
    code: str = Field(max_length=256, description="A code or a bypass code")
    service: str = Field("", max_length=256, description="What the user logs in to")
    client_address: str = Field("", max_length=255,
                                description="The end user's address, for the audit trail")


class AnswerRequest(BaseModel):
    token: str = Field(max_length=256)
    answer: str = Field(max_length=256, description="A code, a bypass code, or `push`")
    service: str = Field("", max_length=256, description="For the audit trail")
    client_address: str = Field("", max_length=255,
                                description="The same as given to begin")


class WaitRequest(BaseModel):
    token: str = Field(max_length=256)
    timeout: float = Field(25, ge=0, le=MAX_WAIT, description="Seconds to wait at most")
    service: str = Field("", max_length=256, description="For the audit trail")
    client_address: str = Field("", max_length=255,
                                description="The same as given to begin")


class StepResponse(BaseModel):
    outcome: Literal["prompt", "enroll", "push_pending", "accept", "reject", "unavailable"]
    message: str = Field(description="What to show the user")
    token: str | None = Field(description="Resumes the dialogue; null once it is finished")
    methods: list[str] = Field(description="What the user may answer with: code, push")
    push_number: str | None = Field(description="The number to pick on the device (S03)")
    deadline: float | None = Field(description="When the pending push expires (Unix time)")
    enroll_uri: str | None = Field(description="The enrollment URI to show as a QR code")
    suggest_unified: bool
    allowed: bool = Field(description="With `unavailable`: the fail-mode verdict (S07)")


Rt = Annotated[Runtime, Depends(runtime)]


def context(client: str, service: str, client_address: str) -> RequestContext:
    return RequestContext(adapter="api", client=client_address or client, service=service)


def step_response(rt: Runtime, step: Step) -> StepResponse:
    rt.metrics.decision("api", step.outcome.value)
    return StepResponse(
        outcome=step.outcome.value, message=step.message, token=step.token,
        methods=list(step.methods), push_number=step.push_number, deadline=step.deadline,
        enroll_uri=step.enroll_uri, suggest_unified=step.suggest_unified, allowed=step.allowed)


RESPONSES = errors(401, 429)


@router.post("/begin", response_model=StepResponse, responses=RESPONSES)
async def begin(body: BeginRequest, client: ClientName, rt: Rt) -> StepResponse:
    """Start the MFA dialogue; call only after the first factor succeeded."""
    ctx = context(client, body.service, body.client_address)
    return step_response(rt, await rt.call(rt.mfa.begin, body.user, ctx, body.kind))


@router.post("/answer", response_model=StepResponse, responses=RESPONSES)
async def answer(body: AnswerRequest, client: ClientName, rt: Rt) -> StepResponse:
    """Answer the current prompt; the token of the previous step dies."""
    ctx = context(client, body.service, body.client_address)
    return step_response(rt, await rt.call(rt.mfa.answer, body.token, body.answer, ctx))


@router.post("/check", response_model=StepResponse, responses=RESPONSES)
async def check(body: CheckRequest, client: ClientName, rt: Rt) -> StepResponse:
    """`begin` and `answer` in one call, for a gateway that has the code with the password.
    `accept`, or as `answer` would: `prompt` after a wrong code (its token may answer again),
    `reject` when no attempt is left."""
    ctx = context(client, body.service, body.client_address)
    return step_response(rt, await rt.call(rt.mfa.authenticate_code, body.user,
                                                     body.code, ctx))


async def decision(rt: Runtime, token: str, ctx: RequestContext, timeout: float) -> Step:
    """Follow a login until it is no longer waiting on a push, or for `timeout` seconds; never
    past the push's deadline (then the core finds it expired)."""
    async def check() -> Step:
        return await rt.call(rt.mfa.poll, token, ctx)

    return await until_decided(rt.waiter, await check(), check, rt.mfa.env.clock(), timeout)


@router.post("/wait", response_model=StepResponse, responses=RESPONSES)
async def wait(body: WaitRequest, client: ClientName, rt: Rt) -> StepResponse:
    """Follow a pending push: returns at its decision or expiry, or after `timeout` still
    `push_pending` with the same token."""
    ctx = context(client, body.service, body.client_address)
    return step_response(rt, await decision(rt, body.token, ctx, body.timeout))
