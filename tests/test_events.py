"""The core tells its host about pushes only after the change is committed, so a woken
long-poll always finds it in the store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from pam_unified_mfa.core import MFA, Outcome, RequestContext
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
