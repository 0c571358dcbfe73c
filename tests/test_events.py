"""The core tells its host about pushes only after the change is committed, so a woken
long-poll always finds it in the store; and writes an audit record's log line only then, so
the log says what the audit table says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from pam_unified_mfa.core import MFA, Outcome, RequestContext, audit
from tests.conftest import FakeClock
from tests.helpers import Device

VPN = RequestContext(adapter="radius", client="gw")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.mfa: MFA | None = None

    def push_created(self, account_id: str, push_id: str) -> None:
        assert self.mfa is not None
        # Visible from a fresh transaction: the event comes after the commit.
        with self.mfa.store.session() as session:
            assert session.execute(
                text("SELECT status FROM push_challenges WHERE id = :i"),
                {"i": push_id}).scalar() == "pending"
        self.seen.append(("created", account_id))

    def push_decided(self, dialogue_id: str) -> None:
        self.seen.append(("decided", dialogue_id))


def test_push_created_and_decided_are_announced_after_commit(
    home: Path, store_url: str, clock: FakeClock,
) -> None:
    recorder = Recorder()
    mfa = MFA.open(home, store=store_url, clock=clock, events=recorder)
    recorder.mfa = mfa
    mfa.add_user("alice")
    device = Device(mfa, mfa.enroll("alice", "push").uri)
    step = mfa.begin("alice", VPN)
    assert step.token is not None
    pending = mfa.answer(step.token, "push", VPN)
    assert pending.outcome is Outcome.PUSH_PENDING and pending.wait_key
    assert [kind for kind, _ in recorder.seen] == ["created"]
    device.approve(str(pending.push_number))
    assert recorder.seen[-1] == ("decided", pending.wait_key)
    mfa.close()


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "unified_mfa.audit"]


def test_an_audit_line_is_logged_once_its_record_is_committed(
    home: Path, store_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "unified_mfa.audit")
    mfa = MFA.open(home, store=store_url, clock=clock)
    with mfa.store.session() as session:
        audit.record(session, clock(), actor="boss", action="user.add", subject="alice",
                     outcome="created", ctx=VPN)
        assert audit_lines(caplog) == []  # not while the transaction holds the write lock
    assert audit_lines(caplog) == [
        "action=user.add outcome=created actor=boss subject=alice adapter=radius client=gw "
        "detail={}"]
    mfa.close()


def test_an_audit_record_rolled_back_is_neither_stored_nor_logged(
    home: Path, store_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "unified_mfa.audit")
    mfa = MFA.open(home, store=store_url, clock=clock)
    with pytest.raises(RuntimeError), mfa.store.session() as session:
        audit.record(session, clock(), actor="boss", action="user.add", subject="alice",
                     outcome="created", ctx=VPN)
        raise RuntimeError("the change after it failed")
    assert audit_lines(caplog) == []
    with mfa.store.session() as session:
        assert audit.tail(session, 10) == []
    mfa.close()
