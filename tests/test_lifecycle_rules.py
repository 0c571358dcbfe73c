"""Factor lifecycle across policy changes: R09-R15 of the product rules, through the `MFA` facade.

What this file specifies:
- R09: a third-party TOTP enrolled before the switch to Protect TOTP keeps working until the user's
  own Protect reset is confirmed; that reset retires it.
- R10: a merge migrates registered push devices into the unified Protect enrollment, sends them
  their TOTP and a migration notice over the device channel, and is counted and audited.
- R11: separate splits unified enrollments into independent factors, warns, and never leaves a
  user without a working factor.
- R12: no self-inflicted lock-out; a user's reset is a swap; an admin reset means "enroll at next
  login" within a short window.
- R13: any enrolled factor logs in; the unified QR is suggested, not forced; enforcement decides
  what a user without a factor gets (user setting, else strictest group, else organisation).
- R14: an admin without a linked user is TOTP-only and always required; a linked admin shares the
  user's factors and enforcement.
- R15: what `show_user` (and the CLI) report is exactly what the login accepts.

Where a rule needs a registered push device, a `Device` registers from the enrollment URI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pam_unified_mfa.cli.main import main as cli_main
from pam_unified_mfa.core import MFA, Outcome, RequestContext, UserView
from pam_unified_mfa.core.factors import FactorView
from pam_unified_mfa.core.policy import MIGRATED_NOTICE, Preview
from pam_unified_mfa.core.push import PushError
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.errors import LockoutRefused, PolicyViolation
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed, login

CTX = RequestContext()
DAY = 24 * 3600


# -- helpers ------------------------------------------------------------------------------------


def _boss(mfa: MFA) -> None:
    mfa.add_admin("boss", roles=("billing",))


def _change(mfa: MFA, action: str, argument: str = "") -> Preview:
    """Both steps of a policy change, as the billing admin `boss`."""
    preview = mfa.preview("boss", action, argument)
    mfa.confirm("boss", preview.confirmation)
    return preview


def _factors(view: UserView, kind: str, state: str = "active") -> list[FactorView]:
    return [f for f in view.factors if f.kind == kind and f.state == state]


def _ids(view: UserView) -> set[str]:
    return {f.id for f in view.factors}


def _admin_login(mfa: MFA, name: str, code: str) -> bool:
    """A login to an admin console: the admin's own account, not a user's."""
    step = mfa.begin(name, CTX, kind="admin")
    if step.finished or step.token is None:
        return step.outcome is Outcome.ACCEPT
    return mfa.answer(step.token, code, CTX).outcome is Outcome.ACCEPT


def _third_party_then_protect(mfa: MFA, user: str, via: str) -> tuple[str, str, str]:
    """A user enrolls a third-party TOTP, the org switches to Protect TOTP, the user enrolls it.

    `via` is "totp_source" (separated mode, source back to protect) or "merge". Returns the
    third-party URI, the Protect URI and the third-party factor id.
    """
    _change(mfa, "totp_source", "third_party")
    third = enroll_confirmed(mfa, user)
    assert third.kind == "third_party_totp"
    if via == "merge":
        _change(mfa, "merge")
    else:
        _change(mfa, "totp_source", "protect")
    protect = enroll_confirmed(mfa, user)
    assert protect.kind == ("unified" if via == "merge" else "totp")
    return third.uri, protect.uri, third.factor_ids[0]


def _push_only_user(mfa: MFA, user: str) -> str:
    """A separated-mode user whose only factor is a registered push device; returns its id."""
    mfa.add_user(user)
    return Device(mfa, mfa.enroll(user, "push").uri).factor_id


def _unified_user(mfa: MFA, user: str) -> tuple[str, str, str]:
    """A user scanned the unified QR (TOTP confirmed) and the device registered for push.

    The organisation must already be unified. Returns (uri, push id, totp id).
    """
    mfa.add_user(user)
    result = enroll_confirmed(mfa, user)
    assert result.kind == "unified"
    push_id, totp_id = result.factor_ids
    assert Device(mfa, result.uri).factor_id == push_id
    return result.uri, push_id, totp_id


# -- R09: third-party TOTP lives until the Protect reset --------------------------------------


@pytest.mark.parametrize("via", ["totp_source", "merge"])
def test_r09_third_party_code_keeps_working_after_protect_enrollment(
    mfa: MFA, clock: FakeClock, via: str,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    third_uri, protect_uri, third_id = _third_party_then_protect(mfa, "alice", via)
    assert login(mfa, "alice", code_for(mfa, third_uri))
    assert login(mfa, "alice", code_for(mfa, protect_uri))
    assert [f.id for f in _factors(mfa.show_user("alice"), "third_party_totp")] == [third_id]


@pytest.mark.parametrize("via", ["totp_source", "merge"])
def test_r09_third_party_code_still_works_while_protect_reset_is_unconfirmed(
    mfa: MFA, clock: FakeClock, via: str,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    third_uri, protect_uri, _ = _third_party_then_protect(mfa, "alice", via)
    mfa.reset_by_user("alice", code_for(mfa, protect_uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, third_uri))


@pytest.mark.parametrize("via", ["totp_source", "merge"])
def test_r09_confirmed_protect_reset_retires_third_party_totp(
    mfa: MFA, clock: FakeClock, via: str,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    third_uri, protect_uri, third_id = _third_party_then_protect(mfa, "alice", via)
    replacement = mfa.reset_by_user("alice", code_for(mfa, protect_uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, replacement.uri))  # first code confirms the swap
    clock.advance(30)
    assert not login(mfa, "alice", code_for(mfa, third_uri))
    view = mfa.show_user("alice")
    assert third_id not in _ids(view)
    assert _factors(view, "third_party_totp") == []
    confirms = [e for e in mfa.audit_tail(200) if e.action == "factor.confirm"]
    assert third_id in str(confirms[-1].detail.get("retired"))


def test_r09_third_party_totp_survives_an_unrelated_protect_enrollment_expiring(
    mfa: MFA, clock: FakeClock,
) -> None:
    """A Protect scan never confirmed changes nothing: the third-party app keeps working."""
    _boss(mfa)
    mfa.add_user("alice")
    _change(mfa, "totp_source", "third_party")
    third = enroll_confirmed(mfa, "alice")
    _change(mfa, "totp_source", "protect")
    mfa.enroll("alice")  # a Protect TOTP, never scanned
    clock.advance(DAY + 60)
    assert login(mfa, "alice", code_for(mfa, third.uri))


# -- R10: merge migrates push devices -----------------------------------------------------------


def test_r10_merge_gives_push_device_a_unified_protect_totp(mfa: MFA) -> None:
    _boss(mfa)
    push_id = _push_only_user(mfa, "alice")
    result = mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    assert result["migrated"] == 1
    view = mfa.show_user("alice")
    [push] = _factors(view, "protect_push")
    [totp_factor] = _factors(view, "protect_totp")
    assert push.id == push_id
    assert push.unified and totp_factor.unified
    assert push.enrollment == totp_factor.enrollment
    assert view.on_unified


def test_r10_merge_sends_totp_and_notice_over_the_device_channel(mfa: MFA) -> None:
    _boss(mfa)
    push_id = _push_only_user(mfa, "alice")
    _change(mfa, "merge")
    [message] = mfa.device_messages(push_id)
    assert message["kind"] == "migrated"
    payload = json.loads(message["payload"])
    assert payload["notice"] == MIGRATED_NOTICE
    assert "migrated" in payload["notice"]
    assert payload["totp_uri"].startswith("otpauth://totp/")
    delivered = parse_uri(payload["totp_uri"])
    assert delivered.totp_secret is not None
    assert delivered.account == "alice"


def test_r10_totp_delivered_by_the_merge_logs_in(mfa: MFA) -> None:
    _boss(mfa)
    push_id = _push_only_user(mfa, "alice")
    _change(mfa, "merge")
    uri = json.loads(mfa.device_messages(push_id)[0]["payload"])["totp_uri"]
    assert login(mfa, "alice", code_for(mfa, uri))


def test_r10_merge_preview_counts_push_devices_to_migrate(mfa: MFA) -> None:
    _boss(mfa)
    _push_only_user(mfa, "alice")
    mfa.add_user("bob")
    enroll_confirmed(mfa, "bob")  # Protect TOTP only: nothing to migrate
    preview = mfa.preview("boss", "merge")
    assert preview.counts["push_to_migrate"] == 1
    assert preview.counts["protect_totp_only"] == 1
    assert any("1 push device" in w for w in preview.warnings)


def test_r10_each_migrated_device_is_audited(mfa: MFA) -> None:
    _boss(mfa)
    push_id = _push_only_user(mfa, "alice")
    _change(mfa, "merge")
    migrations = [e for e in mfa.audit_tail(200) if e.action == "factor.migrate"]
    assert len(migrations) == 1
    assert migrations[0].subject == "alice"
    assert migrations[0].actor == "boss"
    assert migrations[0].detail["factor"] == push_id


def test_r10_unregistered_push_enrollment_is_not_migrated(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    pending_push = mfa.enroll("alice", "push").factor_ids[0]
    result = mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    assert result["migrated"] == 0
    with pytest.raises(PushError, match="unknown device"):  # no device, nothing to deliver to
        mfa.device_messages(pending_push)
    assert _factors(mfa.show_user("alice"), "protect_totp") == []


def test_r10_migrated_user_keeps_push_and_is_not_nagged_to_rescan(mfa: MFA) -> None:
    _boss(mfa)
    _push_only_user(mfa, "alice")
    _change(mfa, "merge")
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.PROMPT
    assert "push" in step.methods and "code" in step.methods
    assert not step.suggest_unified


# -- R11: separate splits unified enrollments ---------------------------------------------------


def test_r11_separate_splits_unified_enrollment_into_independent_factors(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    _, push_id, totp_id = _unified_user(mfa, "alice")
    before = mfa.show_user("alice")
    assert {f.enrollment for f in before.factors} == {before.factors[0].enrollment}
    _change(mfa, "separate")
    view = mfa.show_user("alice")
    [push] = _factors(view, "protect_push")
    [totp_factor] = _factors(view, "protect_totp")
    assert (push.id, totp_factor.id) == (push_id, totp_id)
    assert push.enrollment != totp_factor.enrollment
    assert not push.unified and not totp_factor.unified
    assert not view.on_unified


def test_r11_before_separate_the_protect_enrollment_is_deleted_as_a_whole(mfa: MFA) -> None:
    """Contrast for the split: while unified, deleting the TOTP takes the push with it."""
    _boss(mfa)
    _change(mfa, "merge")
    _, _, totp_id = _unified_user(mfa, "alice")
    with pytest.raises(LockoutRefused):
        mfa.delete_factor("alice", totp_id)


def test_r11_after_separate_push_can_be_deleted_alone(mfa: MFA, clock: FakeClock) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    uri, push_id, totp_id = _unified_user(mfa, "alice")
    _change(mfa, "separate")
    assert mfa.delete_factor("alice", push_id) == [push_id]
    assert _ids(mfa.show_user("alice")) == {totp_id}
    assert login(mfa, "alice", code_for(mfa, uri))


def test_r11_after_separate_totp_can_be_deleted_alone(mfa: MFA, clock: FakeClock) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    uri, push_id, totp_id = _unified_user(mfa, "alice")
    _change(mfa, "separate")
    assert mfa.delete_factor("alice", totp_id) == [totp_id]
    assert _ids(mfa.show_user("alice")) == {push_id}
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.PROMPT
    assert step.methods == ("push",)
    assert not login(mfa, "alice", code_for(mfa, uri))


def test_r11_after_separate_totp_can_be_reset_alone(mfa: MFA, clock: FakeClock) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    uri, push_id, totp_id = _unified_user(mfa, "alice")
    _change(mfa, "separate")
    replacement = mfa.reset_by_user("alice", code_for(mfa, uri), totp_id)
    assert replacement.kind == "totp"
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, replacement.uri))
    view = mfa.show_user("alice")
    assert totp_id not in _ids(view)
    assert [f.id for f in _factors(view, "protect_push")] == [push_id]
    assert [f.id for f in _factors(view, "protect_totp")] == list(replacement.factor_ids)


def test_r11_separate_preview_warns_it_is_not_recommended(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    _unified_user(mfa, "alice")
    preview = mfa.preview("boss", "separate")
    warning = " ".join(preview.warnings).lower()
    assert "not recommended" in warning
    assert "lock" in warning
    assert mfa.policy().mode == "unified"  # the preview alone changes nothing


def test_r11_separate_leaves_every_user_their_working_factors(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("carol")
    carol = enroll_confirmed(mfa, "carol")  # pre-merge Protect TOTP
    _change(mfa, "merge")
    alice_uri, _, _ = _unified_user(mfa, "alice")  # push + TOTP
    mfa.add_user("bob")
    bob = enroll_confirmed(mfa, "bob")  # unified, push never registered
    active_before = {u.name: {f.id for f in u.factors if f.state == "active"}
                     for u in mfa.list_users()}
    preview = _change(mfa, "separate")
    assert preview.counts["without_factor"] == 0
    active_after = {u.name: {f.id for f in u.factors if f.state == "active"}
                    for u in mfa.list_users()}
    assert active_after == active_before
    assert all(active_after.values())
    assert mfa.preview("boss", "merge").counts["without_factor"] == 0
    for name, uri in (("alice", alice_uri), ("bob", bob.uri), ("carol", carol.uri)):
        assert login(mfa, name, code_for(mfa, uri)), name


def test_r11_after_separate_and_third_party_source_user_may_enroll_third_party_totp(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    uri, _, _ = _unified_user(mfa, "alice")
    _change(mfa, "separate")
    _change(mfa, "totp_source", "third_party")
    third = enroll_confirmed(mfa, "alice", "third_party_totp")
    view = mfa.show_user("alice")
    assert [f.id for f in _factors(view, "third_party_totp")] == list(third.factor_ids)
    assert login(mfa, "alice", code_for(mfa, third.uri))
    assert login(mfa, "alice", code_for(mfa, uri))  # the split Protect TOTP still works


def test_r11_third_party_totp_after_separate_needs_the_policy_to_allow_it(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    _unified_user(mfa, "alice")
    _change(mfa, "separate")
    with pytest.raises(PolicyViolation):
        mfa.enroll("alice", "third_party_totp")


# -- R12: no self-inflicted lock-out; resets ------------------------------------------------------


def test_r12_deleting_the_last_working_factor_is_refused(mfa: MFA) -> None:
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice")
    with pytest.raises(LockoutRefused, match="last working factor"):
        mfa.delete_factor("alice", result.factor_ids[0])
    assert [f.id for f in _factors(mfa.show_user("alice"), "protect_totp")] == [
        result.factor_ids[0]]
    assert login(mfa, "alice", code_for(mfa, result.uri))


def test_r12_bypass_codes_do_not_count_as_a_working_factor(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice")
    mfa.issue_bypass("alice", "boss", count=3)
    with pytest.raises(LockoutRefused):
        mfa.delete_factor("alice", result.factor_ids[0])


def test_r12_deleting_one_of_two_working_factors_is_allowed(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    third_uri, protect_uri, third_id = _third_party_then_protect(mfa, "alice", "totp_source")
    protect_id = _factors(mfa.show_user("alice"), "protect_totp")[0].id
    assert mfa.delete_factor("alice", protect_id) == [protect_id]
    assert _ids(mfa.show_user("alice")) == {third_id}
    assert not login(mfa, "alice", code_for(mfa, protect_uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, third_uri))


def test_r12_after_deleting_one_of_two_the_remaining_one_cannot_be_deleted(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    _, _, third_id = _third_party_then_protect(mfa, "alice", "totp_source")
    mfa.delete_factor("alice", _factors(mfa.show_user("alice"), "protect_totp")[0].id)
    with pytest.raises(LockoutRefused):
        mfa.delete_factor("alice", third_id)


def test_r12_user_reset_keeps_old_code_working_until_replacement_is_confirmed(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice")
    mfa.reset_by_user("alice", code_for(mfa, old.uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, old.uri))
    assert [f.id for f in _factors(mfa.show_user("alice"), "protect_totp")] == [
        old.factor_ids[0]]


def test_r12_user_reset_takes_effect_when_replacement_is_confirmed(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice")
    new = mfa.reset_by_user("alice", code_for(mfa, old.uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, new.uri))
    clock.advance(30)
    assert not login(mfa, "alice", code_for(mfa, old.uri))
    assert login(mfa, "alice", code_for(mfa, new.uri))
    view = mfa.show_user("alice")
    assert [f.id for f in view.factors] == list(new.factor_ids)
    assert view.factors[0].state == "active"


def test_r12_unconfirmed_user_reset_lapses_and_old_code_keeps_working(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice")
    new = mfa.reset_by_user("alice", code_for(mfa, old.uri))
    clock.advance(DAY + 60)
    assert not login(mfa, "alice", code_for(mfa, new.uri))
    assert login(mfa, "alice", code_for(mfa, old.uri))
    assert _ids(mfa.show_user("alice")) == {old.factor_ids[0]}


def test_r12_admin_reset_retires_factors_and_requires_enrollment(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice")
    assert mfa.reset_by_admin("alice", "boss") == [old.factor_ids[0]]
    view = mfa.show_user("alice")
    assert view.must_enroll
    assert view.factors == ()
    assert not login(mfa, "alice", code_for(mfa, old.uri))
    resets = [e for e in mfa.audit_tail(200) if e.action == "factor.reset"]
    assert (resets[-1].actor, resets[-1].outcome) == ("boss", "must_enroll")


def test_r12_after_admin_reset_next_login_enrolls_with_a_qr_code(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.reset_by_admin("alice", "boss")
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.ENROLL
    assert step.enroll_uri is not None and step.token is not None
    assert step.enroll_uri.startswith("otpauth://totp/")
    done = mfa.answer(step.token, code_for(mfa, step.enroll_uri), CTX)
    assert done.outcome is Outcome.ACCEPT
    view = mfa.show_user("alice")
    assert not view.must_enroll
    assert [f.state for f in view.factors] == ["active"]
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, step.enroll_uri))


def test_r12_admin_reset_enrollment_is_still_offered_just_before_the_window_closes(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.reset_by_admin("alice", "boss")
    clock.advance(DAY - 60)
    assert mfa.begin("alice", CTX).outcome is Outcome.ENROLL


def test_r12_admin_reset_enrollment_window_closes_after_24h(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.reset_by_admin("alice", "boss")
    clock.advance(DAY + 1)
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.REJECT
    assert step.enroll_uri is None
    assert not mfa.show_user("alice").must_enroll


# -- R13: after the password ----------------------------------------------------------------------


def test_r13_unified_org_suggests_the_unified_qr_to_a_pre_merge_totp_user(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")  # Protect TOTP, separated mode
    _change(mfa, "merge")
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.PROMPT
    assert step.suggest_unified
    assert step.extra.get("hint")
    assert mfa.show_user("alice").suggest_unified


def test_r13_pre_merge_totp_user_is_not_forced_to_enroll_unified(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice")
    _change(mfa, "merge")
    step = mfa.begin("alice", CTX)
    assert step.token is not None
    assert mfa.answer(step.token, code_for(mfa, old.uri), CTX).outcome is Outcome.ACCEPT


def test_r13_user_on_the_unified_enrollment_gets_no_suggestion(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    mfa.add_user("bob")
    enroll_confirmed(mfa, "bob")
    step = mfa.begin("bob", CTX)
    assert step.outcome is Outcome.PROMPT
    assert not step.suggest_unified
    assert not mfa.show_user("bob").suggest_unified


def test_r13_separated_org_never_suggests_unified(mfa: MFA) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.PROMPT
    assert not step.suggest_unified
    assert not mfa.show_user("alice").suggest_unified


def test_r13_user_may_log_in_with_any_enrolled_totp(mfa: MFA, clock: FakeClock) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    third_uri, protect_uri, _ = _third_party_then_protect(mfa, "alice", "totp_source")
    assert login(mfa, "alice", code_for(mfa, third_uri))
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, protect_uri))


def test_r13_bypass_code_logs_in(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    [code] = mfa.issue_bypass("alice", "boss")
    assert login(mfa, "alice", code)


def test_r13_registered_push_device_is_offered_alongside_codes(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    _unified_user(mfa, "alice")
    step = mfa.begin("alice", CTX)
    assert step.outcome is Outcome.PROMPT
    assert step.methods == ("code", "push")
    assert step.token is not None
    assert mfa.answer(step.token, "push", CTX).outcome is Outcome.PUSH_PENDING


def test_r13_enroll_at_login_user_without_factor_is_asked_to_enroll(mfa: MFA) -> None:
    mfa.add_user("dave")
    mfa.set_enforcement("dave", "enroll_at_login")
    step = mfa.begin("dave", CTX)
    assert step.outcome is Outcome.ENROLL
    assert step.enroll_uri is not None and step.token is not None
    done = mfa.answer(step.token, code_for(mfa, step.enroll_uri), CTX)
    assert done.outcome is Outcome.ACCEPT
    assert [f.state for f in mfa.show_user("dave").factors] == ["active"]


def test_r13_enroll_at_login_in_a_unified_org_offers_the_unified_qr(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    mfa.add_user("dave")
    mfa.set_enforcement("dave", "enroll_at_login")
    step = mfa.begin("dave", CTX)
    assert step.outcome is Outcome.ENROLL
    assert step.enroll_uri is not None
    enrollment = parse_uri(step.enroll_uri)
    assert enrollment.totp_secret is not None and enrollment.token is not None


def test_r13_required_user_without_factor_is_rejected(mfa: MFA) -> None:
    mfa.add_user("dave")
    mfa.set_enforcement("dave", "required")
    step = mfa.begin("dave", CTX)
    assert step.outcome is Outcome.REJECT
    assert step.enroll_uri is None


def test_r13_exempt_user_is_accepted_without_mfa(mfa: MFA) -> None:
    mfa.add_user("dave")
    mfa.set_enforcement("dave", "exempt")
    assert mfa.begin("dave", CTX).outcome is Outcome.ACCEPT


def test_r13_organisation_default_applies_without_user_or_group_setting(mfa: MFA) -> None:
    _boss(mfa)
    mfa.add_user("dave")
    assert mfa.begin("dave", CTX).outcome is Outcome.REJECT  # default: required
    mfa.set_default_enforcement("boss", "enroll_at_login")
    assert mfa.begin("dave", CTX).outcome is Outcome.ENROLL


def test_r13_group_enforcement_applies_to_members(mfa: MFA) -> None:
    mfa.add_user("dave")
    mfa.set_enforcement("contractors", "enroll_at_login", group=True)
    mfa.join_group("dave", "contractors")
    assert mfa.show_user("dave").enforcement == "enroll_at_login"
    assert mfa.begin("dave", CTX).outcome is Outcome.ENROLL


def test_r13_strictest_group_enforcement_wins(mfa: MFA) -> None:
    mfa.set_enforcement("kiosk", "exempt", group=True)
    mfa.set_enforcement("staff", "enroll_at_login", group=True)
    mfa.set_enforcement("finance", "required", group=True)
    mfa.add_user("dave", groups=("kiosk", "staff"))
    mfa.add_user("erin", groups=("kiosk", "staff", "finance"))
    assert mfa.show_user("dave").enforcement == "enroll_at_login"
    assert mfa.begin("dave", CTX).outcome is Outcome.ENROLL
    assert mfa.show_user("erin").enforcement == "required"
    assert mfa.begin("erin", CTX).outcome is Outcome.REJECT


def test_r13_user_enforcement_overrides_group(mfa: MFA) -> None:
    mfa.add_user("dave")
    mfa.set_enforcement("finance", "required", group=True)
    mfa.join_group("dave", "finance")
    mfa.set_enforcement("dave", "exempt")
    assert mfa.begin("dave", CTX).outcome is Outcome.ACCEPT
    mfa.set_enforcement("dave", None)  # back to inheriting
    assert mfa.begin("dave", CTX).outcome is Outcome.REJECT


# -- R14: admin accounts --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["push", "unified"])
def test_r14_unlinked_admin_cannot_enroll_push(mfa: MFA, kind: str) -> None:
    mfa.add_admin("root")
    with pytest.raises(PolicyViolation):
        mfa.enroll("root", kind, admin=True)
    assert mfa.show_admin_account("root").factors == ()


@pytest.mark.parametrize("unified_org", [False, True])
def test_r14_unlinked_admin_enrolls_totp_only(mfa: MFA, unified_org: bool) -> None:
    _boss(mfa)
    if unified_org:
        _change(mfa, "merge")
    mfa.add_admin("root")
    result = mfa.enroll("root", admin=True)
    enrollment = parse_uri(result.uri)
    assert enrollment.totp_secret is not None
    assert enrollment.token is None and enrollment.service_url is None
    assert {f.kind for f in mfa.show_admin_account("root").factors} == {"protect_totp"}


def test_r14_unlinked_admin_logs_in_with_totp(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_admin("root")
    result = mfa.enroll("root", admin=True)
    step = mfa.begin("root", CTX, kind="admin")
    assert step.outcome is Outcome.PROMPT
    assert step.methods == ("code",)
    assert step.token is not None
    assert mfa.answer(step.token, code_for(mfa, result.uri), CTX).outcome is Outcome.ACCEPT
    clock.advance(30)
    assert _admin_login(mfa, "root", code_for(mfa, result.uri))
    assert not _admin_login(mfa, "root", "000000")


def test_r14_admin_reset_of_an_unlinked_admin_offers_a_totp_enrollment_at_login(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_admin("root")
    enrolled = mfa.enroll("root", admin=True)
    assert _admin_login(mfa, "root", code_for(mfa, enrolled.uri))
    clock.advance(30)
    mfa.reset_by_admin("root", "boss", admin=True)
    step = mfa.begin("root", CTX, kind="admin")
    assert step.outcome is Outcome.ENROLL and step.enroll_uri is not None
    assert "enroll_token" not in step.enroll_uri  # TOTP only, no push registration
    assert step.token is not None
    assert mfa.answer(step.token, code_for(mfa, step.enroll_uri), CTX).outcome is Outcome.ACCEPT


def test_r14_unlinked_admin_is_required_even_when_org_default_is_exempt(mfa: MFA) -> None:
    _boss(mfa)
    mfa.set_default_enforcement("boss", "exempt")
    mfa.add_user("dave")
    mfa.add_admin("root")
    assert mfa.begin("dave", CTX).outcome is Outcome.ACCEPT  # the default does apply to users
    assert mfa.show_admin_account("root").enforcement == "required"
    assert mfa.begin("root", CTX, kind="admin").outcome is Outcome.REJECT


def test_r14_enrolled_unlinked_admin_is_asked_for_mfa_when_org_default_is_exempt(
    mfa: MFA,
) -> None:
    _boss(mfa)
    mfa.set_default_enforcement("boss", "exempt")
    mfa.add_admin("root")
    mfa.enroll("root", admin=True)
    step = mfa.begin("root", CTX, kind="admin")
    assert step.outcome is Outcome.PROMPT
    assert not step.finished


def test_r14_user_code_does_not_open_an_unlinked_admin_of_the_same_name(mfa: MFA) -> None:
    mfa.add_user("carol")
    user = enroll_confirmed(mfa, "carol")
    mfa.add_admin("carol")  # not linked: an account of its own
    mfa.enroll("carol", admin=True)
    assert not _admin_login(mfa, "carol", code_for(mfa, user.uri))


def test_r14_linked_admin_shares_the_users_factors(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("carol")
    result = enroll_confirmed(mfa, "carol")
    mfa.add_admin("carol", linked_user="carol")
    admin_view = mfa.show_admin_account("carol")
    assert admin_view.factors == mfa.show_user("carol").factors
    assert [f.id for f in admin_view.factors] == list(result.factor_ids)
    assert mfa.list_admins()[0].linked_user == "carol"


def test_r14_linked_admin_gets_the_one_step_unified_enrollment(mfa: MFA) -> None:
    _boss(mfa)
    _change(mfa, "merge")
    mfa.add_user("carol")
    mfa.add_admin("carol", linked_user="carol")
    result = mfa.enroll("carol", admin=True)
    assert result.kind == "unified"
    enrollment = parse_uri(result.uri)
    assert enrollment.totp_secret is not None and enrollment.token is not None
    assert {f.id for f in mfa.show_user("carol").factors} == set(result.factor_ids)


def test_r14_linked_admin_inherits_user_enforcement(mfa: MFA) -> None:
    mfa.add_user("carol")
    mfa.add_admin("carol", linked_user="carol")
    mfa.set_enforcement("carol", "exempt")
    assert mfa.show_admin_account("carol").enforcement == "exempt"
    assert mfa.begin("carol", CTX).outcome is Outcome.ACCEPT


def test_r14_linked_admin_inherits_group_enforcement(mfa: MFA) -> None:
    mfa.add_user("carol")
    mfa.add_admin("carol", linked_user="carol")
    mfa.set_enforcement("ops", "enroll_at_login", group=True)
    mfa.join_group("carol", "ops")
    assert mfa.show_admin_account("carol").enforcement == "enroll_at_login"


# -- R15: one factor state everywhere -----------------------------------------------------------


def test_r15_active_factor_shown_by_show_user_logs_in(mfa: MFA) -> None:
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice")
    [shown] = mfa.show_user("alice").factors
    assert (shown.id, shown.state) == (result.factor_ids[0], "active")
    assert login(mfa, "alice", code_for(mfa, result.uri))


def test_r15_pending_factor_is_shown_pending_and_its_first_code_activates_it(mfa: MFA) -> None:
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    [shown] = mfa.show_user("alice").factors
    assert (shown.id, shown.state) == (result.factor_ids[0], "pending")
    assert login(mfa, "alice", code_for(mfa, result.uri))
    assert [f.state for f in mfa.show_user("alice").factors] == ["active"]


def test_r15_deleted_factor_leaves_show_user_and_is_rejected(
    mfa: MFA, clock: FakeClock,
) -> None:
    _boss(mfa)
    mfa.add_user("alice")
    _, protect_uri, third_id = _third_party_then_protect(mfa, "alice", "totp_source")
    protect_id = _factors(mfa.show_user("alice"), "protect_totp")[0].id
    mfa.delete_factor("alice", protect_id)
    assert protect_id not in _ids(mfa.show_user("alice"))
    assert _ids(mfa.show_user("alice")) == {third_id}
    assert not login(mfa, "alice", code_for(mfa, protect_uri))


def test_r15_expired_pending_enrollment_is_neither_shown_nor_accepted(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    clock.advance(DAY + 60)
    assert mfa.show_user("alice").factors == ()
    assert not login(mfa, "alice", code_for(mfa, result.uri))


def test_r15_cli_user_show_lists_the_same_factors_as_show_user(
    mfa: MFA, clock: FakeClock, home: Path, store_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    # Only active factors here: the CLI runs on the real clock, the fixture on a frozen one, so
    # a pending factor's expiry could be judged differently by the two.
    _boss(mfa)
    mfa.add_user("alice")
    _third_party_then_protect(mfa, "alice", "totp_source")
    expected = mfa.show_user("alice")
    assert len(expected.factors) == 2
    capsys.readouterr()
    rc = cli_main(["user", "show", "alice", "--json", "--home", str(home),
                   "--store", store_url])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    assert [(f["id"], f["kind"], f["state"], f["unified"]) for f in data["factors"]] == [
        (f.id, f.kind, f.state, f.unified) for f in expected.factors]
    assert "secret" not in out.lower()
