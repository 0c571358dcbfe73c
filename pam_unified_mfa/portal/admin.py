"""The admin portal's MFA Configurations: policy (merge, separate, TOTP source), users, help.

Every change is the core's, made as the signed-in admin (adapter `portal`, audited): merge and
separate need the billing role (R02, checked by the core; the page only greys out what
`admin_may` says is not allowed), and every policy change is two-step (R03): the first POST
shows the core's preview (what will change, for how many users, its warnings) and the Confirm
button posts the confirmation back. Admin resets and bypass codes are the core's too. Every
change needs a recent sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import UserView
from pam_unified_mfa.core.accounts import AdminView
from pam_unified_mfa.core.policy import PolicyView
from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.portal import web
from pam_unified_mfa.portal.view import factor_summary, security_view
from pam_unified_mfa.service.errors import one_line, status_of

PORTAL = web.ADMIN
ACTIONS = {"merge": "Merge", "separate": "Separate", "totp_source": "Change the TOTP source"}
NOTICES = {
    "merge": "Merged: push and TOTP are now one Protect enrollment for new enrollments.",
    "separate": "Separated: push and TOTP are managed apart again.",
    "totp_source": "The TOTP source for new enrollments was changed.",
    "reset": "The user's factors were reset; they enroll again at their next sign-in.",
    "cancelled": "Nothing was changed.",
}
MERGE_OFFER = ("Merge push and TOTP into one Protect enrollment: users scan one QR code for "
               "both, and nobody is interrupted.")

router = APIRouter(prefix=PORTAL.prefix, include_in_schema=False)


@dataclass(frozen=True)
class Overview:
    me: AdminView
    policy: PolicyView
    users: list[UserView]
    may_merge: bool
    may_separate: bool


def _failure(exc: UnifiedMFAError) -> tuple[str, int]:
    return one_line(str(exc) or type(exc).__name__), status_of(exc)


async def _overview(request: Request, current: web.Visit, *, error: str = "",
                    status: int = 200) -> Response:
    mfa = current.mfa
    name = current.name

    def read() -> Overview:
        return Overview(mfa.show_admin(name), mfa.policy(), mfa.list_users(),
                        mfa.admin_may(name, "merge"), mfa.admin_may(name, "separate"))

    data = await run_in_threadpool(read)
    return web.render(
        request, current, "admin.html", status=status, title="MFA Configurations", data=data,
        summary=factor_summary, offer=MERGE_OFFER if data.policy.mode == "separated" else "",
        notice=NOTICES.get(request.query_params.get("notice", ""), ""), error=error)


@router.get("/")
async def configurations(request: Request) -> Response:
    current = await web.signed_in(request, PORTAL)
    if isinstance(current, Response):
        return current
    return await _overview(request, current)


@router.post("/policy/preview")
async def preview(request: Request) -> Response:
    """Step one (R03): the core states what will change and hands out a confirmation."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    action = web.field(form, "action", 32)
    argument = web.field(form, "argument", 32)
    try:
        result = await run_in_threadpool(current.mfa.preview, current.name, action, argument,
                                         current.context())
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _overview(request, current, error=message, status=status)
    return web.render(request, current, "confirm.html", title=ACTIONS.get(action, action),
                      preview=result, label=ACTIONS.get(action, action))


@router.post("/policy/confirm")
async def confirm(request: Request) -> Response:
    """Step two (R03): apply exactly what was previewed, with its confirmation."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    if web.field(form, "decision", 16) != "confirm":
        return web.redirect(request, current, PORTAL.path("?notice=cancelled"))
    action = web.field(form, "action", 32)
    try:
        await run_in_threadpool(current.mfa.confirm, current.name,
                                web.field(form, "confirmation", 256), current.context())
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _overview(request, current, error=message, status=status)
    notice = action if action in NOTICES else "totp_source"
    return web.redirect(request, current, PORTAL.path(f"?notice={notice}"))


async def _user_page(request: Request, current: web.Visit, name: str, *, error: str = "",
                     codes: list[str] | None = None, status: int = 200) -> Response:
    try:
        view = await run_in_threadpool(current.mfa.show_user, name)
    except UnifiedMFAError as exc:
        message, code = _failure(exc)
        return await _overview(request, current, error=message, status=code)
    return web.render(request, current, "admin_user.html", status=status, title=view.name,
                      view=view, security=security_view(view), error=error, codes=codes or [],
                      notice=NOTICES.get(request.query_params.get("notice", ""), ""))


@router.get("/users/{name}")
async def user(request: Request, name: str) -> Response:
    current = await web.signed_in(request, PORTAL)
    if isinstance(current, Response):
        return current
    return await _user_page(request, current, name[:255])


@router.post("/users/{name}/reset")
async def reset(request: Request, name: str) -> Response:
    """An admin reset (R07, R12): retired now, the user enrolls at their next sign-in."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    factor = web.field(form, "factor", 64) or None
    try:
        await run_in_threadpool(lambda: current.mfa.reset_by_admin(
            name, current.name, factor, ctx=current.context()))
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _user_page(request, current, name, error=message, status=status)
    return web.redirect(request, current, PORTAL.path(f"users/{name}?notice=reset"))


@router.post("/users/{name}/bypass")
async def bypass(request: Request, name: str) -> Response:
    """Single-use bypass codes, shown once on this response and never again."""
    posted = await web.posted(request, PORTAL, fresh=True)
    if isinstance(posted, Response):
        return posted
    current, form = posted
    count = web.field(form, "count", 4)
    try:
        codes = await run_in_threadpool(lambda: current.mfa.issue_bypass(
            name, current.name, int(count) if count.isdigit() else 1, ctx=current.context()))
    except UnifiedMFAError as exc:
        message, status = _failure(exc)
        return await _user_page(request, current, name, error=message, status=status)
    return await _user_page(request, current, name, codes=codes)
