"""The user portal's Security page: see, enroll, finish, reset and delete one's own factors.

Each action is one call of the core, as the user (`actor` = the user, adapter `portal`), so
what is allowed here is what the CLI and the logins allow (R15): the page offers only the
enrollments the core's `enroll_options` names (R05, R08, R13), a reset needs a current Protect
code (R07) and is a swap (R12), deleting the last working factor is refused with the core's
warning (R12). Adding and deleting a factor are sensitive: they need a recent sign-in.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import UserView
from pam_unified_mfa.core.factors import EnrollResult
from pam_unified_mfa.core.policy import PolicyView
from pam_unified_mfa.enrollment_uri import png_data_uri
from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.portal import web
from pam_unified_mfa.portal.view import ENROLL_LABELS, security_view
from pam_unified_mfa.service.errors import one_line, status_of

PORTAL = web.USER
NOTICES = {
    "confirmed": "Your new sign-in method is set up.",
    "deleted": "The sign-in method was removed.",
}
UNIFIED_BANNER = ("Your organisation now uses one Protect enrollment for push approvals and "
                  "codes: one scan of the Protect app sets up both.")

router = APIRouter(prefix=PORTAL.prefix, include_in_schema=False)


async def _page(request: Request, current: web.Visit, *, error: str = "", warning: str = "",
                status: int = 200) -> Response:
    mfa = current.mfa
    name = current.name

    def read() -> tuple[UserView, PolicyView, tuple[str, ...]]:
        return mfa.show_user(name), mfa.policy(), mfa.enroll_options(name)

    view, policy, options = await run_in_threadpool(read)
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return web.render(
        request, current, "security.html", status=status, title="Security", view=view,
        policy=policy, security=security_view(view),
        options=[(kind, ENROLL_LABELS[kind]) for kind in options],
        banner=UNIFIED_BANNER if policy.mode == "unified" else "",
        notice=notice, error=error, warning=warning)


def _failure(exc: UnifiedMFAError) -> tuple[str, int]:
    return one_line(str(exc) or type(exc).__name__), status_of(exc)


def _enrollment(request: Request, current: web.Visit, result: EnrollResult,
                swap: bool) -> Response:
    return web.render(request, current, "enroll.html", title="Set up", qr=png_data_uri(
        result.uri), kind=result.kind, swap=swap, expires_at=result.expires_at)


@router.get("/")
async def security(request: Request) -> Response:
    current = await web.signed_in(request, PORTAL)
    if isinstance(current, Response):
        return current
    return await _page(request, current)


@router.post("/enroll")
async def enroll(request: Request) -> Response:
    """Start an enrollment the core offers; the QR is shown once, in this response."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    kind = web.field(form, "kind", 32) or None
    try:
        result = await run_in_threadpool(lambda: current.mfa.enroll(
            current.name, kind, actor=current.name, ctx=current.context()))
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _page(request, current, error=message, status=status)
    return _enrollment(request, current, result, swap=False)


@router.post("/enroll/confirm")
async def confirm(request: Request) -> Response:
    """Finish a pending enrollment with the first code the app shows (R12: a reset's swap
    happens here)."""
    posted = await web.posted(request, PORTAL)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    code = web.field(form, "code", 64).strip()
    accepted = bool(code) and await run_in_threadpool(lambda: current.mfa.confirm_enrollment(
        current.name, code, ctx=current.context()))
    if not accepted:
        return await _page(request, current, status=400,
                           error="That code did not finish the setup. Enter the code the "
                                 "newly set up app shows now.")
    return web.redirect(request, current, PORTAL.path("?notice=confirmed"))


@router.get("/reset")
async def reset_form(request: Request) -> Response:
    current = await web.signed_in(request, PORTAL)
    if isinstance(current, Response):
        return current
    return web.render(request, current, "reset.html", title="Reset", error="",
                      factor=request.query_params.get("factor", "")[:64])


@router.post("/reset")
async def reset(request: Request) -> Response:
    """The user's own reset: a current Protect code proves possession (R07); the new QR is
    shown once, and the old factors work until its first code (R12)."""
    posted = await web.posted(request, PORTAL)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    code = web.field(form, "code", 64).strip()
    factor = web.field(form, "factor", 64) or None
    try:
        result = await run_in_threadpool(lambda: current.mfa.reset_by_user(
            current.name, code, factor, ctx=current.context()))
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return web.render(request, current, "reset.html", status=status, title="Reset",
                          error=message, factor=factor or "")
    return _enrollment(request, current, result, swap=True)


@router.get("/factors/{factor_id}/delete")
async def delete_form(request: Request, factor_id: str) -> Response:
    current = await web.signed_in(request, PORTAL)
    if isinstance(current, Response):
        return current
    return web.render(request, current, "delete.html", title="Remove", factor=factor_id[:64])


@router.post("/factors/{factor_id}/delete")
async def delete(request: Request, factor_id: str) -> Response:
    """Refused by the core when it is the last working factor (R12): the page shows why."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, _ = posted
    try:
        await run_in_threadpool(lambda: current.mfa.delete_factor(
            current.name, factor_id[:64], actor=current.name, ctx=current.context()))
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _page(request, current, warning=message, status=status)
    return web.redirect(request, current, PORTAL.path("?notice=deleted"))
