"""Small helpers the tests share: reading a secret from an enrollment URI, making codes."""

from __future__ import annotations

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, Outcome
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.factors import EnrollResult
from pam_unified_mfa.enrollment_uri import parse_uri


def secret_of(uri: str) -> str:
    enrollment = parse_uri(uri)
    assert enrollment.totp_secret is not None
    return enrollment.totp_secret


def code_for(mfa: MFA, uri_or_secret: str, offset_steps: int = 0) -> str:
    """The code an authenticator shows at the core's current time (plus whole steps)."""
    secret = secret_of(uri_or_secret) if "://" in uri_or_secret else uri_or_secret
    params = mfa.settings.totp.params()
    return totp.code_at(secret, params, mfa.env.clock() + offset_steps * params.period)


def login(mfa: MFA, user: str, code: str, ctx: RequestContext | None = None) -> bool:
    """One adapter-style login with a code; True when accepted."""
    step = mfa.authenticate_code(user, code, ctx or RequestContext())
    return step.outcome is Outcome.ACCEPT


def enroll_confirmed(mfa: MFA, user: str, kind: str | None = None) -> EnrollResult:
    """Enroll and prove the first code, as a user scanning the QR would; returns the result."""
    result = mfa.enroll(user, kind)
    if "secret=" in result.uri:
        assert login(mfa, user, code_for(mfa, result.uri))
        # Move to the next step so the test's next code is not a replay of this one (S01).
        mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    return result
