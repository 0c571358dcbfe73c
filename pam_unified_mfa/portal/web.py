"""What every portal page shares: the two portals, the request's visit (cookie, session,
CSRF), rendering with Jinja2, security headers and redirects.

Pages are server-rendered HTML forms; no page needs JavaScript. Every response carries a
strict Content-Security-Policy (styles from our own static file, images only inline QR
codes, forms only to ourselves, no framing) and `Cache-Control: no-store`, since pages show
factor state and, once, enrollment QR codes and bypass codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.portal.sessions import (
    Sessions,
    SessionState,
    csrf_matches,
    csrf_token,
    new_token,
)
from pam_unified_mfa.service.runtime import Runtime, peer


@dataclass(frozen=True)
class Portal:
    """One of the two portals: where it lives, its cookie, and its name in the audit trail."""

    kind: str  # "user" | "admin": which accounts sign in (the core's `begin` kind)
    prefix: str
    cookie: str
    service: str
    title: str

    @property
    def home(self) -> str:
        return self.prefix + "/"

    def path(self, rest: str) -> str:
        return f"{self.prefix}/{rest.lstrip('/')}"


USER = Portal("user", "/portal", "umfa_portal", "user portal", "Security")
ADMIN = Portal("admin", "/admin", "umfa_admin", "admin portal", "MFA Configurations")

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=PackageLoader("pam_unified_mfa.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True, lstrip_blocks=True,
)


def runtime_of(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value


def sessions_of(request: Request) -> Sessions:
    """One `Sessions` per application, made on first use (the app is built before its core)."""
    state = request.app.state
    if getattr(state, "portal_sessions", None) is None:
        state.portal_sessions = Sessions(runtime_of(request).mfa)
    value: Sessions = state.portal_sessions
    return value


@dataclass
class Visit:
    """One request's view of its browser: the cookie token and the session it names.

    `cookie_out` is the token to set on the response: a fresh anonymous one for a browser
    without a cookie, or the new token after sign-in, or "" to clear it.
    """

    portal: Portal
    mfa: MFA
    sessions: Sessions
    token: str
    state: SessionState | None
    client: str
    cookie_out: str | None = None

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    @property
    def name(self) -> str:
        assert self.state is not None
        return self.state.name

    @property
    def signed_in(self) -> bool:
        return self.state is not None and self.state.signed_in

    def context(self) -> RequestContext:
        """The core's view of this request. A portal manages MFA itself, so an unreachable store
        never lets anyone in, whatever the organisation's fail mode (S07: `secure`)."""
        return RequestContext(adapter="portal", client=self.client,
                              service=self.portal.service, fail_mode="secure")

    def replace_token(self, token: str) -> None:
        self.token = token
        self.cookie_out = token


async def visit(request: Request, portal: Portal) -> Visit:
    """Who is asking: read the cookie and its session (404 when `[portal] enabled = false`)."""
    sessions = sessions_of(request)
    if not sessions.mfa.settings.portal.enabled:
        raise HTTPException(404, "Not Found")
    token = request.cookies.get(portal.cookie, "")
    state = await run_in_threadpool(sessions.load, portal.kind, token) if token else None
    current = Visit(portal, sessions.mfa, sessions, token, state, peer(request))
    if not token:
        current.replace_token(new_token())
    return current


async def csrf_ok(request: Request, current: Visit) -> tuple[bool, Mapping[str, Any]]:
    """Read the posted form and check its CSRF token against the cookie (constant time)."""
    form = await request.form()
    offered = form.get("csrf")
    has_cookie = bool(request.cookies.get(current.portal.cookie))
    valid = has_cookie and isinstance(offered, str) and csrf_matches(current.token, offered)
    return valid, form


async def posted(request: Request, portal: Portal, *,
                 fresh: bool = False) -> tuple[Visit, Mapping[str, Any]] | Response:
    """A form posted from a signed-in session with its CSRF token: the visit and the form, or
    the response that ends the request (sign in again, or refused)."""
    current = await signed_in(request, portal, fresh=fresh)
    if isinstance(current, Response):
        return current
    valid, form = await csrf_ok(request, current)
    if not valid:
        return refused(request, current)
    return current, form


def field(form: Mapping[str, Any], name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def secure_cookie(request: Request) -> bool:
    """Secure when the public URL is https: plain http is for loopback and tests only."""
    return urlsplit(runtime_of(request).mfa.settings.public_url).scheme == "https"


def finish(request: Request, current: Visit, response: Response) -> Response:
    """Security headers on every page, and the cookie when it changed."""
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    if current.cookie_out is not None:
        if current.cookie_out:
            response.set_cookie(current.portal.cookie, current.cookie_out,
                                path=current.portal.prefix, secure=secure_cookie(request),
                                httponly=True, samesite="strict")
        else:
            response.delete_cookie(current.portal.cookie, path=current.portal.prefix,
                                   secure=secure_cookie(request), httponly=True,
                                   samesite="strict")
    return response


def render(request: Request, current: Visit, template: str, status: int = 200,
           **values: Any) -> Response:
    html = templates.get_template(template).render(
        portal=current.portal, csrf=current.csrf, signed_in=current.signed_in,
        user=current.state.name if current.signed_in and current.state else None, **values)
    return finish(request, current, HTMLResponse(html, status_code=status))


def redirect(request: Request, current: Visit, path: str) -> Response:
    """303: after a POST the browser GETs the result, so a reload never posts twice."""
    return finish(request, current, RedirectResponse(path, status_code=303))


def refused(request: Request, current: Visit) -> Response:
    """A form posted without its token, or with another session's (CSRF): nothing is done."""
    return render(request, current, "message.html", status=403, title="Form refused",
                  message="This form was not sent by this page, or it has expired. Go back, "
                          "reload the page and try again.")


def safe_next(portal: Portal, value: str) -> str:
    """Only a path inside the same portal may follow sign-in (no open redirect)."""
    if value.startswith(portal.prefix + "/") and not value.startswith("//") and \
            "\\" not in value and all(0x21 <= ord(ch) <= 0x7E for ch in value):
        return value[:255]
    return portal.home


async def signed_in(request: Request, portal: Portal, *, fresh: bool = False) -> Visit | Response:
    """The visit of a signed-in session, or the redirect to sign in.

    `fresh`: a sensitive action, allowed only within `[portal] reauth_window` of the last
    password + MFA; otherwise the browser is sent to sign in again (the form is then sent
    again by the user, knowingly)."""
    current = await visit(request, portal)
    if not current.signed_in or current.state is None:
        return redirect(request, current, portal.path("login"))
    if fresh and not current.sessions.fresh(current.state):
        return redirect(request, current, portal.path("login?reauth=1"))
    return current
