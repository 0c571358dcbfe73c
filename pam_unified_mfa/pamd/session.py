"""One connection from the PAM module: the core's `Step`s rendered as protocol lines.

The core decides everything (who is asked what, how many tries, push or code, enrollment, the
fail-mode verdict); this module only reads the module's header, passes the user's answers
through, and renders each `Step` with the one table `RENDER`. The wording is chosen for
OpenSSH, which holds informational messages back until the next prompt: whatever the user must
see while waiting is part of a prompt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pam_unified_mfa.core import Outcome, Step
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.enrollment_uri import render
from pam_unified_mfa.loop_calls import Call, in_thread
from pam_unified_mfa.pamd import protocol as p
from pam_unified_mfa.service.waiter import Waiter, wait_limit

POLL_INTERVAL = 0.25
LONGEST_PAUSE = 30.0  # with announced changes: a check at least this often all the same

PROMPT_CODE = "Passcode: "
PROMPT_CODE_OR_PUSH = "Passcode, or press Enter for a push: "
PROMPT_ENROLL = "Enter the code your app shows: "
PROMPT_PUSH = "Approve the push on your device by choosing {number}, then press Enter: "


class Dialogues(Protocol):
    """Who runs the dialogue: the local core (`MFA`) or a central service (`RemoteDialogues`)."""

    def begin(self, user: str, ctx: RequestContext, /) -> Step: ...

    def answer(self, token: str, reply: str, ctx: RequestContext, /) -> Step: ...

    def poll(self, token: str, ctx: RequestContext, /) -> Step: ...


class Abandoned(Exception):
    """The module closed the connection before the dialogue ended (the user hung up)."""


class Then(StrEnum):
    """What the daemon does after sending a step's lines."""

    ANSWER = "answer"  # read the user's answer and hand it to the core
    WAIT = "wait"  # read the answer; Enter means wait for the push decision
    END = "end"  # the verdict was sent


@dataclass(frozen=True)
class Reply:
    lines: tuple[bytes, ...]
    then: Then
    decision: str
    """For the log: the outcome as sent, never a code."""


@dataclass(frozen=True)
class Request:
    """The module's header: who logs in, through which service, from where."""

    user: str
    ctx: RequestContext
    autopush: bool = False


def _lines(verb: str, text: str) -> list[bytes]:
    return p.text_lines(verb, text) if text else []


def _prompt(step: Step, retry: bool) -> Reply:
    lines = _lines(p.INFO, step.extra.get("hint", "")) if step.suggest_unified else []
    if retry:  # the core says why it asks again (a wrong code, a refused push)
        lines += _lines(p.ERROR, step.message)
    text = PROMPT_CODE_OR_PUSH if "push" in step.methods else PROMPT_CODE
    return Reply((*lines, p.encode(p.PROMPT, text)), Then.ANSWER, "prompt")


def _enroll(step: Step, retry: bool) -> Reply:
    qr = render(step.enroll_uri, "terminal").decode("utf-8") if step.enroll_uri else ""
    lines = [*_lines(p.INFO, step.message), *_lines(p.INFO, qr.rstrip("\n")),
             *_lines(p.INFO, step.enroll_uri or "")]
    return Reply((*lines, p.encode(p.PROMPT, PROMPT_ENROLL)), Then.ANSWER, "enroll")


def _push(step: Step, retry: bool) -> Reply:
    text = PROMPT_PUSH.format(number=step.push_number or "")
    return Reply((p.encode(p.PROMPT_ECHO, text),), Then.WAIT, "push")


def _accept(step: Step, retry: bool) -> Reply:
    return Reply((p.encode(p.ACCEPT),), Then.END, "accept")


def _reject(step: Step, retry: bool) -> Reply:
    return Reply((p.text_lines(p.REJECT, step.message)[0],), Then.END, "reject")


def _unavailable(step: Step, retry: bool) -> Reply:
    # The core has already applied the fail mode (S07): `allowed` is its verdict.
    if step.allowed:
        return Reply((p.encode(p.ACCEPT),), Then.END, "unavailable-allowed")
    return Reply((p.encode(p.UNAVAILABLE),), Then.END, "unavailable")


RENDER: dict[Outcome, Callable[[Step, bool], Reply]] = {
    Outcome.PROMPT: _prompt,
    Outcome.ENROLL: _enroll,
    Outcome.PUSH_PENDING: _push,
    Outcome.ACCEPT: _accept,
    Outcome.REJECT: _reject,
    Outcome.UNAVAILABLE: _unavailable,
}
"""The whole adapter: each outcome of the core and the lines it becomes."""


class Session:
    """Drives one connection; `run` returns the decision sent, or raises."""

    def __init__(self, mfa: Dialogues, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 poll_interval: float = POLL_INTERVAL, call: Call = in_thread,
                 waiter: Waiter | None = None) -> None:
        """With a `waiter` (a local store on PostgreSQL, whose changes are announced) a push
        is checked when its decision is announced; without, every `poll_interval` seconds."""
        self.mfa = mfa
        self.call = call
        self.reader = reader
        self.writer = writer
        self.poll_interval = poll_interval
        self.waiter = waiter
        self.request: Request | None = None

    async def _read(self) -> p.Line:
        line = await p.read_line(self.reader)
        if line is None:
            raise Abandoned("the module closed the connection")
        return line

    async def _send(self, lines: Sequence[bytes]) -> None:
        try:
            self.writer.write(b"".join(lines))
            await self.writer.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise Abandoned("the module closed the connection") from exc

    async def _handshake(self) -> Request:
        hello = await self._read()
        if hello != p.Line(p.HELLO, p.VERSION):
            raise p.ProtocolError("expected HELLO 1")
        await self._send([p.encode(p.HELLO, p.VERSION)])
        headers: dict[str, str] = {}
        while (line := await self._read()) != p.Line(p.BEGIN):
            if line.verb not in p.HEADERS or line.verb in headers:
                raise p.ProtocolError(f"unexpected {line.verb} before BEGIN")
            headers[line.verb] = line.argument
        user = headers.get(p.USER, "")
        mode = headers.get(p.FAILMODE)
        if not user:
            raise p.ProtocolError("BEGIN without USER")
        if mode is not None and mode not in p.FAIL_MODES:
            raise p.ProtocolError("FAILMODE must be secure or safe")
        if headers.get(p.AUTOPUSH):
            raise p.ProtocolError("AUTOPUSH takes no argument")
        ctx = RequestContext(adapter="pam", client=headers.get(p.RHOST) or "local",
                             service=headers.get(p.SERVICE, ""), fail_mode=mode)
        return Request(user, ctx, p.AUTOPUSH in headers)

    async def _answer(self) -> str:
        line = await self._read()
        if line.verb != p.ANSWER:
            raise p.ProtocolError(f"expected ANSWER, got {line.verb}")
        return line.argument

    async def _wait_for_push(self, step: Step, ctx: RequestContext) -> Step:
        """Check again until the core decides (approved, denied, expired); the core knows the
        deadline.

        The module sends nothing meanwhile: anything it does send, or its hanging up, ends the
        wait, so a push approved after the user left never turns into an accepted login.
        """
        assert step.token is not None
        waiter = self.waiter or Waiter()  # without one, nothing wakes it: the pause decides
        hangup = asyncio.ensure_future(self.reader.read(1))
        try:
            while True:
                token = step.token
                assert token is not None
                # Subscribed before the check, so a decision announced during it is not lost.
                with waiter.subscribe(step.wait_key or token) as woken:
                    step = await self.call(self.mfa.poll, token, ctx)
                    if step.outcome is not Outcome.PUSH_PENDING:
                        return step
                    either: set[asyncio.Future[Any]] = {hangup, woken}
                    done, _ = await asyncio.wait(either, timeout=self._pause(step),
                                                 return_when=asyncio.FIRST_COMPLETED)
                if hangup in done:
                    if hangup.result():
                        raise p.ProtocolError("data from the module while waiting for a push")
                    raise Abandoned("the module closed the connection during a push")
        finally:
            hangup.cancel()

    def _pause(self, step: Step) -> float:
        if self.waiter is None:
            return self.poll_interval
        return wait_limit(step, time.time(), LONGEST_PAUSE)

    async def run(self) -> str:
        self.request = request = await self._handshake()
        ctx = request.ctx
        step = await self.call(self.mfa.begin, request.user, ctx)
        retry = False
        if request.autopush and step.outcome is Outcome.PROMPT and "push" in step.methods:
            assert step.token is not None
            step = await self.call(self.mfa.answer, step.token, "push", ctx)
            retry = True
        while True:
            reply = RENDER[step.outcome](step, retry)
            await self._send(reply.lines)
            if reply.then is Then.END:
                return reply.decision
            token = step.token
            assert token is not None
            text = await self._answer()
            if reply.then is Then.WAIT and not text:
                step = await self._wait_for_push(step, ctx)
            else:
                step = await self.call(self.mfa.answer, token, text, ctx)
            retry = True
