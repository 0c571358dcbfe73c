"""The waits socket: one WebSocket carries the push waits of many logins (docs/api.md).

An adapter that holds many logins at once (a VPN gateway at nine in the morning, a busy SSO
realm) would otherwise hold one long-poll request, and one connection, per login; in this
service that is about 25 KB each, most of it the HTTP request's own machinery, which no
setting removes. Over this socket a pending login costs a few small objects here. The adapter sends
a login's token once the core has answered `push_pending`; the service sends the login's next
step back as soon as it is no longer pending: decided on the device, expired, or ended another
way. The decision itself is the core's, as for `POST /v1/auth/wait`.

Bad input never closes the socket: a malformed message, a token followed twice or a rate-limited
follow gets an error message, and the other followed logins carry on. Closing the socket drops
the follows only; the logins stay pending in the core and may be followed again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from pam_unified_mfa.core import Outcome, RequestContext, Step
from pam_unified_mfa.errors import AuthenticationFailed, StoreUnavailable
from pam_unified_mfa.service.auth_api import context, step_response
from pam_unified_mfa.service.runtime import Runtime
from pam_unified_mfa.service.waiter import Listener, wait_limit

log = logging.getLogger("unified_mfa.service")

router = APIRouter(prefix="/v1/auth", tags=["auth"])

MAX_FOLLOWED = 50_000  # logins one socket may follow at once
FOLLOW_CEILING = 86_400.0  # seconds; a follow ends at the push's deadline long before this
POLICY_VIOLATION = 1008  # WebSocket close code: before `accept` the handshake gets 403
TRY_AGAIN_LATER = 1013


class FollowRequest(BaseModel):
    token: str = Field(max_length=256)
    service: str = Field("", max_length=256, description="For the audit trail")
    client_address: str = Field("", max_length=255, description="The same as given to begin")


class _Follow:
    """One followed login: what it needs between two checks of the store. No task, no
    coroutine: while the login waits on the phone, this, a listener and a timer are all."""

    __slots__ = ("checking", "ctx", "key", "listener", "stale", "timer", "token")

    def __init__(self, token: str, ctx: RequestContext) -> None:
        self.token, self.ctx = token, ctx
        self.key = ""
        self.timer: asyncio.TimerHandle | None = None
        self.listener: Listener | None = None
        self.checking = False  # a check of the store is running
        self.stale = False  # woken during that check: its answer may be out of date


class _Socket:
    """One adapter's socket: its follows, and one writer so that messages never interleave.

    Every method runs on the event loop. A check of the store runs in the loop's executor and
    comes back as a callback (`_checked`); while the login is still pending, the waiter's
    wake-up or the push's deadline starts the next check (`_woken`). The listener stays from
    the first pending answer to the end, so no wake-up falls between two checks.
    """

    def __init__(self, websocket: WebSocket, rt: Runtime, client: str) -> None:
        self.websocket, self.rt, self.client = websocket, rt, client
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.followed: dict[str, _Follow] = {}
        self.loop = asyncio.get_running_loop()

    async def write_all(self) -> None:
        while True:
            await self.websocket.send_text(json.dumps(await self.outbox.get()))

    def received(self, text: str) -> None:
        try:
            request = FollowRequest.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "message"
            self.outbox.put_nowait({"error": f"malformed message: {where}: {first['msg']}"})
            return
        token = request.token
        if token in self.followed:
            self.outbox.put_nowait({"token": token, "error": "already followed on this socket"})
        elif len(self.followed) >= MAX_FOLLOWED:
            self.outbox.put_nowait({"token": token, "error": f"this socket already follows "
                                    f"{MAX_FOLLOWED} logins; open another"})
        elif not self.rt.limiter.allow(self.client):
            self.outbox.put_nowait({"token": token, "error": "too many requests for this "
                                    "client; slow down"})
        else:
            follow = _Follow(token, context(self.client, request.service,
                                            request.client_address))
            self.followed[token] = follow
            self._check(follow)

    def _check(self, follow: _Follow) -> None:
        follow.checking, follow.stale = True, False
        # The loop's executor hands back a future to hang a callback on; anyio's thread pool
        # would need a task per check, and a task per waiting login is what this avoids.
        checked = self.loop.run_in_executor(None, self.rt.mfa.poll, follow.token, follow.ctx)
        checked.add_done_callback(partial(self._checked, follow))

    def _checked(self, follow: _Follow, checked: asyncio.Future[Step]) -> None:
        follow.checking = False
        if self.followed.get(follow.token) is not follow:
            return  # the socket closed meanwhile
        try:
            step = checked.result()
        except Exception:  # never the socket's end: the adapter hears of this login alone
            log.exception("following a login over the waits socket failed")
            self._finish(follow, {"token": follow.token, "error": "internal error"})
            return
        if step.outcome is not Outcome.PUSH_PENDING or not step.wait_key:
            self._finish(follow, {"token": follow.token,
                                  "step": step_response(self.rt, step).model_dump()})
            return
        if follow.listener is None:
            # The first check told us the key. A decision made between that check and now
            # woke nobody, so listen first, then look once more.
            follow.key = step.wait_key
            follow.listener = partial(self._woken, follow)
            self.rt.waiter.listen(follow.key, follow.listener)
            follow.stale = True
        if follow.stale:
            self._check(follow)
            return
        if follow.timer is not None:
            follow.timer.cancel()
        limit = wait_limit(step, self.rt.mfa.env.clock(), FOLLOW_CEILING)
        follow.timer = self.loop.call_later(limit, partial(self._woken, follow))

    def _woken(self, follow: _Follow) -> None:
        """A wake-up or the deadline: look again, once the check running now (if any) ends."""
        if follow.checking:
            follow.stale = True
        else:
            self._check(follow)

    def _quiet(self, follow: _Follow) -> None:
        if follow.listener is not None:
            self.rt.waiter.unlisten(follow.key, follow.listener)
            follow.listener = None
        if follow.timer is not None:
            follow.timer.cancel()
            follow.timer = None

    def _finish(self, follow: _Follow, reply: dict[str, Any]) -> None:
        self._quiet(follow)
        del self.followed[follow.token]
        self.outbox.put_nowait(reply)

    def close(self) -> None:
        for follow in self.followed.values():
            self._quiet(follow)
        self.followed.clear()


@router.websocket("/waits")
async def waits(websocket: WebSocket) -> None:
    """Follow many pending push logins over one connection (docs/api.md, "Waits socket")."""
    rt: Runtime = websocket.app.state.runtime
    try:
        client = await run_in_threadpool(rt.mfa.authenticate_client,
                                         websocket.headers.get("authorization", ""))
    except AuthenticationFailed:
        await websocket.close(code=POLICY_VIOLATION)
        return
    except StoreUnavailable:  # not a refusal: the adapter applies its fail mode and retries
        await websocket.accept()
        await websocket.close(code=TRY_AGAIN_LATER, reason="store unavailable")
        return
    await websocket.accept()
    socket = _Socket(websocket, rt, client)
    writer = asyncio.create_task(socket.write_all())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                socket.outbox.put_nowait({"error": "messages must be JSON text"})
            else:
                socket.received(text)
    except WebSocketDisconnect:
        pass
    finally:
        socket.close()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
