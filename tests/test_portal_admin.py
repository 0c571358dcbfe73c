"""The admin portal's MFA Configurations (docs/portal.md): sign-in of admin accounts (R14),
merge and separate (R02, R03), the TOTP source (R08), the user list and help for users.

The service runs in-process around a fresh core on both store backends, frozen clock. State is
read back from the core and the audit trail, which every surface shares (R15).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from pam_unified_mfa.core import MFA
from tests.helpers import code_for, enroll_confirmed, login
from tests.portal_client import PASSWORD, Browser, attr, portal_client


@pytest.fixture
def client(mfa: MFA) -> Iterator[TestClient]:
    with portal_client(mfa) as running:
        yield running


@pytest.fixture
def browser(client: TestClient) -> Browser:
    return Browser(client, "/admin")


def admin(mfa: MFA, name: str, *roles: str) -> str:
    """An admin not linked to a user, with the portal password and a confirmed TOTP (R14)."""
    mfa.add_admin(name, roles=roles)
    mfa.set_password("admin", name, PASSWORD)
    result = mfa.enroll(name, admin=True)
    mfa.confirm_enrollment(name, code_for(mfa, result.uri), admin=True)
    mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    return result.uri


def signed_in(mfa: MFA, browser: Browser, name: str, *roles: str) -> str:
    uri = admin(mfa, name, *roles)
    page = browser.sign_in(name, code_for(mfa, uri))
    assert page.url.path == "/admin/", page.text[:2000]
    return page.text


def audit(mfa: MFA, action: str) -> list[tuple[str, str, str]]:
    return [(e.actor, e.outcome, e.adapter) for e in mfa.audit_tail(100) if e.action == action]


# -- sign-in (R14) ------------------------------------------------------------------------------


def test_r14_an_admin_not_linked_to_a_user_signs_in_with_their_own_totp(
    mfa: MFA, browser: Browser,
) -> None:
    page = signed_in(mfa, browser, "root")
    assert 'id="who">root<' in page and "MFA Configurations" in page


def test_r14_a_linked_admin_signs_in_with_the_users_factors(mfa: MFA, browser: Browser) -> None:
    mfa.add_user("carol")
    uri = enroll_confirmed(mfa, "carol", "totp").uri
    mfa.add_admin("carol-admin", linked_user="carol")
    mfa.set_password("admin", "carol-admin", PASSWORD)
    page = browser.sign_in("carol-admin", code_for(mfa, uri))
    assert page.url.path == "/admin/"


def test_r14_a_users_password_and_code_do_not_open_the_admin_portal(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("dave")
    mfa.set_password("user", "dave", PASSWORD)
    enroll_confirmed(mfa, "dave", "totp")
    assert browser.password("dave").status_code == 401


def test_a_user_portal_session_does_not_open_the_admin_portal(
    mfa: MFA, client: TestClient,
) -> None:
    mfa.add_user("dave")
    mfa.set_password("user", "dave", PASSWORD)
    uri = enroll_confirmed(mfa, "dave", "totp").uri
    Browser(client, "/portal").sign_in("dave", code_for(mfa, uri))
    assert client.get("/admin/").url.path == "/admin/login"


# -- merge and separate (R02, R03) ---------------------------------------------------------------


def test_r02_a_billing_admin_sees_merge_enabled_and_the_merge_banner(
    mfa: MFA, browser: Browser,
) -> None:
    page = signed_in(mfa, browser, "boss", "billing")
    assert 'id="merge-banner"' in page
    assert attr(page, "merge", "disabled") is None
    assert 'id="merge" disabled' not in page


def test_r02_an_admin_without_billing_sees_merge_disabled_with_the_reason(
    mfa: MFA, browser: Browser,
) -> None:
    page = signed_in(mfa, browser, "ops")
    assert 'id="merge" disabled' in page and 'id="merge-offer" disabled' in page
    assert 'id="needs-billing"' in page and "billing role" in page


def test_r02_a_merge_posted_by_an_admin_without_billing_is_refused_and_nothing_changes(
    mfa: MFA, browser: Browser,
) -> None:
    signed_in(mfa, browser, "ops")
    page = browser.post("/policy/preview", {"action": "merge", "argument": ""})
    assert page.status_code == 403 and "billing" in page.text
    assert mfa.policy().mode == "separated"
    assert audit(mfa, "policy.merge") == []


def test_r03_merge_shows_what_will_change_and_changes_nothing_before_confirm(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    signed_in(mfa, browser, "boss", "billing")
    page = browser.post("/policy/preview", {"action": "merge", "argument": ""})
    assert attr(page.text, "confirm", "data-action") == "merge"
    assert "separated -&gt; unified" in page.text and "Users: 1" in page.text
    assert 'id="confirm-apply"' in page.text
    assert mfa.policy().mode == "separated"
    assert audit(mfa, "policy.merge") == [("boss", "previewed", "portal")]


def test_r03_merge_is_applied_by_confirm_and_audited(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "boss", "billing")
    browser.post("/policy/preview", {"action": "merge", "argument": ""})
    page = browser.post("/policy/confirm", {
        "decision": "confirm", "action": "merge",
        "confirmation": _hidden(browser.text, "confirmation")})
    assert page.url.params["notice"] == "merge"
    assert mfa.policy().mode == "unified"
    assert attr(page.text, "policy", "data-mode") == "unified"
    assert audit(mfa, "policy.merge") == [("boss", "previewed", "portal"),
                                          ("boss", "applied", "portal")]


def _hidden(page: str, name: str) -> str:
    marker = f'name="{name}" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_r03_cancel_changes_nothing(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "boss", "billing")
    browser.post("/policy/preview", {"action": "merge", "argument": ""})
    page = browser.post("/policy/confirm", {
        "decision": "cancel", "action": "merge",
        "confirmation": _hidden(browser.text, "confirmation")})
    assert page.url.params["notice"] == "cancelled"
    assert mfa.policy().mode == "separated"


def test_r03_r11_separate_warns_that_it_is_not_recommended(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "boss", "billing")
    mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    page = browser.get("/")
    assert attr(page.text, "separate", "disabled") is None
    page = browser.post("/policy/preview", {"action": "separate", "argument": ""})
    assert "not recommended" in page.text
    browser.post("/policy/confirm", {"decision": "confirm", "action": "separate",
                                     "confirmation": _hidden(browser.text, "confirmation")})
    assert mfa.policy().mode == "separated"


def test_r08_the_totp_source_is_changed_in_two_steps(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "ops")
    page = browser.post("/policy/preview", {"action": "totp_source", "argument": "third_party"})
    assert "protect -&gt; third_party" in page.text
    assert mfa.policy().totp_source == "protect"
    browser.post("/policy/confirm", {"decision": "confirm", "action": "totp_source",
                                     "confirmation": _hidden(browser.text, "confirmation")})
    assert mfa.policy().totp_source == "third_party"


def test_a_confirmation_is_single_use(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "boss", "billing")
    browser.post("/policy/preview", {"action": "merge", "argument": ""})
    confirmation = _hidden(browser.text, "confirmation")
    browser.post("/policy/confirm", {"decision": "confirm", "action": "merge",
                                     "confirmation": confirmation})
    again = browser.post("/policy/confirm", {"decision": "confirm", "action": "merge",
                                             "confirmation": confirmation})
    assert again.status_code == 409 and "already used" in again.text


def test_csrf_a_confirm_posted_without_its_token_is_refused(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "boss", "billing")
    browser.post("/policy/preview", {"action": "merge", "argument": ""})
    page = browser.post("/policy/confirm", {
        "decision": "confirm", "action": "merge",
        "confirmation": _hidden(browser.text, "confirmation")}, csrf=False)
    assert page.status_code == 403
    assert mfa.policy().mode == "separated"


# -- users and help ------------------------------------------------------------------------------


def test_r15_the_user_list_shows_each_users_factor_state(mfa: MFA, browser: Browser) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    mfa.add_user("bob")
    page = signed_in(mfa, browser, "ops")
    row = page.split('data-user="alice"', 1)[1].split("</tr>", 1)[0]
    assert "protect_totp" in row
    row = page.split('data-user="bob"', 1)[1].split("</tr>", 1)[0]
    assert 'class="factors">-<' in row


def test_r07_an_admin_reset_retires_the_factors_and_is_audited(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    signed_in(mfa, browser, "ops")
    browser.get("/users/alice")
    page = browser.post("/users/alice/reset", {})
    assert page.url.params["notice"] == "reset"
    assert '<dd id="must-enroll">yes</dd>' in page.text
    assert not login(mfa, "alice", code_for(mfa, uri))
    assert ("ops", "must_enroll", "portal") in audit(mfa, "factor.reset")


def test_bypass_codes_are_shown_once_and_work_once(mfa: MFA, browser: Browser) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice", "totp")
    signed_in(mfa, browser, "ops")
    browser.get("/users/alice")
    page = browser.post("/users/alice/bypass", {"count": "2"})
    codes = page.text.split('id="bypass-codes"', 1)[1].split("</ul>", 1)[0]
    issued = [c.split("</code>")[0] for c in codes.split("<code>")[1:]]
    assert len(issued) == 2
    assert issued[0] not in browser.get("/users/alice").text
    assert login(mfa, "alice", issued[0]) and not login(mfa, "alice", issued[0])
    assert ("ops", "issued", "portal") in audit(mfa, "bypass.issue")


def test_an_unknown_user_page_says_so(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser, "ops")
    page = browser.get("/users/nobody")
    assert page.status_code == 404 and "no such user" in page.text
