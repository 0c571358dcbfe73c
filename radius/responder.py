"""An Access-Request in, an Accept, Reject or Challenge out: the core's dialogue in RADIUS terms.

Per client, one of three modes (docs/radius.md):

- `challenge`: password first, then an Access-Challenge whose State is the core's dialogue
  token; the next Access-Request carries that State and, as its password, a code or `push`;
- `append`: `password,123456` in one request, for gateways that cannot show a challenge;
- `autopush`: a push as soon as the password checks out.

A push is answered with an Access-Challenge that shows the number to pick on the device (S03);
the next request with its State (the user pressed Enter) is held until the core decides. Every
decision — codes, replay, throttling, the user a State belongs to, fail mode — is the core's;
this module only moves text between packets and the core.
"""

from __future__ import annotations

import logging

from pyrad import packet

from pam_unified_mfa.core import MFA, Outcome, Step
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.dialogue import asks_for_push
from pam_unified_mfa.loop_calls import Call, in_thread
from pam_unified_mfa.service.waiter import Waiter, until_decided
from radius.clients import Client
from radius.first_factor import PasswordCheck, no_check

log = logging.getLogger("unified_mfa.radius")

MSG_DENIED = "Access denied"
MSG_NO_USER = "User-Name is missing"
MSG_PAP_ONLY = "Only PAP (User-Password) is supported"
MSG_ENROLL = ("No MFA method is enrolled for this account: enroll in the user portal, "
              "then log in again")
MSG_APPEND_PUSH = ("Append a passcode to the password (password,123456): a push needs a "
                   "gateway that shows a challenge")
PROMPT_PUSH = "Approve the push on your device by choosing {number}, then press Enter"
REPLY_MESSAGE_MAX = 253
_VERDICTS = {packet.AccessAccept: "accept", packet.AccessReject: "reject",
             packet.AccessChallenge: "challenge"}


def split_append(password: str) -> tuple[str, str]:
    """`password,123456` -> (`password`, `123456`); the last comma splits, so a password may
    contain commas. No comma: the whole is the password and the second factor is a push."""
    head, sep, tail = password.rpartition(",")
    return (head, tail) if sep else (password, "push")


def _text(request: packet.AuthPacket, name: str) -> str:
    values = request.get(name)
    return str(values[0]) if values else ""


class Responder:
    def __init__(self, mfa: MFA, waiter: Waiter, checks: dict[str, PasswordCheck],
                 call: Call = in_thread) -> None:
        self.mfa = mfa
        self.waiter = waiter
        self.checks = checks
        self.call = call

    async def respond(self, client: Client, request: packet.AuthPacket) -> packet.AuthPacket:
        user = _text(request, "User-Name")
        if not user:
            return _reply(request, packet.AccessReject, MSG_NO_USER)
        state = request.get("State")
        if "User-Password" in request:
            try:
                typed = request.PwDecrypt(request["User-Password"][0])
            except packet.PacketError:  # not whole 16-byte blocks (RFC 2865 §5.2): refused
                return _reply(request, packet.AccessReject, MSG_DENIED)
        elif state:  # RFC 2865 §4.1: a State alone is a complete request (the user pressed Enter)
            typed = ""
        else:
            return _reply(request, packet.AccessReject, MSG_PAP_ONLY)
        ctx = RequestContext(adapter="radius", client=client.name,
                             service=_text(request, "NAS-Identifier") or client.name)
        step: Step | None
        if state:
            token = bytes(state[0]).decode("ascii", "replace")
            step = await self._next(token, typed, ctx, user)
        else:
            step = await self._first(client, user, typed, ctx)
        if step is None:
            log.info("radius: user=%s client=%s first factor refused", user, client.name)
            return _reply(request, packet.AccessReject, MSG_DENIED)
        return self._logged(user, client, _render(request, step, client.mode))

    @staticmethod
    def _logged(user: str, client: Client, reply: packet.AuthPacket) -> packet.AuthPacket:
        log.info("radius: user=%s client=%s %s", user, client.name, _VERDICTS.get(reply.code, "?"))
        return reply

    async def _next(self, token: str, typed: str, ctx: RequestContext, user: str) -> Step:
        """A request that carries a State: the answer to a prompt, or Enter on a push shown
        with its number (then the request is held until the decision).

        Only Enter (or `push`) needs to know whether a push is pending; a code goes straight
        to the core, which checks it whatever the dialogue waits for.
        """
        if not asks_for_push(typed):
            return await self.call(self.mfa.answer, token, typed, ctx, user)
        step = await self.call(self.mfa.poll, token, ctx, user)
        if step.outcome is Outcome.PUSH_PENDING:
            return await self._decision(step, ctx, user)
        if step.outcome is Outcome.PROMPT:
            step = await self.call(self.mfa.answer, token, typed, ctx, user)
        return step

    async def _first(self, client: Client, user: str, typed: str,
                     ctx: RequestContext) -> Step | None:
        """The password, then the core's first step (and, by mode, the answer sent with it)."""
        password, second = split_append(typed) if client.mode == "append" else (typed, "")
        check = self.checks[client.first_factor]
        # A directory bind or a PAM stack blocks on the network: always a thread; `none` not.
        first = check(user, password) if check is no_check else await in_thread(
            check, user, password)
        if not first.ok:
            return None
        if client.mode == "append":
            if asks_for_push(second):
                return Step(Outcome.REJECT, MSG_APPEND_PUSH)
            return await self.call(self.mfa.authenticate_code, user, second, ctx,
                                   directory_groups=first.groups)
        step = await self.call(self.mfa.begin, user, ctx, directory_groups=first.groups)
        if step.outcome is not Outcome.PROMPT or step.token is None:
            return step
        if client.mode == "autopush" and "push" in step.methods:
            return await self.call(self.mfa.answer, step.token, "push", ctx, user)
        return step

    async def _decision(self, step: Step, ctx: RequestContext, user: str) -> Step:
        """Hold the request until the push is decided or expires; no thread while it waits."""
        token = step.token
        assert token is not None

        async def check() -> Step:
            return await self.call(self.mfa.poll, token, ctx, user)

        env = self.mfa.env
        return await until_decided(self.waiter, step, check, env.clock(),
                                   env.seconds(env.settings.push.timeout))


def _reply(request: packet.AuthPacket, code: int, message: str = "",
           state: str | None = None) -> packet.AuthPacket:
    reply = request.CreateReply()
    reply.code = code
    if message:
        reply["Reply-Message"] = message.encode("utf-8")[:REPLY_MESSAGE_MAX].decode(
            "utf-8", "ignore")
    if state is not None:
        reply["State"] = state.encode("ascii")
    return reply


def _render(request: packet.AuthPacket, step: Step, mode: str) -> packet.AuthPacket:
    outcome = step.outcome
    if outcome is Outcome.ACCEPT or (outcome is Outcome.UNAVAILABLE and step.allowed):
        return _reply(request, packet.AccessAccept)
    if outcome is Outcome.PROMPT and step.token is not None and mode != "append":
        return _reply(request, packet.AccessChallenge, step.message, step.token)
    if outcome is Outcome.ENROLL:
        return _reply(request, packet.AccessReject, MSG_ENROLL)
    if outcome is Outcome.PUSH_PENDING and step.token is not None and mode != "append":
        # A push just sent: the login screen shows the number to pick (S03); the next request
        # with this State is held until the decision.
        return _reply(request, packet.AccessChallenge,
                      PROMPT_PUSH.format(number=step.push_number), step.token)
    return _reply(request, packet.AccessReject, step.message)
