"""The purge of expired rows (core/housekeeping.py): what has expired goes, what a login may
still use stays, and the audit trail is never touched."""

from __future__ import annotations

from sqlalchemy import func, select

from pam_unified_mfa.core import MFA, Outcome, RequestContext
from pam_unified_mfa.core.housekeeping import PUSH_RETENTION
from pam_unified_mfa.store.models import AdminToken, AuditRecord, Base, Dialogue, PushChallenge
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed

CTX = RequestContext(adapter="pam", client="198.51.100.7", service="ssh")


def rows(mfa: MFA, model: type[Base]) -> int:
    with mfa.store.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_abandoned_dialogue_is_purged_and_a_live_one_still_logs_in(
        mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    mfa.begin("alice", CTX)  # the user hangs up
    clock.advance(mfa.env.seconds(mfa.settings.dialogue.ttl) + 1)
    live = mfa.begin("alice", CTX)
    assert mfa.purge_expired() == {"dialogues": 1}
    assert rows(mfa, Dialogue) == 1
    assert live.token is not None
    assert mfa.answer(live.token, code_for(mfa, uri), CTX).outcome is Outcome.ACCEPT


def test_a_push_request_is_kept_a_day_after_it_expired_then_purged(
        mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    Device(mfa, mfa.enroll("alice", "push").uri)
    step = mfa.begin("alice", CTX)
    assert step.token is not None
    mfa.answer(step.token, "push", CTX)
    clock.advance(mfa.env.seconds(mfa.settings.push.timeout) + PUSH_RETENTION - 60)
    mfa.purge_expired()
    assert rows(mfa, PushChallenge) == 1  # still counted by the push rate limit's window
    clock.advance(120)
    assert mfa.purge_expired().get("push_challenges") == 1
    assert rows(mfa, PushChallenge) == 0


def test_an_expired_admin_token_is_purged_and_a_valid_one_kept(
        mfa: MFA, clock: FakeClock) -> None:
    mfa.add_admin("root")
    mfa.issue_admin_token("root", ttl_seconds=60)
    clock.advance(120)
    mfa.issue_admin_token("root", ttl_seconds=3600)
    assert mfa.purge_expired() == {"admin_tokens": 1}
    assert rows(mfa, AdminToken) == 1


def test_the_purge_never_touches_the_audit_trail(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    mfa.begin("alice", CTX)
    before = rows(mfa, AuditRecord)
    clock.advance(10 * PUSH_RETENTION)
    mfa.purge_expired()
    assert rows(mfa, AuditRecord) == before
