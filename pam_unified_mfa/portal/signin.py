"""Sign-in for both portals: the first factor, then the core's MFA dialogue, like every adapter.

`POST login` checks the password (`[portal] first_factor`) and calls the core's `begin` for a
user, or for an admin (`kind="admin"`: R14 — an admin not linked to a user answers with their
own TOTP, a linked admin with the user's factors). The dialogue's steps are rendered as they
come: a code prompt with a push button when the core offers push, the number to pick on the
device while a push waits (S03; the page reloads itself, no JavaScript), or the enrollment QR
when the core asks for one (R13). Nothing here decides: accept, reject, locked (S02), the
unknown user's decoy (S06) are the core's answers, shown as they are.

Every POST answers with a redirect to a GET (so a reload never re-sends a code); the step to
show is kept with the session, its token and QR sealed (see `sessions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import Outcome, Step
from pam_unified_mfa.enrollment_uri import png_data_uri as qr_data_uri
from pam_unified_mfa.portal import web
from pam_unified_mfa.portal.password import PortalCheck, build_check
from pam_unified_mfa.service.waiter import until_decided

WRONG_PASSWORD = "The name or the password is not right."  # noqa: S105 - a message
POLL_WAIT = 5.0  # seconds one page load waits for a push decision before reloading
NAME_LIMIT = 255


def password_check(request: Request) -> PortalCheck:
    state = request.app.state
    if getattr(state, "portal_check", None) is None:
        state.portal_check = build_check(web.runtime_of(request).mfa)
    check: PortalCheck = state.portal_check
    return check


def _step_data(step: Step) -> dict[str, Any]:
    """What the page shows of a step: never the token or the enrollment URI (sealed apart)."""
    return {"outcome": step.outcome.value, "message": step.message,
            "methods": list(step.methods), "push_number": step.push_number,
            "hint": step.extra.get("hint", "") if step.suggest_unified else ""}


def _pending(step: Step) -> dict[str, str] | None:
    if step.token is None:
        return None
    sealed = {"token": step.token}
    if step.enroll_uri:
        sealed["enroll_uri"] = step.enroll_uri
    return sealed


@dataclass
class SignIn:
    """The sign-in pages of one portal."""

    portal: web.Portal

    def router(self) -> APIRouter:
        router = APIRouter(prefix=self.portal.prefix, include_in_schema=False)
        router.add_api_route("/login", self.login_page, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/login/mfa", self.mfa_page, methods=["GET"])
        router.add_api_route("/login/mfa", self.answer, methods=["POST"])
        router.add_api_route("/logout", self.logout, methods=["POST"])
        return router

    # -- pages ------------------------------------------------------------------------------

    def _login(self, request: Request, current: web.Visit, *, error: str = "",
               status: int = 200, next_path: str = "", name: str = "") -> Response:
        return web.render(request, current, "login.html", status=status, error=error,
                          next_path=web.safe_next(self.portal, next_path), name=name,
                          title="Sign in")

    async def login_page(self, request: Request) -> Response:
        current = await web.visit(request, self.portal)
        reauth = request.query_params.get("reauth") == "1"
        name = current.state.name if current.state and reauth else ""
        notice = "Sign in again to confirm it is you." if reauth else ""
        return web.render(request, current, "login.html", error="", notice=notice,
                          next_path=web.safe_next(self.portal,
                                                  request.query_params.get("next", "")),
                          name=name, title="Sign in")

    async def login(self, request: Request) -> Response:
        current = await web.visit(request, self.portal)
        valid, form = await web.csrf_ok(request, current)
        if not valid:
            return web.refused(request, current)
        name = web.field(form, "name", NAME_LIMIT).strip()
        password = web.field(form, "password")
        next_path = web.field(form, "next", 255)
        ctx = current.context()
        verdict = await run_in_threadpool(password_check(request), self.portal.kind, name,
                                          password, ctx) if name else None
        if verdict is None or not verdict.ok:
            return self._login(request, current, error=WRONG_PASSWORD, status=401,
                               next_path=next_path, name=name)
        step = await run_in_threadpool(current.mfa.begin, name, ctx, self.portal.kind,
                                       directory_groups=verdict.groups)
        web.runtime_of(request).metrics.decision("portal", step.outcome.value)
        if step.finished:
            return await self._decided(request, current, step, name, next_path)
        token = await run_in_threadpool(
            current.sessions.start_mfa, self.portal.kind, current.token, name,
            web.safe_next(self.portal, next_path), _step_data(step), _pending(step))
        current.replace_token(token)
        return web.redirect(request, current, self.portal.path("login/mfa"))

    async def mfa_page(self, request: Request) -> Response:
        current = await web.visit(request, self.portal)
        state = current.state
        if state is None or state.stage != "mfa" or state.pending is None:
            return web.redirect(request, current, self.portal.path("login"))
        if state.step.get("outcome") == Outcome.PUSH_PENDING.value:
            step = await self._follow_push(request, current, state.pending["token"])
            if step.finished:
                return await self._decided(request, current, step, state.name,
                                           state.next_path)
            if step.outcome is not Outcome.PUSH_PENDING:
                await self._keep(current, step, state.pending)
            data = _step_data(step)
        else:
            data = state.step
        qr = state.pending.get("enroll_uri")
        return web.render(request, current, "mfa.html", step=data, name=state.name,
                          qr=qr_data_uri(qr) if qr and data["outcome"] == "enroll" else None,
                          title="Verify it is you")

    async def answer(self, request: Request) -> Response:
        current = await web.visit(request, self.portal)
        valid, form = await web.csrf_ok(request, current)
        if not valid:
            return web.refused(request, current)
        state = current.state
        if state is None or state.stage != "mfa" or state.pending is None:
            return web.redirect(request, current, self.portal.path("login"))
        wants_push = web.field(form, "action", 16) == "push"
        code = web.field(form, "code", 64).strip()
        if not wants_push and not code:
            return web.redirect(request, current, self.portal.path("login/mfa"))
        step = await run_in_threadpool(current.mfa.answer, state.pending["token"],
                                       "push" if wants_push else code, current.context(),
                                       state.name)
        web.runtime_of(request).metrics.decision("portal", step.outcome.value)
        if step.finished:
            return await self._decided(request, current, step, state.name, state.next_path)
        await self._keep(current, step, state.pending)
        return web.redirect(request, current, self.portal.path("login/mfa"))

    async def logout(self, request: Request) -> Response:
        current = await web.visit(request, self.portal)
        valid, _ = await web.csrf_ok(request, current)
        if not valid:
            return web.refused(request, current)
        await run_in_threadpool(current.sessions.end, current.token)
        current.cookie_out = ""
        return web.redirect(request, current, self.portal.path("login"))

    # -- steps ------------------------------------------------------------------------------

    async def _keep(self, current: web.Visit, step: Step, before: dict[str, str]) -> None:
        """Store the next step; an enrollment QR stays with its dialogue until it ends."""
        pending = _pending(step) or {}
        if "enroll_uri" not in pending and step.outcome is Outcome.ENROLL and \
                "enroll_uri" in before:
            pending["enroll_uri"] = before["enroll_uri"]
        await run_in_threadpool(current.sessions.update_mfa, current.token, _step_data(step),
                                pending or None)

    async def _follow_push(self, request: Request, current: web.Visit, token: str) -> Step:
        """Poll the core for the push, waiting up to `POLL_WAIT` for its decision."""
        rt = web.runtime_of(request)
        ctx = current.context()
        name = current.name

        async def check() -> Step:
            return await run_in_threadpool(current.mfa.poll, token, ctx, name)

        step = await until_decided(rt.waiter, await check(), check, current.mfa.env.clock(),
                                   POLL_WAIT)
        if step.finished:
            rt.metrics.decision("portal", step.outcome.value)
        return step

    async def _decided(self, request: Request, current: web.Visit, step: Step, name: str,
                       next_path: str) -> Response:
        """The dialogue ended: signed in (new cookie), or back to the form with the core's
        message (and the session, if any, ended)."""
        if step.granted:
            token = await run_in_threadpool(current.sessions.sign_in, self.portal.kind,
                                            current.token, name)
            current.replace_token(token)
            return web.redirect(request, current, web.safe_next(self.portal, next_path))
        await run_in_threadpool(current.sessions.end, current.token)
        current.state = None
        return self._login(request, current, error=step.message, status=401,
                           next_path=next_path)


def routers() -> list[APIRouter]:
    return [SignIn(web.USER).router(), SignIn(web.ADMIN).router()]
