"""The MFA dialogue every adapter drives after the first factor, as a state machine.

`begin` opens a dialogue and hands out an opaque token; every answer spends that token and a
continuing step carries a fresh one. Tokens are single use, bound to the adapter and client
that began the dialogue, expire after `[dialogue] ttl`, and fit a RADIUS State attribute. A
dialogue allows `[dialogue] max_attempts` wrong answers, the last of them final. `push` from a
user without a push device is just a wrong code. Admin-issued bypass codes work once and
expire; exempt users are accepted at `begin`.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select

from pam_unified_mfa.core import MFA, Outcome, RequestContext, Step
from pam_unified_mfa.core.dialogue import MSG_DENIED, MSG_EXPIRED, MSG_WRONG
from pam_unified_mfa.store.models import Dialogue, OrgPolicy
from tests.conftest import FakeClock
from tests.helpers import code_for, enroll_confirmed, login, wrong_code

RADIUS_STATE_MAX = 253  # octets in a RADIUS State attribute
NAS = RequestContext(adapter="radius", client="10.0.0.1")


def enrolled(mfa: MFA, name: str = "alice") -> str:
    """A user with a confirmed TOTP factor; returns the enrollment URI."""
    mfa.add_user(name)
    return enroll_confirmed(mfa, name).uri


def begun(mfa: MFA, name: str = "alice", ctx: RequestContext = NAS) -> str:
    step = mfa.begin(name, ctx)
    assert step.outcome is Outcome.PROMPT
    assert step.token is not None
    return step.token


def is_expired(step: Step) -> bool:
    return step.outcome is Outcome.REJECT and step.message == MSG_EXPIRED


# -- tokens ----------------------------------------------------------------------------------


def test_a_spent_token_is_rejected_as_expired(mfa: MFA) -> None:
    uri = enrolled(mfa)
    first = begun(mfa)
    retry = mfa.answer(first, wrong_code(mfa, uri), NAS)
    assert retry.outcome is Outcome.PROMPT
    assert is_expired(mfa.answer(first, code_for(mfa, uri), NAS))


def test_the_token_of_an_accepted_dialogue_cannot_be_used_again(
    mfa: MFA, clock: FakeClock,
) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    assert mfa.answer(token, code_for(mfa, uri), NAS).outcome is Outcome.ACCEPT
    clock.advance(30)
    assert is_expired(mfa.answer(token, code_for(mfa, uri), NAS))


def test_an_unknown_token_is_rejected_as_expired(mfa: MFA) -> None:
    uri = enrolled(mfa)
    assert is_expired(mfa.answer("no-such-token", code_for(mfa, uri), NAS))


def test_a_token_is_bound_to_the_client_that_began_the_dialogue(mfa: MFA) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    other_client = RequestContext(adapter="radius", client="10.0.0.2")
    assert is_expired(mfa.answer(token, code_for(mfa, uri), other_client))


def test_a_token_is_bound_to_the_adapter_that_began_the_dialogue(mfa: MFA) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    other_adapter = RequestContext(adapter="keycloak", client=NAS.client)
    assert is_expired(mfa.answer(token, code_for(mfa, uri), other_adapter))


def test_a_token_answered_for_another_user_is_refused_and_spent(mfa: MFA) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    assert is_expired(mfa.answer(token, code_for(mfa, uri), NAS, user="mallory"))
    assert is_expired(mfa.answer(token, code_for(mfa, uri), NAS, user="alice"))


def test_a_token_polled_for_another_user_is_refused(mfa: MFA) -> None:
    enrolled(mfa)
    token = begun(mfa)
    assert is_expired(mfa.poll(token, NAS, user="mallory"))


def test_a_token_answered_for_its_own_user_works(mfa: MFA) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    assert mfa.answer(token, code_for(mfa, uri), NAS, user="alice").outcome is Outcome.ACCEPT


def test_a_token_expires_after_the_dialogue_ttl(mfa: MFA, clock: FakeClock) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    clock.advance(mfa.env.seconds(mfa.settings.dialogue.ttl))
    assert is_expired(mfa.answer(token, code_for(mfa, uri), NAS))


def test_a_token_works_until_just_before_the_dialogue_ttl(mfa: MFA, clock: FakeClock) -> None:
    uri = enrolled(mfa)
    token = begun(mfa)
    clock.advance(mfa.env.seconds(mfa.settings.dialogue.ttl) - 1)
    assert mfa.answer(token, code_for(mfa, uri), NAS).outcome is Outcome.ACCEPT


def test_tokens_fit_a_radius_state_and_differ_at_every_step(mfa: MFA) -> None:
    uri = enrolled(mfa)
    tokens = [begun(mfa), begun(mfa)]
    for _ in range(mfa.settings.dialogue.max_attempts - 1):
        step = mfa.answer(tokens[-1], wrong_code(mfa, uri), NAS)
        assert step.token is not None
        tokens.append(step.token)
    assert all(len(token.encode()) <= RADIUS_STATE_MAX for token in tokens)
    assert len(set(tokens)) == len(tokens)


# -- attempts --------------------------------------------------------------------------------


def test_after_a_wrong_code_the_prompt_carries_a_fresh_token_that_works(mfa: MFA) -> None:
    uri = enrolled(mfa)
    first = begun(mfa)
    retry = mfa.answer(first, wrong_code(mfa, uri), NAS)
    assert retry.outcome is Outcome.PROMPT
    assert retry.message.startswith(MSG_WRONG)
    assert retry.token is not None and retry.token != first
    assert mfa.answer(retry.token, code_for(mfa, uri), NAS).outcome is Outcome.ACCEPT


def test_the_last_allowed_wrong_code_ends_the_dialogue(mfa: MFA) -> None:
    uri = enrolled(mfa)
    token: str | None = begun(mfa)
    tokens: list[str] = []
    steps: list[Step] = []
    for _ in range(mfa.settings.dialogue.max_attempts):
        assert token is not None
        tokens.append(token)
        steps.append(mfa.answer(token, wrong_code(mfa, uri), NAS))
        token = steps[-1].token
    assert [s.outcome for s in steps[:-1]] == [Outcome.PROMPT] * (len(steps) - 1)
    assert steps[-1].outcome is Outcome.REJECT
    assert steps[-1].message == MSG_DENIED
    assert steps[-1].token is None
    # Final: no token of the dialogue takes even a correct code now.
    assert all(is_expired(mfa.answer(t, code_for(mfa, uri), NAS)) for t in tokens)


@pytest.mark.parametrize("reply", ["push", ""])
def test_asking_for_push_without_a_push_device_counts_as_a_wrong_code(
    mfa: MFA, reply: str,
) -> None:
    enrolled(mfa)
    started = mfa.begin("alice", NAS)
    assert started.methods == ("code",) and started.token is not None
    step = mfa.answer(started.token, reply, NAS)
    assert step.outcome is Outcome.PROMPT
    assert step.message.startswith(MSG_WRONG)
    rejected = [e for e in mfa.audit_tail(100)
                if e.action == "mfa.code" and e.outcome == "rejected"]
    assert len(rejected) == 1


# -- the code checked in one call (authenticate_code: RADIUS append, POST /v1/auth/check) --------


def dialogues_stored(mfa: MFA) -> int:
    with mfa.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Dialogue)) or 0)


def wrong_in_one_call(mfa: MFA, uri: str, name: str = "alice") -> Step:
    return mfa.authenticate_code(name, wrong_code(mfa, uri), NAS)


def test_a_code_checked_in_one_call_is_accepted_and_leaves_no_dialogue(mfa: MFA) -> None:
    uri = enrolled(mfa)
    assert mfa.authenticate_code("alice", code_for(mfa, uri), NAS).outcome is Outcome.ACCEPT
    assert dialogues_stored(mfa) == 0


def test_a_wrong_code_checked_in_one_call_prompts_with_a_token_for_the_next_try(
        mfa: MFA) -> None:
    uri = enrolled(mfa)
    retry = wrong_in_one_call(mfa, uri)
    assert retry.outcome is Outcome.PROMPT and retry.message.startswith(MSG_WRONG)
    assert retry.token is not None
    assert mfa.answer(retry.token, code_for(mfa, uri), NAS).outcome is Outcome.ACCEPT


def test_a_wrong_code_checked_in_one_call_counts_as_the_dialogues_first_attempt(
        mfa: MFA) -> None:
    uri = enrolled(mfa)
    step = wrong_in_one_call(mfa, uri)
    outcomes = [step.outcome]
    while step.token is not None:
        step = mfa.answer(step.token, wrong_code(mfa, uri), NAS)
        outcomes.append(step.outcome)
    assert len(outcomes) == mfa.settings.dialogue.max_attempts
    assert outcomes[-1] is Outcome.REJECT and step.message == MSG_DENIED


@pytest.mark.parametrize("settings_extra", ["[dialogue]\nmax_attempts = 1"])
def test_with_one_attempt_a_wrong_code_checked_in_one_call_is_final(mfa: MFA) -> None:
    uri = enrolled(mfa)
    step = wrong_in_one_call(mfa, uri)
    assert step.outcome is Outcome.REJECT and step.message == MSG_DENIED
    assert dialogues_stored(mfa) == 0


def test_an_unknown_name_checked_in_one_call_is_prompted_again_like_a_user_s06(
        mfa: MFA) -> None:
    uri = enrolled(mfa)
    unknown = wrong_in_one_call(mfa, uri, "nobody")
    # As a user with codes and push would be after a wrong code.
    assert unknown.outcome is Outcome.PROMPT and unknown.message.startswith(MSG_WRONG)
    assert unknown.methods == ("code", "push") and unknown.token is not None


def test_a_code_checked_in_one_call_is_refused_when_its_step_was_used_s01(mfa: MFA) -> None:
    uri = enrolled(mfa)
    code = code_for(mfa, uri)
    assert mfa.authenticate_code("alice", code, NAS).outcome is Outcome.ACCEPT
    assert mfa.authenticate_code("alice", code, NAS).outcome is Outcome.PROMPT


# -- bypass codes ----------------------------------------------------------------------------


def test_a_bypass_code_is_accepted_once(mfa: MFA) -> None:
    enrolled(mfa)
    mfa.add_admin("boss")
    (code,) = mfa.issue_bypass("alice", "boss")
    assert login(mfa, "alice", code, NAS)
    assert not login(mfa, "alice", code, NAS)


def test_a_bypass_code_expires_after_its_ttl(mfa: MFA, clock: FakeClock) -> None:
    enrolled(mfa)
    mfa.add_admin("boss")
    (code,) = mfa.issue_bypass("alice", "boss")
    clock.advance(mfa.env.seconds(mfa.settings.bypass.ttl))
    assert not login(mfa, "alice", code, NAS)


def test_a_bypass_code_with_its_own_ttl_works_until_then(mfa: MFA, clock: FakeClock) -> None:
    enrolled(mfa)
    mfa.add_admin("boss")
    first, second = mfa.issue_bypass("alice", "boss", count=2, ttl=3600)
    clock.advance(3599)
    assert login(mfa, "alice", first, NAS)
    clock.advance(1)
    assert not login(mfa, "alice", second, NAS)


def test_a_bypass_code_lets_a_user_without_other_factors_in(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.add_admin("boss")
    (code,) = mfa.issue_bypass("alice", "boss")
    started = mfa.begin("alice", NAS)
    assert started.methods == ("code",) and started.token is not None
    assert mfa.answer(started.token, code, NAS).outcome is Outcome.ACCEPT


# -- exempt users ----------------------------------------------------------------------------


def test_an_exempt_user_is_accepted_at_begin(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.set_enforcement("alice", "exempt")
    step = mfa.begin("alice", NAS)
    assert step.outcome is Outcome.ACCEPT
    assert step.token is None and step.granted


def test_a_member_of_an_exempt_group_is_accepted_at_begin(mfa: MFA) -> None:
    mfa.add_user("alice", groups=("service-accounts",))
    mfa.set_enforcement("service-accounts", "exempt", group=True)
    assert mfa.begin("alice", NAS).outcome is Outcome.ACCEPT


def test_a_user_who_is_not_exempt_and_has_no_factor_is_rejected_at_begin(mfa: MFA) -> None:
    mfa.add_user("alice")
    step = mfa.begin("alice", NAS)
    assert step.outcome is Outcome.REJECT
    assert not step.granted


# -- directory groups (the first factor's directory says which groups a user is in) ----------


def test_a_directory_group_set_to_exempt_lets_a_user_without_factors_in(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    step = mfa.begin("alice", NAS, directory_groups=("vpn-exempt",))
    assert step.outcome is Outcome.ACCEPT


def test_a_required_directory_group_beats_an_exempt_organisation_default(mfa: MFA) -> None:
    mfa.add_admin("boss")
    mfa.set_default_enforcement("boss", "exempt")
    mfa.add_user("alice")
    mfa.set_enforcement("vpn-strict", "required", group=True)
    assert mfa.begin("alice", NAS).outcome is Outcome.ACCEPT
    step = mfa.begin("alice", NAS, directory_groups=("vpn-strict",))
    assert step.outcome is Outcome.REJECT


def test_a_required_directory_group_beats_an_exempt_stored_group(mfa: MFA) -> None:
    mfa.add_user("alice", groups=("service-accounts",))
    mfa.set_enforcement("service-accounts", "exempt", group=True)
    mfa.set_enforcement("vpn-strict", "required", group=True)
    step = mfa.begin("alice", NAS, directory_groups=("vpn-strict",))
    assert step.outcome is Outcome.REJECT


def test_a_required_stored_group_beats_an_exempt_directory_group(mfa: MFA) -> None:
    mfa.add_user("alice", groups=("staff",))
    mfa.set_enforcement("staff", "required", group=True)
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    step = mfa.begin("alice", NAS, directory_groups=("vpn-exempt",))
    assert step.outcome is Outcome.REJECT


def test_the_users_own_setting_beats_an_exempt_directory_group(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.set_enforcement("alice", "required")
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    step = mfa.begin("alice", NAS, directory_groups=("vpn-exempt",))
    assert step.outcome is Outcome.REJECT


def test_an_enroll_at_login_directory_group_offers_the_enrollment(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.set_enforcement("vpn-new", "enroll_at_login", group=True)
    step = mfa.begin("alice", NAS, directory_groups=("vpn-new",))
    assert step.outcome is Outcome.ENROLL


def test_directory_group_names_the_store_does_not_know_are_ignored(mfa: MFA) -> None:
    mfa.add_user("alice")
    step = mfa.begin("alice", NAS, directory_groups=("no-such-group", "x)(cn=*"))
    assert step.outcome is Outcome.REJECT  # the organisation default, required


def test_directory_groups_are_not_written_to_the_store(mfa: MFA) -> None:
    mfa.add_user("alice")
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    mfa.begin("alice", NAS, directory_groups=("vpn-exempt", "other"))
    assert mfa.show_user("alice").groups == ()


def test_an_unknown_user_in_an_exempt_directory_group_still_gets_the_decoy_prompt(
        mfa: MFA) -> None:
    # The store matches names exactly and directories mostly do not: `ALICE` bound in the
    # directory must not escape alice's own `required` through an exempt directory group.
    mfa.add_user("alice")
    mfa.set_enforcement("alice", "required")
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    step = mfa.begin("ALICE", NAS, directory_groups=("vpn-exempt",))
    assert step.outcome is Outcome.PROMPT and step.methods == ("code", "push")


def test_directory_groups_do_not_exempt_an_admin_account(mfa: MFA) -> None:
    mfa.add_admin("boss")
    mfa.set_enforcement("vpn-exempt", "exempt", group=True)
    step = mfa.begin("boss", NAS, kind="admin", directory_groups=("vpn-exempt",))
    assert step.outcome is not Outcome.ACCEPT


def test_a_name_holding_a_nul_gets_the_unknown_users_prompt_s06(mfa: MFA) -> None:
    enrolled(mfa)
    step = mfa.begin("alice\x00", RequestContext(adapter="radius", client="nas\x00"))
    assert step.outcome is Outcome.PROMPT and step.methods == ("code", "push")


# -- the policy row --------------------------------------------------------------------------


def without_policy_row(mfa: MFA) -> None:
    with mfa.store.session() as session:
        session.execute(delete(OrgPolicy))


def test_a_login_on_a_store_without_a_policy_row_uses_the_defaults(mfa: MFA) -> None:
    uri = enrolled(mfa)
    without_policy_row(mfa)
    assert login(mfa, "alice", code_for(mfa, uri))
    with mfa.store.session() as session:
        policy = session.get(OrgPolicy, 1)
        assert policy is not None and policy.mode == "separated"


def test_an_unknown_name_on_a_store_without_a_policy_row_gets_the_decoy_prompt_s06(
    mfa: MFA,
) -> None:
    without_policy_row(mfa)
    step = mfa.begin("mallory", NAS)
    assert step.outcome is Outcome.PROMPT
    assert step.methods == ("code", "push")
