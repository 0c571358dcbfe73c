"""Organisation policy rules R01-R08, proven through the `MFA` facade.

R01 keeps at least one method enabled; R02 reserves merge and separate to the `billing` role;
R03 makes merge and separate two audited steps with a single-use, expiring, non-stale
confirmation; R04 keeps every user logging in across a merge; R05 and R06 make unified
enrollment and reset one step each; R07 requires a current Protect TOTP code (or an audited
admin) for a reset; R08 lets only one TOTP source take new enrollments.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.core.audit import AuditEntry
from pam_unified_mfa.core.factors import EnrollResult
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.errors import (
    ConfirmationError,
    InvalidCode,
    LockoutRefused,
    NotFound,
    PermissionDenied,
    PolicyViolation,
)
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed, login

CONFIRM_TTL = 10 * 60  # the default `[confirm] ttl = "10m"`
PUBLIC_URL = "https://mfa.example.test"  # what the `home` fixture passes to init


# -- helpers ---------------------------------------------------------------------------------


def _billing_admin(mfa: MFA, name: str = "boss") -> None:
    mfa.add_admin(name, roles=("billing",))


def _merge(mfa: MFA, admin: str = "boss") -> None:
    preview = mfa.preview(admin, "merge")
    mfa.confirm(admin, preview.confirmation)


def _separate(mfa: MFA, admin: str = "boss") -> None:
    preview = mfa.preview(admin, "separate")
    mfa.confirm(admin, preview.confirmation)


def _switch_totp_source(mfa: MFA, source: str, admin: str = "boss") -> None:
    preview = mfa.preview(admin, "totp_source", source)
    mfa.confirm(admin, preview.confirmation)


def _login_and_step(mfa: MFA, clock: FakeClock, user: str, uri: str) -> bool:
    """Log in with the code shown now, then move to the next time step (no replay, S01)."""
    accepted = login(mfa, user, code_for(mfa, uri))
    clock.advance(30)
    return accepted


def _audit(mfa: MFA, action: str) -> list[AuditEntry]:
    return [entry for entry in mfa.audit_tail(500) if entry.action == action]


def _factor_states(mfa: MFA, user: str) -> list[tuple[str, str, str, bool]]:
    return [(f.id, f.kind, f.state, f.unified) for f in mfa.show_user(user).factors]


def _unified_user_with_device(mfa: MFA, user: str) -> tuple[EnrollResult, str]:
    """A user on the unified Protect enrollment whose TOTP is confirmed and device registered."""
    mfa.add_user(user)
    result = enroll_confirmed(mfa, user)
    assert result.kind == "unified"
    return result, Device(mfa, result.uri).factor_id


# -- R01: at least one method stays enabled --------------------------------------------------


def test_r01_disabling_the_last_enabled_method_is_refused(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.set_method("boss", "push", False)
    before = mfa.policy()
    with pytest.raises(LockoutRefused, match="totp") as refused:
        mfa.set_method("boss", "totp", False)
    assert "without any MFA method" in str(refused.value)
    assert mfa.policy() == before
    assert mfa.policy().methods == ("totp",)


def test_r01_disabling_the_last_method_is_refused_whichever_it_is(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.set_method("boss", "totp", False)
    with pytest.raises(LockoutRefused, match="push"):
        mfa.set_method("boss", "push", False)
    assert mfa.policy().methods == ("push",)


def test_r01_disabling_one_of_two_enabled_methods_works(mfa: MFA) -> None:
    _billing_admin(mfa)
    assert mfa.policy().methods == ("push", "totp")
    view = mfa.set_method("boss", "push", False)
    assert view.methods == ("totp",)
    assert mfa.policy().methods == ("totp",)
    assert [e.outcome for e in _audit(mfa, "policy.method")] == ["disabled"]


def test_r01_a_disabled_method_can_be_enabled_again_and_the_other_then_disabled(
    mfa: MFA,
) -> None:
    _billing_admin(mfa)
    mfa.set_method("boss", "push", False)
    mfa.set_method("boss", "push", True)
    assert mfa.set_method("boss", "totp", False).methods == ("push",)


def test_r01_unified_mode_refuses_disabling_a_method(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    before = mfa.policy()
    for method in ("push", "totp"):
        with pytest.raises(PolicyViolation):
            mfa.set_method("boss", method, False)
    assert mfa.policy() == before
    assert before.methods == ("push", "totp")


def test_r01_a_disabled_method_takes_no_new_enrollments(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    mfa.set_method("boss", "totp", False)
    with pytest.raises(PolicyViolation):
        mfa.enroll("alice", "totp")
    assert mfa.show_user("alice").factors == ()


def test_r01_disabling_a_method_keeps_existing_factors_of_it_working(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice", "totp")
    mfa.set_method("boss", "totp", False)
    assert _login_and_step(mfa, clock, "alice", result.uri)


# -- R02: merge and separate need the billing role --------------------------------------------


def test_r02_merge_preview_without_billing_role_is_refused_naming_the_role(mfa: MFA) -> None:
    mfa.add_admin("clerk")
    before = mfa.policy()
    with pytest.raises(PermissionDenied, match="'billing'"):
        mfa.preview("clerk", "merge")
    assert mfa.policy() == before
    assert mfa.policy().mode == "separated"
    assert _audit(mfa, "policy.merge") == []


def test_r02_separate_preview_without_billing_role_is_refused_naming_the_role(
    mfa: MFA,
) -> None:
    _billing_admin(mfa)
    mfa.add_admin("clerk")
    _merge(mfa)
    before = mfa.policy()
    with pytest.raises(PermissionDenied, match="'billing'"):
        mfa.preview("clerk", "separate")
    assert mfa.policy() == before
    assert mfa.policy().mode == "unified"
    assert _audit(mfa, "policy.separate") == []


def test_r02_confirm_by_admin_without_billing_role_is_refused(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_admin("clerk")
    preview = mfa.preview("boss", "merge")
    with pytest.raises(PermissionDenied, match="'billing'"):
        mfa.confirm("clerk", preview.confirmation)
    assert mfa.policy().mode == "separated"
    assert [e.outcome for e in _audit(mfa, "policy.merge")] == ["previewed"]


def test_r02_billing_admin_can_merge_and_separate(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    assert mfa.policy().mode == "unified"
    _separate(mfa)
    assert mfa.policy().mode == "separated"


def test_r02_admin_linked_to_a_user_with_billing_role_can_merge(mfa: MFA) -> None:
    mfa.add_user("carol")
    mfa.add_admin("carol-admin", roles=("billing",), linked_user="carol")
    _merge(mfa, "carol-admin")
    assert mfa.policy().mode == "unified"


# -- R03: two steps, both audited -------------------------------------------------------------


def test_r03_merge_preview_changes_nothing_and_is_audited(mfa: MFA) -> None:
    _billing_admin(mfa)
    before = mfa.policy()
    preview = mfa.preview("boss", "merge")
    assert preview.confirmation
    assert preview.changes["mode"] == "separated -> unified"
    assert mfa.policy() == before
    records = _audit(mfa, "policy.merge")
    assert [(e.actor, e.outcome) for e in records] == [("boss", "previewed")]


def test_r03_merge_confirm_applies_and_is_audited(mfa: MFA) -> None:
    _billing_admin(mfa)
    preview = mfa.preview("boss", "merge")
    mfa.confirm("boss", preview.confirmation)
    policy = mfa.policy()
    assert policy.mode == "unified"
    assert policy.totp_source == "protect"
    records = _audit(mfa, "policy.merge")
    assert [(e.actor, e.outcome) for e in records] == [("boss", "previewed"), ("boss", "applied")]
    assert records[-1].detail["mode"] == "unified"


def test_r03_separate_is_two_step_and_both_steps_are_audited(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    preview = mfa.preview("boss", "separate")
    assert preview.changes["mode"] == "unified -> separated"
    assert preview.warnings  # separate is not recommended (R11)
    assert mfa.policy().mode == "unified"
    mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().mode == "separated"
    assert [e.outcome for e in _audit(mfa, "policy.separate")] == ["previewed", "applied"]


def test_r03_a_confirmation_is_single_use(mfa: MFA) -> None:
    _billing_admin(mfa)
    preview = mfa.preview("boss", "merge")
    mfa.confirm("boss", preview.confirmation)
    version = mfa.policy().version
    with pytest.raises(ConfirmationError):
        mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().version == version
    assert [e.outcome for e in _audit(mfa, "policy.merge")] == ["previewed", "applied"]


def test_r03_a_confirmation_expires_after_the_confirm_ttl(mfa: MFA, clock: FakeClock) -> None:
    _billing_admin(mfa)
    preview = mfa.preview("boss", "merge")
    clock.advance(CONFIRM_TTL + 1)
    with pytest.raises(ConfirmationError):
        mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().mode == "separated"


def test_r03_a_confirmation_still_works_just_before_it_expires(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    preview = mfa.preview("boss", "merge")
    clock.advance(CONFIRM_TTL - 1)
    mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().mode == "unified"


def test_r03_a_confirmation_is_stale_after_another_policy_change(mfa: MFA) -> None:
    _billing_admin(mfa)
    preview = mfa.preview("boss", "merge")
    mfa.set_method("boss", "push", False)
    with pytest.raises(ConfirmationError, match="changed"):
        mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().mode == "separated"
    assert mfa.policy().methods == ("totp",)


def test_r03_only_the_admin_who_previewed_can_confirm(mfa: MFA) -> None:
    _billing_admin(mfa, "boss")
    _billing_admin(mfa, "cfo")
    preview = mfa.preview("boss", "merge")
    with pytest.raises(ConfirmationError):
        mfa.confirm("cfo", preview.confirmation)
    assert mfa.policy().mode == "separated"
    # The refused attempt did not spend it: the admin who asked can still confirm.
    mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().mode == "unified"


def test_r03_an_unknown_confirmation_is_refused(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.preview("boss", "merge")
    with pytest.raises(ConfirmationError):
        mfa.confirm("boss", "not-a-confirmation")
    assert mfa.policy().mode == "separated"


def test_r03_merge_preview_counts_users_and_push_devices(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    mfa.add_user("bob")
    Device(mfa, mfa.enroll("bob", "push").uri)
    mfa.add_user("carol")
    preview = mfa.preview("boss", "merge")
    assert preview.counts["users"] == 3
    assert preview.counts["push_to_migrate"] == 1
    assert preview.counts["protect_totp_only"] == 1
    assert preview.counts["without_factor"] == 1
    assert any("1 push device" in warning for warning in preview.warnings)


def test_r03_separate_preview_counts_unified_enrollments(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.add_user("bob")
    preview = mfa.preview("boss", "separate")
    assert preview.counts["users"] == 2
    assert preview.counts["unified"] == 1
    assert "1 unified enrollment" in preview.changes["enrollments"]


# -- R04: merging interrupts no one -----------------------------------------------------------


def test_r04_protect_totp_user_logs_in_before_during_and_after_merge(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice", "totp")
    assert _login_and_step(mfa, clock, "alice", result.uri)  # before
    preview = mfa.preview("boss", "merge")
    assert _login_and_step(mfa, clock, "alice", result.uri)  # during
    mfa.confirm("boss", preview.confirmation)
    assert _login_and_step(mfa, clock, "alice", result.uri)  # after
    clock.advance(3600)
    assert _login_and_step(mfa, clock, "alice", result.uri)  # long after


def test_r04_third_party_totp_user_logs_in_before_during_and_after_merge(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    _switch_totp_source(mfa, "third_party")
    mfa.add_user("bob")
    result = enroll_confirmed(mfa, "bob", "third_party_totp")
    assert _login_and_step(mfa, clock, "bob", result.uri)  # before
    preview = mfa.preview("boss", "merge")
    assert _login_and_step(mfa, clock, "bob", result.uri)  # during
    mfa.confirm("boss", preview.confirmation)
    assert mfa.policy().totp_source == "protect"
    assert _login_and_step(mfa, clock, "bob", result.uri)  # after
    clock.advance(3600)
    assert _login_and_step(mfa, clock, "bob", result.uri)  # long after


def test_r04_merge_leaves_every_existing_totp_factor_as_it_was(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    _switch_totp_source(mfa, "third_party")
    mfa.add_user("bob")
    enroll_confirmed(mfa, "bob", "third_party_totp")
    before = {user: _factor_states(mfa, user) for user in ("alice", "bob")}
    _merge(mfa)
    assert {user: _factor_states(mfa, user) for user in ("alice", "bob")} == before
    assert before["alice"][0][1:] == ("protect_totp", "active", False)
    assert before["bob"][0][1:] == ("third_party_totp", "active", False)


def test_r04_a_bypass_code_issued_before_merge_still_logs_in_after(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    (code,) = mfa.issue_bypass("alice", "boss")
    _merge(mfa)
    assert login(mfa, "alice", code)


def test_r04_an_enrollment_started_before_merge_can_be_confirmed_after(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    pending = mfa.enroll("alice", "totp")
    _merge(mfa)
    assert _login_and_step(mfa, clock, "alice", pending.uri)
    assert _login_and_step(mfa, clock, "alice", pending.uri)
    assert [f.state for f in mfa.show_user("alice").factors] == ["active"]


# -- R05: one-step unified enrollment ---------------------------------------------------------


def test_r05_unified_enroll_yields_one_uri_with_totp_secret_and_push_registration(
    mfa: MFA,
) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    assert result.kind == "unified"
    assert result.uri.startswith("otpauth://totp/")
    query = parse_qs(urlsplit(result.uri).query)
    assert query["secret"] and query["enroll_token"]
    assert query["enroll_url"] == [PUBLIC_URL]
    enrollment = parse_uri(result.uri)
    assert enrollment.totp_secret and enrollment.token
    assert enrollment.service_url == PUBLIC_URL


def test_r05_unified_enroll_creates_push_and_totp_of_one_enrollment(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    factors = mfa.show_user("alice").factors
    assert {f.id for f in factors} == set(result.factor_ids)
    assert sorted(f.kind for f in factors) == ["protect_push", "protect_totp"]
    assert all(f.unified and f.state == "pending" for f in factors)
    assert len({f.enrollment for f in factors}) == 1


def test_r05_the_unified_uris_totp_code_confirms_the_enrollment(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    assert _login_and_step(mfa, clock, "alice", result.uri)
    states = {f.kind: f.state for f in mfa.show_user("alice").factors}
    assert states == {"protect_totp": "active", "protect_push": "pending"}
    assert mfa.show_user("alice").on_unified
    assert _login_and_step(mfa, clock, "alice", result.uri)


def test_r05_another_app_reads_the_unified_uri_and_its_code_logs_in(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    result = mfa.enroll("alice")
    other_app = pyotp.parse_uri(result.uri)
    assert isinstance(other_app, pyotp.TOTP)
    code = other_app.at(int(clock.now))
    assert code == code_for(mfa, result.uri)
    assert login(mfa, "alice", code)
    clock.advance(30)
    assert login(mfa, "alice", other_app.at(int(clock.now)))


def test_r05_unified_mode_refuses_separate_push_or_totp_enrollment(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    for kind in ("push", "totp"):
        with pytest.raises(PolicyViolation, match="unified"):
            mfa.enroll("alice", kind)
    assert mfa.show_user("alice").factors == ()


# -- R06: one-step unified reset --------------------------------------------------------------


def test_r06_user_reset_retires_push_and_totp_together_once_replacement_is_confirmed(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    old, push_id = _unified_user_with_device(mfa, "alice")
    old_ids = set(old.factor_ids)
    assert push_id in old_ids
    assert mfa.begin("alice", RequestContext()).methods == ("code", "push")
    replacement = mfa.reset_by_user("alice", code_for(mfa, old.uri))
    assert replacement.kind == "unified"
    assert parse_uri(replacement.uri).token is not None
    clock.advance(30)
    assert login(mfa, "alice", code_for(mfa, replacement.uri))
    clock.advance(30)
    visible = {f.id: (f.kind, f.state) for f in mfa.show_user("alice").factors}
    assert not old_ids & set(visible)  # both old push and old TOTP are retired
    assert sorted(visible.values()) == [("protect_push", "pending"), ("protect_totp", "active")]
    assert not login(mfa, "alice", code_for(mfa, old.uri))
    assert mfa.begin("alice", RequestContext()).methods == ("code",)  # old device gone


def test_r06_user_reset_keeps_the_old_enrollment_until_the_replacement_is_confirmed(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    old, _ = _unified_user_with_device(mfa, "alice")
    mfa.reset_by_user("alice", code_for(mfa, old.uri))
    clock.advance(30)
    states = {f.id: f.state for f in mfa.show_user("alice").factors}
    assert all(states[i] == "active" for i in old.factor_ids)
    assert mfa.begin("alice", RequestContext()).methods == ("code", "push")
    assert login(mfa, "alice", code_for(mfa, old.uri))


def test_r06_admin_reset_retires_push_and_totp_at_once(mfa: MFA, clock: FakeClock) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    old, _ = _unified_user_with_device(mfa, "alice")
    retired = mfa.reset_by_admin("alice", "boss")
    assert set(retired) == set(old.factor_ids)
    view = mfa.show_user("alice")
    assert view.factors == ()
    assert view.must_enroll
    assert not login(mfa, "alice", code_for(mfa, old.uri))


def test_r06_unified_mode_refuses_resetting_only_the_push_part(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    old, push_id = _unified_user_with_device(mfa, "alice")
    before = _factor_states(mfa, "alice")
    with pytest.raises(PolicyViolation, match="as a whole"):
        mfa.reset_by_admin("alice", "boss", push_id)
    with pytest.raises(PolicyViolation, match="as a whole"):
        mfa.reset_by_user("alice", code_for(mfa, old.uri), push_id)
    assert _factor_states(mfa, "alice") == before


# -- R07: a reset needs a current Protect TOTP code, or an audited admin ----------------------


def test_r07_user_reset_with_a_current_protect_totp_code_starts_the_swap(mfa: MFA) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    replacement = mfa.reset_by_user("alice", code_for(mfa, old.uri))
    assert replacement.kind == "totp"
    records = _audit(mfa, "factor.reset")
    assert [(e.actor, e.subject, e.outcome) for e in records] == [("alice", "alice", "pending")]


def test_r07_user_reset_with_a_wrong_code_raises_and_changes_nothing(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    before = _factor_states(mfa, "alice")
    wrong = f"{(int(code_for(mfa, old.uri)) + 1) % 1_000_000:06d}"
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", wrong)
    assert _factor_states(mfa, "alice") == before
    assert not mfa.show_user("alice").must_enroll
    assert _audit(mfa, "factor.reset") == []
    assert _login_and_step(mfa, clock, "alice", old.uri)


def test_r07_user_reset_with_a_stale_protect_code_is_refused(mfa: MFA) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    before = _factor_states(mfa, "alice")
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", code_for(mfa, old.uri, offset_steps=-4))
    assert _factor_states(mfa, "alice") == before


def test_r07_user_reset_with_a_code_already_used_to_log_in_is_refused(mfa: MFA) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    code = code_for(mfa, old.uri)
    assert login(mfa, "alice", code)
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", code)
    assert _audit(mfa, "factor.reset") == []


def test_r07_user_reset_with_a_third_party_totp_code_is_refused(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    _switch_totp_source(mfa, "third_party")
    third_party = enroll_confirmed(mfa, "alice", "third_party_totp")
    before = _factor_states(mfa, "alice")
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", code_for(mfa, third_party.uri))
    assert _factor_states(mfa, "alice") == before
    assert _audit(mfa, "factor.reset") == []
    assert _login_and_step(mfa, clock, "alice", third_party.uri)


def test_r07_user_reset_with_a_bypass_code_is_refused_and_does_not_spend_it(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    (code,) = mfa.issue_bypass("alice", "boss")
    before = _factor_states(mfa, "alice")
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", code)
    assert _factor_states(mfa, "alice") == before
    assert _audit(mfa, "factor.reset") == []
    assert login(mfa, "alice", code)


def test_r07_a_pending_protect_totp_does_not_prove_possession(mfa: MFA) -> None:
    mfa.add_user("alice")
    pending = mfa.enroll("alice", "totp")
    with pytest.raises(InvalidCode):
        mfa.reset_by_user("alice", code_for(mfa, pending.uri))
    assert [f.state for f in mfa.show_user("alice").factors] == ["pending"]


def test_r07_admin_reset_works_and_is_audited_with_the_admins_name(mfa: MFA) -> None:
    mfa.add_admin("helpdesk")
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    retired = mfa.reset_by_admin("alice", "helpdesk")
    assert set(retired) == set(old.factor_ids)
    assert mfa.show_user("alice").must_enroll
    assert not login(mfa, "alice", code_for(mfa, old.uri))
    (record,) = _audit(mfa, "factor.reset")
    assert (record.actor, record.subject, record.outcome) == ("helpdesk", "alice", "must_enroll")


def test_r07_reset_by_an_unknown_admin_is_refused(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    old = enroll_confirmed(mfa, "alice", "totp")
    before = _factor_states(mfa, "alice")
    with pytest.raises(NotFound, match="no such admin"):
        mfa.reset_by_admin("alice", "mallory")
    assert _factor_states(mfa, "alice") == before
    assert _login_and_step(mfa, clock, "alice", old.uri)


# -- R08: one TOTP source for new enrollments -------------------------------------------------


def test_r08_third_party_totp_enrollment_is_refused_while_source_is_protect(mfa: MFA) -> None:
    mfa.add_user("alice")
    assert mfa.policy().totp_source == "protect"
    with pytest.raises(PolicyViolation, match="R08"):
        mfa.enroll("alice", "third_party_totp")
    assert mfa.show_user("alice").factors == ()


def test_r08_protect_totp_enrollment_is_refused_after_switching_to_third_party(
    mfa: MFA,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    _switch_totp_source(mfa, "third_party")
    assert mfa.policy().totp_source == "third_party"
    with pytest.raises(PolicyViolation, match="R08"):
        mfa.enroll("alice", "totp")
    assert mfa.show_user("alice").factors == ()


def test_r08_after_switching_to_third_party_new_enrollments_use_third_party_totp(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    _switch_totp_source(mfa, "third_party")
    result = mfa.enroll("alice")
    assert result.kind == "third_party_totp"
    assert _login_and_step(mfa, clock, "alice", result.uri)
    assert [(f.kind, f.state) for f in mfa.show_user("alice").factors] == [
        ("third_party_totp", "active")]


def test_r08_the_source_switch_takes_effect_only_when_confirmed(mfa: MFA) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    preview = mfa.preview("boss", "totp_source", "third_party")
    with pytest.raises(PolicyViolation):
        mfa.enroll("alice", "third_party_totp")
    mfa.confirm("boss", preview.confirmation)
    assert mfa.enroll("alice", "third_party_totp").kind == "third_party_totp"


def test_r08_existing_protect_totp_still_logs_in_after_switching_to_third_party(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("alice")
    result = enroll_confirmed(mfa, "alice", "totp")
    _switch_totp_source(mfa, "third_party")
    assert _login_and_step(mfa, clock, "alice", result.uri)


def test_r08_existing_third_party_totp_still_logs_in_after_switching_back_to_protect(
    mfa: MFA, clock: FakeClock,
) -> None:
    _billing_admin(mfa)
    mfa.add_user("bob")
    _switch_totp_source(mfa, "third_party")
    result = enroll_confirmed(mfa, "bob", "third_party_totp")
    _switch_totp_source(mfa, "protect")
    with pytest.raises(PolicyViolation):
        mfa.enroll("bob", "third_party_totp")
    assert _login_and_step(mfa, clock, "bob", result.uri)


def test_r08_unified_mode_refuses_third_party_totp(mfa: MFA) -> None:
    _billing_admin(mfa)
    _merge(mfa)
    mfa.add_user("alice")
    with pytest.raises(PolicyViolation):
        mfa.enroll("alice", "third_party_totp")
    with pytest.raises(PolicyViolation):
        mfa.preview("boss", "totp_source", "third_party")
    assert mfa.policy().totp_source == "protect"
    assert mfa.show_user("alice").factors == ()


def test_r08_an_admin_only_account_follows_the_totp_source(mfa: MFA) -> None:
    mfa.add_admin("ops")
    with pytest.raises(PolicyViolation, match="R08"):
        mfa.enroll("ops", "third_party_totp", admin=True)
    assert mfa.enroll("ops", admin=True).kind == "totp"
