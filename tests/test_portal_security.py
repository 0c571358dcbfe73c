"""The user portal's Security page (docs/portal.md): what it shows and what its forms do.

Everything a test asserts about state is read back from the core (`show_user`, the view the CLI
prints) or from the page; what a login accepts is checked with the core's own login. Both store
backends, frozen clock, one behaviour per test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_unified_mfa.cli.main import main as cli
from pam_unified_mfa.core import MFA
from pam_unified_mfa.enrollment_uri import parse_uri
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed, login, wrong_code
from tests.portal_client import PASSWORD, Browser, attr, entries, portal_client, qr_uri


@pytest.fixture
def browser(mfa: MFA) -> Iterator[Browser]:
    with portal_client(mfa) as client:
        yield Browser(client, "/portal")


def merge(mfa: MFA) -> None:
    mfa.add_admin("boss", roles=("billing",))
    mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)


def unified_alice(mfa: MFA) -> tuple[str, Device]:
    """alice on the unified Protect enrollment: scanned (push registered) and confirmed."""
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    result = mfa.enroll("alice")
    device = Device(mfa, result.uri)
    assert login(mfa, "alice", code_for(mfa, result.uri))
    mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    return result.uri, device


def sign_in(mfa: MFA, browser: Browser, uri: str) -> str:
    """Signed in as alice; the clock then moves one step, so the next code is a new one."""
    page = browser.sign_in("alice", code_for(mfa, uri)).text
    mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    return page


# -- what the page shows ----------------------------------------------------------------------


def test_r05_unified_enrollment_is_one_active_protect_card_with_push_and_authenticator_app(
    mfa: MFA, browser: Browser,
) -> None:
    merge(mfa)
    uri, _ = unified_alice(mfa)
    page = sign_in(mfa, browser, uri)
    assert 'data-unified="true" data-state="active"' in page
    assert ">Protect<" in page
    assert entries(page) == [("protect_push", "active"), ("protect_totp", "active")]
    assert "Protect Push" in page and "Authenticator App" in page
    assert "Reset Authenticator App" in page


def test_after_a_merge_the_page_announces_the_unified_experience(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    assert 'id="banner"' not in sign_in(mfa, browser, uri)
    merge(mfa)
    page = browser.get("/").text
    assert 'id="banner"' in page and "one Protect enrollment" in page


def test_r13_a_user_not_on_the_unified_enrollment_is_offered_its_qr(
    mfa: MFA, browser: Browser, tmp_path: Path,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    merge(mfa)
    page = sign_in(mfa, browser, uri)
    assert 'id="suggest-unified"' in page and 'id="enroll-unified"' in page
    page = browser.post("/enroll", {"kind": "unified"}).text
    enrollment = parse_uri(qr_uri(page, "enroll-qr", tmp_path))
    assert enrollment.totp_secret and enrollment.token  # one scan: push and TOTP (R05)
    assert {f.kind for f in mfa.show_user("alice").factors if f.state == "pending"} == {
        "protect_push", "protect_totp"}


def test_enrolling_push_shows_a_qr_the_protect_app_registers_with(
    mfa: MFA, browser: Browser, tmp_path: Path,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    sign_in(mfa, browser, uri)
    page = browser.post("/enroll", {"kind": "push"}).text
    assert attr(page, "enroll", "data-kind") == "push"
    new = qr_uri(page, "enroll-qr", tmp_path)
    Device(mfa, new)
    kinds = {f.kind: f.state for f in mfa.show_user("alice").factors}
    assert kinds == {"protect_totp": "active", "protect_push": "active"}


def test_a_wrong_code_does_not_finish_a_pending_enrollment(
    mfa: MFA, browser: Browser, tmp_path: Path,
) -> None:
    merge(mfa)
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    mfa.set_enforcement("alice", "enroll_at_login")
    first = qr_uri(browser.password("alice").text, "mfa-qr", tmp_path)
    browser.answer(code_for(mfa, first))  # signed in; the unified TOTP is active, push pending
    assert 'id="finish"' in browser.get("/").text
    refused = browser.post("/enroll/confirm", {"code": wrong_code(mfa, first)})
    assert refused.status_code == 400 and "did not finish" in refused.text


def test_r15_the_page_lists_exactly_the_factors_the_cli_prints(
    mfa: MFA, browser: Browser, store_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    merge(mfa)
    uri, _ = unified_alice(mfa)
    mfa.add_admin("help")
    mfa.issue_bypass("alice", "help", count=2)
    page = sign_in(mfa, browser, uri)
    assert cli(["user", "show", "alice", "--json", "--home", str(mfa.home),
                "--store", store_url]) == 0
    printed = json.loads(capsys.readouterr().out)["factors"]
    shown = [(f["kind"], f["state"]) for f in printed if f["kind"] != "bypass"]
    assert sorted(entries(page)) == sorted(shown)
    assert 'id="bypass-left">2 single-use' in page


# -- reset (R07, R12) ---------------------------------------------------------------------------


def test_r07_reset_authenticator_app_refuses_a_code_that_is_not_a_current_protect_code(
    mfa: MFA, browser: Browser,
) -> None:
    merge(mfa)
    uri, _ = unified_alice(mfa)
    sign_in(mfa, browser, uri)
    before = mfa.show_user("alice").factors
    browser.get("/reset")
    page = browser.post("/reset", {"code": wrong_code(mfa, uri), "factor": ""})
    assert page.status_code == 400 and attr(page.text, "error", "role") == "alert"
    assert "Protect authenticator is required" in page.text
    assert 'id="enroll-qr"' not in page.text
    assert mfa.show_user("alice").factors == before


def test_r07_r12_reset_with_a_protect_code_shows_a_new_qr_and_keeps_the_old_app_working(
    mfa: MFA, browser: Browser, tmp_path: Path,
) -> None:
    merge(mfa)
    uri, _ = unified_alice(mfa)
    sign_in(mfa, browser, uri)
    browser.get("/reset")
    page = browser.post("/reset", {"code": code_for(mfa, uri), "factor": ""}).text
    assert 'id="swap-note"' in page
    new = qr_uri(page, "enroll-qr", tmp_path)
    assert parse_uri(new).token  # unified: push and TOTP again (R06)
    mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    assert login(mfa, "alice", code_for(mfa, uri))  # the old app still works (R12)
    browser.get("/")
    assert browser.post("/enroll/confirm", {"code": code_for(mfa, new)}).url.params[
        "notice"] == "confirmed"
    mfa.env.clock.advance(30)  # type: ignore[attr-defined]
    assert not login(mfa, "alice", code_for(mfa, uri))  # swapped: the old one is retired


# -- delete (R11, R12) --------------------------------------------------------------------------


def test_r12_deleting_the_last_factor_is_refused_with_a_warning(
    mfa: MFA, browser: Browser,
) -> None:
    merge(mfa)
    uri, _ = unified_alice(mfa)
    sign_in(mfa, browser, uri)
    card = mfa.show_user("alice").factors[0].id
    browser.get(f"/factors/{card}/delete")
    page = browser.post(f"/factors/{card}/delete")
    assert page.status_code == 409
    assert "last working factor" in page.text and 'id="warning"' in page.text
    assert [f.state for f in mfa.show_user("alice").factors] == ["active", "active"]


def test_r11_separated_push_and_totp_are_separate_entries_each_removable(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    push = Device(mfa, mfa.enroll("alice", "push").uri)
    page = sign_in(mfa, browser, uri)
    assert page.count('data-unified="false"') == 2
    assert sorted(entries(page)) == [("protect_push", "active"), ("protect_totp", "active")]
    browser.get(f"/factors/{push.factor_id}/delete")
    assert browser.post(f"/factors/{push.factor_id}/delete").url.params["notice"] == "deleted"
    assert [f.kind for f in mfa.show_user("alice").factors] == ["protect_totp"]


def test_r08_r11_another_vendors_totp_is_offered_only_when_the_policy_allows_it(
    mfa: MFA, browser: Browser,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    page = sign_in(mfa, browser, uri)
    assert 'id="enroll-third_party_totp"' not in page
    refused = browser.post("/enroll", {"kind": "third_party_totp"})
    assert refused.status_code == 409 and "R08" in refused.text
    mfa.add_admin("ops")
    mfa.confirm("ops", mfa.preview("ops", "totp_source", "third_party").confirmation)
    page = browser.get("/").text
    assert 'id="enroll-third_party_totp"' in page
    assert 'id="enroll-totp"' not in page


def test_enrolling_needs_a_recent_sign_in(
    mfa: MFA, browser: Browser, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    sign_in(mfa, browser, uri)
    clock.advance(mfa.settings.seconds(mfa.settings.portal.reauth_window) + 1)
    browser.get("/")
    assert browser.post("/enroll", {"kind": "push"}).url.params["reauth"] == "1"


def test_a_user_cannot_act_on_another_users_factor(mfa: MFA, browser: Browser) -> None:
    mfa.add_user("bob")
    bob = enroll_confirmed(mfa, "bob", "totp").factor_ids[0]
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    uri = enroll_confirmed(mfa, "alice", "totp").uri
    mfa.enroll("alice", "push")
    sign_in(mfa, browser, uri)
    browser.get(f"/factors/{bob}/delete")
    assert browser.post(f"/factors/{bob}/delete").status_code == 404
    assert [f.state for f in mfa.show_user("bob").factors] == ["active"]
