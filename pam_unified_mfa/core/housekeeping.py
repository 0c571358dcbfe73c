"""Removing rows whose use has passed, so that the store grows with the users, not with time.

A user who hangs up leaves a dialogue; every push leaves a request; confirmations, enrollment
tokens, admin tokens, portal sessions and RADIUS replies all expire. None of them is needed
after its expiry — what happened is in the audit trail, which is never purged here — except
push requests, which the push rate limit (S04) counts over `push.rate_window`: they are kept
for a day after they expire, or for the rate window if that is longer.

Any node may purge at any time: the deletions are idempotent, and each takes only rows past
their expiry, which no login can still use.
"""

from __future__ import annotations

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from pam_unified_mfa.core.env import Env
from pam_unified_mfa.store.models import (
    AdminToken,
    Confirmation,
    Dialogue,
    EnrollmentToken,
    PortalSession,
    PushChallenge,
    RadiusReply,
    UsedAssertion,
)

PUSH_RETENTION = 86400.0  # seconds a push request is kept after it expired


def purge(session: Session, env: Env) -> dict[str, int]:
    """Delete what has expired; how many rows of each table went (tables with none omitted)."""
    now = env.clock()
    keep_pushes = max(PUSH_RETENTION, env.seconds(env.settings.push.rate_window))
    statements = {
        "dialogues": delete(Dialogue).where(
            Dialogue.expires_at < now,
            or_(Dialogue.push_deadline.is_(None), Dialogue.push_deadline < now)),
        "push_challenges": delete(PushChallenge).where(
            PushChallenge.expires_at < now - keep_pushes),
        "confirmations": delete(Confirmation).where(Confirmation.expires_at < now),
        "enrollment_tokens": delete(EnrollmentToken).where(EnrollmentToken.expires_at < now),
        "admin_tokens": delete(AdminToken).where(AdminToken.expires_at < now),
        "portal_sessions": delete(PortalSession).where(PortalSession.expires_at < now),
        "radius_replies": delete(RadiusReply).where(RadiusReply.expires_at < now),
        "used_assertions": delete(UsedAssertion).where(UsedAssertion.expires_at < now),
    }
    removed: dict[str, int] = {}
    for table, statement in statements.items():
        result = session.execute(statement.execution_options(synchronize_session=False))
        count: int = result.rowcount  # type: ignore[attr-defined]
        if count:
            removed[table] = count
    return removed
