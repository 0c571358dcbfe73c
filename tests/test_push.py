"""Push in the core: one scan registers the device (R05), a challenge shows a number the user
must pick on the device, answers are signed, single-use and expire (S03), and pushes are
rate-limited with a "not me" block (S04)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pam_unified_mfa.core import MFA, Outcome, RequestContext, Step
from pam_unified_mfa.core.push import PushError
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, login

VPN = RequestContext(adapter="radius", client="vpn-gw", service="vpn")


@pytest.fixture
def unified(mfa: MFA) -> MFA:
    mfa.add_admin("boss", roles=("billing",))
    mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    mfa.add_user("alice")
    return mfa


def push_login(mfa: MFA) -> Step:
    step = mfa.begin("alice", VPN)
    assert step.token is not None
    return mfa.answer(step.token, "push", VPN)


def test_r05_one_scan_registers_push_and_the_same_uri_gives_totp(unified: MFA) -> None:
    uri = unified.enroll("alice").uri
    Device(unified, uri)
    kinds = {(f.kind, f.state) for f in unified.show_user("alice").factors}
    assert ("protect_push", "active") in kinds
    assert login(unified, "alice", code_for(unified, uri))


def test_r05_an_enrollment_token_registers_one_device_only(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(PushError, match="used or expired"):
        unified.register_device(device.token, pem)


def test_r05_an_expired_enrollment_token_is_refused(unified: MFA, clock: FakeClock) -> None:
    uri = unified.enroll("alice").uri
    clock.advance(unified.env.seconds(unified.settings.enrollment.token_ttl) + 1)
    with pytest.raises(PushError, match="expired"):
        Device(unified, uri)


def test_s03_push_shows_a_number_that_is_among_the_device_choices(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    assert step.outcome is Outcome.PUSH_PENDING and step.push_number
    assert step.push_number in step.message
    (pending,) = unified.pending_pushes(device.factor_id)
    assert step.push_number in pending.choices and len(pending.choices) == 3
    assert (pending.service, pending.client) == ("vpn", "vpn-gw")


def test_s03_approval_with_the_right_number_accepts_the_login(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    assert device.approve(str(step.push_number)) == "approved"
    assert step.token is not None
    assert unified.poll(step.token, VPN).outcome is Outcome.ACCEPT


def test_s03_approval_with_a_wrong_number_rejects_the_login(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    wrong = next(c for c in unified.pending_pushes(device.factor_id)[0].choices
                 if c != step.push_number)
    assert device.approve(wrong) == "wrong_number"
    assert step.token is not None
    assert unified.poll(step.token, VPN).outcome is Outcome.REJECT


def test_s03_an_approval_is_valid_once(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    signed = device.sign(challenge, "approve", number=step.push_number)
    unified.answer_push(signed)
    with pytest.raises(PushError, match="already answered"):
        unified.answer_push(signed)


def test_s03_an_approval_signed_by_another_key_is_rejected(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    forged = device.sign(challenge, "approve", key=Ed25519PrivateKey.generate(),
                         number=step.push_number)
    with pytest.raises(PushError, match="signature"):
        unified.answer_push(forged)
    assert step.token is not None
    assert unified.poll(step.token, VPN).outcome is Outcome.PUSH_PENDING


def test_s03_an_approval_after_the_deadline_is_rejected(unified: MFA, clock: FakeClock) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    clock.advance(unified.env.seconds(unified.settings.push.timeout) + 1)
    with pytest.raises(PushError, match="expired"):
        unified.answer_push(device.sign(challenge, "approve", number=step.push_number))
    assert step.token is not None
    assert unified.poll(step.token, VPN).outcome is Outcome.REJECT


def test_s03_an_approval_is_for_one_login_only(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    first = push_login(unified)
    second = push_login(unified)
    challenges = unified.pending_pushes(device.factor_id)
    unified.answer_push(device.sign(challenges[0].id, "approve", number=first.push_number))
    assert first.token is not None and second.token is not None
    assert unified.poll(first.token, VPN).outcome is Outcome.ACCEPT
    assert unified.poll(second.token, VPN).outcome is Outcome.PUSH_PENDING


def test_s03_a_denied_push_rejects_the_login(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    assert unified.answer_push(device.sign(challenge, "deny")) == "denied"
    assert step.token is not None
    assert unified.poll(step.token, VPN).outcome is Outcome.REJECT


def test_s04_pushes_per_user_are_rate_limited(unified: MFA) -> None:
    Device(unified, unified.enroll("alice").uri)
    limit = unified.settings.push.max_per_window
    outcomes = [push_login(unified).outcome for _ in range(limit + 1)]
    assert outcomes[:limit] == [Outcome.PUSH_PENDING] * limit
    assert outcomes[limit] is Outcome.PROMPT
    assert any(e.outcome == "rate_limited" for e in unified.audit_tail(50))


def test_s04_the_rate_limit_window_passes(unified: MFA, clock: FakeClock) -> None:
    Device(unified, unified.enroll("alice").uri)
    for _ in range(unified.settings.push.max_per_window):
        push_login(unified)
    clock.advance(unified.env.seconds(unified.settings.push.rate_window) + 1)
    assert push_login(unified).outcome is Outcome.PUSH_PENDING


def test_s04_deny_not_me_is_audited_and_blocks_further_pushes(unified: MFA,
                                                             clock: FakeClock) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    assert unified.answer_push(device.sign(challenge, "deny", not_me=True)) == "denied_not_me"
    assert any(e.outcome == "denied_not_me" for e in unified.audit_tail(20))
    blocked = push_login(unified)
    assert blocked.outcome is Outcome.PROMPT and "blocked" in blocked.message
    clock.advance(unified.env.seconds(unified.settings.push.not_me_block) + 1)
    assert push_login(unified).outcome is Outcome.PUSH_PENDING


def test_s04_a_code_still_works_while_pushes_are_blocked(unified: MFA) -> None:
    uri = unified.enroll("alice").uri
    device = Device(unified, uri)
    push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    unified.answer_push(device.sign(challenge, "deny", not_me=True))
    assert login(unified, "alice", code_for(unified, uri), VPN)


def test_push_answer_iat_from_real_time_is_refused_under_a_frozen_clock(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    stale = jwt.encode({"sub": challenge, "decision": "approve", "iat": int(time.time()) - 10**6},
                       device.key, algorithm="EdDSA", headers={"kid": device.factor_id})
    with pytest.raises(PushError, match="too old"):
        unified.answer_push(stale)


def test_s03_a_forged_answer_is_audited(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    with pytest.raises(PushError):
        unified.answer_push(device.sign(challenge, "approve", key=Ed25519PrivateKey.generate(),
                                        number=step.push_number))
    assert any(e.outcome == "forged" for e in unified.audit_tail(20))


def test_s03_a_replayed_answer_is_audited(unified: MFA) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    signed = device.sign(challenge, "approve", number=step.push_number)
    unified.answer_push(signed)
    with pytest.raises(PushError):
        unified.answer_push(signed)
    assert any(e.outcome == "replayed" for e in unified.audit_tail(20))


def test_s03_a_late_answer_is_audited(unified: MFA, clock: FakeClock) -> None:
    device = Device(unified, unified.enroll("alice").uri)
    step = push_login(unified)
    challenge = unified.pending_pushes(device.factor_id)[0].id
    clock.advance(unified.env.seconds(unified.settings.push.timeout) + 1)
    with pytest.raises(PushError, match="expired"):
        unified.answer_push(device.sign(challenge, "approve", number=step.push_number))
    assert any(e.outcome == "late_answer" for e in unified.audit_tail(20))
