"""The device API: what the Protect app calls (docs/api.md, "Device API")."""

from __future__ import annotations

from typing import Annotated

import jwt
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import RequestContext
from pam_unified_mfa.core.push import PushError, PushView
from pam_unified_mfa.errors import AuthenticationFailed
from pam_unified_mfa.service.clients import DeviceId
from pam_unified_mfa.service.errors import errors
from pam_unified_mfa.service.runtime import Runtime, peer, runtime

router = APIRouter(prefix="/v1/device", tags=["device"])

MAX_WAIT = 60


class RegisterRequest(BaseModel):
    token: str = Field(description="The single-use token from the enrollment URI",
                       max_length=512)
    public_key: str = Field(description="The device's public key, PEM (Ed25519 or P-256)",
                            max_length=4096)


class RegisterResponse(BaseModel):
    device_id: str
    user: str
    issuer: str


class Push(BaseModel):
    id: str
    user: str
    service: str
    client: str
    created_at: float
    expires_at: float
    choices: list[str] = Field(description="Three numbers; the one shown on the login screen "
                                           "is among them")


class PushList(BaseModel):
    pushes: list[Push]


class AnswerRequest(BaseModel):
    answer: str = Field(description="A JWT signed by the device key: header `kid` = device id; "
                        "claims `sub` = push id, `decision` = approve|deny, `number` (approve), "
                        "`not_me` (deny, optional), `iat`", max_length=8192)


class AnswerResponse(BaseModel):
    status: str = Field(description="approved | denied | denied_not_me | wrong_number")


class Message(BaseModel):
    id: str
    kind: str = Field(description="e.g. `migrated` after a merge (R10)")
    payload: str = Field(description="A JSON document, as text")


class MessageList(BaseModel):
    messages: list[Message]


class EndpointRequest(BaseModel):
    url: str | None = Field(description="https:// webhook URL, or null to remove it",
                            max_length=2048)


Rt = Annotated[Runtime, Depends(runtime)]


def _context(request: Request) -> RequestContext:
    return RequestContext(adapter="device", client=peer(request))


def _push(view: PushView) -> Push:
    return Push(id=view.id, user=view.user, service=view.service, client=view.client,
                created_at=view.created_at, expires_at=view.expires_at, choices=list(view.choices))


@router.post("/register", response_model=RegisterResponse, responses=errors(400))
async def register(body: RegisterRequest, request: Request, rt: Rt) -> RegisterResponse:
    """Spend the enrollment token: binds the device key to the account's push factor (R05)."""
    try:
        result = await run_in_threadpool(rt.mfa.register_device, body.token, body.public_key,
                                         _context(request))
    except PushError as exc:  # unknown, used or expired token, or a bad key: all the same here
        raise HTTPException(400, str(exc)) from None
    return RegisterResponse(device_id=result.factor_id, user=result.user,
                            issuer=rt.mfa.settings.totp.issuer)


@router.get("/pushes", response_model=PushList, responses=errors(401, 404))
async def pushes(device: DeviceId, rt: Rt,
                 wait: Annotated[float, Query(ge=0, le=MAX_WAIT,
                                              description="long-poll seconds")] = 0) -> PushList:
    """Pending push requests of the device's user; with `wait`, held until one is pending."""
    async def check() -> list[PushView]:
        return await run_in_threadpool(rt.mfa.pending_pushes, device)

    if wait <= 0:
        found = await check()
    else:
        account = await run_in_threadpool(rt.mfa.account_of_device, device)
        found = await rt.waiter.follow(account, check, bool, wait)
    return PushList(pushes=[_push(p) for p in found])


@router.post("/pushes/{push_id}", response_model=AnswerResponse,
             responses=errors(400, 401, 404, 409, 410))
async def answer(push_id: str, body: AnswerRequest, request: Request, device: DeviceId,
                 rt: Rt) -> AnswerResponse:
    """The device's signed decision (S03); valid once, for this push, before it expires."""
    try:
        header = jwt.get_unverified_header(body.answer)
        claims = jwt.decode(body.answer, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise HTTPException(400, "malformed push answer") from None
    if header.get("kid") != device:
        raise AuthenticationFailed("the answer is not signed by the calling device")
    if claims.get("sub") != push_id:
        raise HTTPException(400, "the answer is for another push request")
    status = await run_in_threadpool(rt.mfa.answer_push, body.answer, _context(request))
    rt.metrics.push_answer(status, device)
    return AnswerResponse(status=status)


@router.get("/messages", response_model=MessageList, responses=errors(401))
async def messages(device: DeviceId, rt: Rt) -> MessageList:
    """What the device channel must deliver, e.g. the TOTP a merge gave this account (R10)."""
    found = await run_in_threadpool(rt.mfa.device_messages, device)
    return MessageList(messages=[Message(**m) for m in found])


@router.post("/messages/{message_id}/ack", status_code=204, response_class=Response,
             responses=errors(401, 404))
async def ack(message_id: str, device: DeviceId, rt: Rt) -> Response:
    """The device stored the message: it is not sent again and its payload is erased."""
    await run_in_threadpool(rt.mfa.ack_device_message, device, message_id)
    return Response(status_code=204)


@router.put("/endpoint", status_code=204, response_class=Response, responses=errors(400, 401))
async def endpoint(body: EndpointRequest, request: Request, device: DeviceId,
                   rt: Rt) -> Response:
    """Set or remove the device's webhook (the UnifiedPush pattern)."""
    await run_in_threadpool(rt.mfa.set_push_endpoint, device, body.url, _context(request))
    return Response(status_code=204)
