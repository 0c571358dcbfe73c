"""Portal sessions: a random cookie, its hash in the store, and the CSRF token derived from it.

A session lives in the store, not in the cookie, so every node of a cluster sees it, signing
out ends it everywhere, and idle and absolute expiry are decided on the server. The cookie
holds 32 random bytes; the store keeps their SHA-256 only. A browser without a session still
gets a cookie (an anonymous one, with no row): its token is what the sign-in form's CSRF token
is derived from, so even the first form cannot be posted from another site.

Every step up — password and MFA done, or a new sign-in — issues a new cookie and drops the
old row, so a token planted before sign-in (session fixation) is worth nothing after it.
While the MFA dialogue runs, its single-use token and the enrollment URI (which holds a TOTP
seed) are sealed with the store's key in `pending`; what the page shows of the step is plain.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from pam_unified_mfa.core import MFA
from pam_unified_mfa.store.models import PortalSession

TOKEN_BYTES = 32
MFA_STAGE_SECONDS = 600.0  # a sign-in in progress: enough for a push and an enrollment scan
TOUCH_EVERY = 30.0  # seconds: idle tracking without a write on every request
_CSRF_LABEL = b"unified-mfa portal csrf v1"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The form token of a cookie: an HMAC keyed by the cookie, so only a page that could read
    the cookie's session could have it, and nothing needs storing."""
    digest = hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_matches(token: str, offered: str) -> bool:
    """Constant-time comparison of a posted form token with the cookie's."""
    return hmac.compare_digest(csrf_token(token).encode(), offered.encode())


@dataclass(frozen=True)
class SessionState:
    """A session as a request sees it; `pending` is unsealed only when a handler needs it."""

    portal: str
    name: str
    stage: str
    step: dict[str, Any] = field(default_factory=dict)
    next_path: str = ""
    authenticated_at: float | None = None
    pending: dict[str, str] | None = None

    @property
    def signed_in(self) -> bool:
        return self.stage == "ok"


class Sessions:
    """Session rows of one core's store; every method is one short transaction (blocking)."""

    def __init__(self, mfa: MFA) -> None:
        self.mfa = mfa

    @property
    def _now(self) -> float:
        return self.mfa.env.clock()

    def _seconds(self, duration: str) -> float:
        return self.mfa.settings.seconds(duration)

    def _seal(self, sid: str, pending: dict[str, str] | None) -> str | None:
        if pending is None:
            return None
        return self.mfa.env.keyring.encrypt(json.dumps(pending).encode(), f"portal_session:{sid}")

    def _open(self, sid: str, sealed: str | None) -> dict[str, str] | None:
        if sealed is None:
            return None
        value: dict[str, str] = json.loads(
            self.mfa.env.keyring.decrypt(sealed, f"portal_session:{sid}"))
        return value

    def load(self, portal: str, token: str) -> SessionState | None:
        """The live session of this cookie, or None (unknown, other portal, idle or expired:
        an expired row is removed on the way)."""
        if not token:
            return None
        sid = session_id(token)
        now = self._now
        idle = self._seconds(self.mfa.settings.portal.session_idle)
        with self.mfa.store.session() as s:
            row = s.get(PortalSession, sid)
            if row is None or row.portal != portal:
                return None
            if row.expires_at <= now or (row.stage == "ok" and row.last_seen + idle <= now):
                s.delete(row)
                return None
            if now - row.last_seen >= TOUCH_EVERY:
                row.last_seen = now
            return SessionState(
                portal=row.portal, name=row.name, stage=row.stage,
                step=json.loads(row.step) if row.step else {}, next_path=row.next_path,
                authenticated_at=row.authenticated_at, pending=self._open(sid, row.pending))

    def start_mfa(self, portal: str, old_token: str, name: str, next_path: str,
                  step: dict[str, Any], pending: dict[str, str] | None) -> str:
        """Password done: a new session in the MFA stage replaces whatever the cookie had."""
        token = new_token()
        sid = session_id(token)
        now = self._now
        with self.mfa.store.session() as s:
            self._drop(s, old_token, now)
            s.add(PortalSession(
                id=sid, portal=portal, name=name, stage="mfa", step=json.dumps(step),
                pending=self._seal(sid, pending), next_path=next_path, created_at=now,
                last_seen=now, authenticated_at=None, expires_at=now + MFA_STAGE_SECONDS))
        return token

    def update_mfa(self, token: str, step: dict[str, Any],
                   pending: dict[str, str] | None) -> None:
        sid = session_id(token)
        with self.mfa.store.session() as s:
            row = s.get(PortalSession, sid)
            if row is not None and row.stage == "mfa":
                row.step, row.pending = json.dumps(step), self._seal(sid, pending)
                row.last_seen = self._now

    def sign_in(self, portal: str, old_token: str, name: str) -> str:
        """Password and MFA done: a fresh cookie for a signed-in session."""
        token = new_token()
        now = self._now
        absolute = self._seconds(self.mfa.settings.portal.session_absolute)
        with self.mfa.store.session() as s:
            self._drop(s, old_token, now)
            s.add(PortalSession(
                id=session_id(token), portal=portal, name=name, stage="ok", step="",
                pending=None, next_path="", created_at=now, last_seen=now,
                authenticated_at=now, expires_at=now + absolute))
        return token

    def end(self, token: str) -> None:
        with self.mfa.store.session() as s:
            self._drop(s, token, self._now)

    @staticmethod
    def _drop(s: Session, token: str, now: float) -> None:
        """Remove this cookie's row, and any row past its absolute expiry (housekeeping)."""
        ids = [session_id(token)] if token else []
        s.execute(delete(PortalSession).where(or_(PortalSession.id.in_(ids),
                                                  PortalSession.expires_at <= now))
                  .execution_options(synchronize_session=False))

    def fresh(self, state: SessionState) -> bool:
        """Whether the last password + MFA is recent enough for a sensitive action."""
        window = self._seconds(self.mfa.settings.portal.reauth_window)
        return state.authenticated_at is not None and self._now - state.authenticated_at <= window
