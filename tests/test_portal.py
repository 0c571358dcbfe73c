"""Portal sign-in, sessions and CSRF (docs/portal.md), through HTTP like a browser.

The service runs in-process around a fresh core on both store backends, with the tests' frozen
clock; set-up goes through the core, what a test asserts comes from the pages. Each test proves
one behaviour; rule ids are in the names where a rule is what it proves.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pam_unified_mfa.cli.main import main as cli
from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.first_factor import FirstFactor
from pam_unified_mfa.settings import Settings, _build
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed, wrong_code
from tests.portal_client import PASSWORD, Browser, attr, portal_client, qr_uri

COOKIE = "umfa_portal"


@pytest.fixture
def client(mfa: MFA) -> Iterator[TestClient]:
    with portal_client(mfa) as running:
        yield running


@pytest.fixture
def browser(client: TestClient) -> Browser:
    return Browser(client, "/portal")


def alice(mfa: MFA, kind: str | None = "totp") -> str:
    """alice with the portal password and, unless kind is None, a confirmed factor; returns
    its enrollment URI (or "")."""
    mfa.add_user("alice")
    mfa.set_password("user", "alice", PASSWORD)
    return enroll_confirmed(mfa, "alice", kind).uri if kind else ""


def signed_in(mfa: MFA, browser: Browser) -> str:
    uri = alice(mfa)
    page = browser.sign_in("alice", code_for(mfa, uri))
    assert 'id="mfa-section"' in page.text
    return uri


# -- sign-in -----------------------------------------------------------------------------------


def test_a_page_without_a_session_leads_to_the_sign_in_form(browser: Browser) -> None:
    page = browser.get("/")
    assert page.url.path == "/portal/login"
    assert 'id="login-password"' in page.text


def test_password_then_totp_code_opens_the_security_page(mfa: MFA, browser: Browser) -> None:
    uri = alice(mfa)
    assert 'data-status="prompt"' in browser.password("alice").text
    page = browser.answer(code_for(mfa, uri))
    assert page.url.path == "/portal/"
    assert 'id="who">alice<' in page.text


def test_s06_unknown_user_and_wrong_password_get_the_same_answer(
    mfa: MFA, browser: Browser,
) -> None:
    alice(mfa)
    wrong = browser.password("alice", "not the password at all")
    unknown = browser.password("mallory", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert attr(wrong.text, "error", "role") == attr(unknown.text, "error", "role") == "alert"
    assert wrong.text.count("not right") == 1
    assert unknown.text.replace("mallory", "X") == wrong.text.replace("alice", "X")


def test_r13_a_wrong_code_is_shown_and_another_try_is_offered(mfa: MFA, browser: Browser) -> None:
    uri = alice(mfa)
    browser.password("alice")
    page = browser.answer(wrong_code(mfa, uri))
    assert 'data-status="prompt"' in page.text
    assert "Invalid passcode" in page.text
    assert browser.answer(code_for(mfa, uri)).url.path == "/portal/"


def test_s02_wrong_local_passwords_count_toward_the_cores_lock(
    mfa: MFA, browser: Browser,
) -> None:
    uri = alice(mfa)
    for _ in range(mfa.settings.throttle.max_failures):
        assert browser.password("alice", "wrong password, again").status_code == 401
    page = browser.password("alice")
    assert page.status_code == 401
    assert "Too many failed attempts" in page.text
    assert mfa.show_user("alice").locked
    assert 'id="mfa-code"' not in page.text and code_for(mfa, uri)


def test_s03_push_shows_the_number_and_signs_in_once_the_device_approves(
    mfa: MFA, browser: Browser,
) -> None:
    alice(mfa, kind=None)
    device = Device(mfa, mfa.enroll("alice", "push").uri)
    page = browser.password("alice")
    assert 'id="mfa-push"' in page.text
    page = browser.post("/login/mfa", {"action": "push", "code": ""})
    assert 'data-status="push_pending"' in page.text
    assert 'http-equiv="refresh"' in page.text  # the page follows the push without script
    number = page.text.split('id="mfa-number"')[1].split(">")[1].split("<")[0].strip()
    assert number.isdigit()
    assert device.approve(number) == "approved"
    page = browser.get("/login/mfa")
    assert page.url.path == "/portal/"


def test_r13_enrollment_at_sign_in_shows_a_qr_whose_first_code_signs_in(
    mfa: MFA, browser: Browser, tmp_path: Path,
) -> None:
    alice(mfa, kind=None)
    mfa.set_enforcement("alice", "enroll_at_login")
    page = browser.password("alice")
    assert 'data-status="enroll"' in page.text
    assert "otpauth" not in page.text  # the URI (and its seed) only inside the image
    uri = qr_uri(page.text, "mfa-qr", tmp_path)
    [pending] = mfa.show_user("alice").factors
    assert pending.state == "pending"
    assert browser.answer(code_for(mfa, uri)).url.path == "/portal/"
    assert [f.state for f in mfa.show_user("alice").factors] == ["active"]


def test_a_user_without_a_factor_under_required_is_refused_with_the_cores_message(
    mfa: MFA, browser: Browser,
) -> None:
    alice(mfa, kind=None)
    page = browser.password("alice")
    assert page.status_code == 401
    assert "No MFA method is enrolled" in page.text


# -- CSRF --------------------------------------------------------------------------------------


def test_csrf_a_sign_in_form_posted_without_its_token_is_refused(
    mfa: MFA, browser: Browser,
) -> None:
    alice(mfa)
    browser.get("/login")
    page = browser.post("/login", {"name": "alice", "password": PASSWORD}, csrf=False)
    assert page.status_code == 403
    assert 'id="mfa"' not in page.text


def test_csrf_a_form_posted_without_its_token_changes_nothing(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser)
    before = mfa.show_user("alice").factors
    page = browser.post("/enroll", {"kind": "push"}, csrf=False)
    assert page.status_code == 403
    assert mfa.show_user("alice").factors == before


def test_csrf_a_token_from_another_session_is_refused(
    mfa: MFA, client: TestClient, browser: Browser,
) -> None:
    signed_in(mfa, browser)
    other = Browser(TestClient(client.app, base_url="https://testserver"), "/portal")
    other.get("/login")
    page = browser.post("/enroll", {"kind": "push", "csrf": other.csrf()}, csrf=False)
    assert page.status_code == 403


# -- the session -------------------------------------------------------------------------------


def test_the_session_cookie_is_secure_httponly_samesite_strict_on_its_portal_path(
    mfa: MFA, client: TestClient,
) -> None:
    page = client.get("/portal/login")
    header = page.headers["set-cookie"].lower()
    assert header.startswith(f"{COOKIE}=")
    for flag in ("secure", "httponly", "samesite=strict", "path=/portal"):
        assert flag in header, header


def test_signing_in_issues_a_new_cookie_so_a_planted_one_is_worthless(
    mfa: MFA, browser: Browser,
) -> None:
    uri = alice(mfa)
    browser.get("/login")
    planted = browser.cookie(COOKIE)
    browser.password("alice")
    during = browser.cookie(COOKIE)
    browser.answer(code_for(mfa, uri))
    after = browser.cookie(COOKIE)
    assert len({planted, during, after}) == 3
    stale = TestClient(browser.client.app, base_url="https://testserver",
                       cookies={COOKIE: str(planted)})
    assert stale.get("/portal/").url.path == "/portal/login"


def test_an_idle_session_ends(mfa: MFA, clock: FakeClock, browser: Browser) -> None:
    signed_in(mfa, browser)
    clock.advance(mfa.settings.seconds(mfa.settings.portal.session_idle) + 1)
    assert browser.get("/").url.path == "/portal/login"


def test_a_busy_session_still_ends_at_its_absolute_lifetime(
    mfa: MFA, clock: FakeClock, browser: Browser,
) -> None:
    signed_in(mfa, browser)
    idle = mfa.settings.seconds(mfa.settings.portal.session_idle)
    absolute = mfa.settings.seconds(mfa.settings.portal.session_absolute)
    while clock.now < 1_800_000_000.0 + absolute - idle / 2:
        clock.advance(idle / 2)
        assert browser.get("/").url.path == "/portal/"
    clock.advance(idle / 2 + 1)
    assert browser.get("/").url.path == "/portal/login"


def test_a_sensitive_action_after_the_reauth_window_asks_to_sign_in_again(
    mfa: MFA, clock: FakeClock, browser: Browser,
) -> None:
    signed_in(mfa, browser)
    before = mfa.show_user("alice").factors
    clock.advance(mfa.settings.seconds(mfa.settings.portal.reauth_window) + 1)
    browser.get("/")
    page = browser.post("/enroll", {"kind": "push"})
    assert page.url.path == "/portal/login" and page.url.params["reauth"] == "1"
    assert "Sign in again" in page.text and 'value="alice"' in page.text
    assert mfa.show_user("alice").factors == before


def test_signing_out_ends_the_session_on_the_server(mfa: MFA, browser: Browser) -> None:
    signed_in(mfa, browser)
    cookie = browser.cookie(COOKIE)
    page = browser.post("/logout")
    assert page.url.path == "/portal/login"
    replay = TestClient(browser.client.app, base_url="https://testserver",
                        cookies={COOKIE: str(cookie)})
    assert replay.get("/portal/").url.path == "/portal/login"


def test_the_page_after_sign_in_is_never_outside_the_portal(mfa: MFA, browser: Browser) -> None:
    uri = alice(mfa)
    browser.get("/login?next=//evil.example/x")
    assert attr(browser.text, "login", "id") == "login"
    assert 'value="/portal/"' in browser.text
    browser.post("/login", {"name": "alice", "password": PASSWORD, "next": "https://evil/"})
    assert browser.answer(code_for(mfa, uri)).url.path == "/portal/"


def test_pages_forbid_framing_caching_and_foreign_resources(client: TestClient) -> None:
    page = client.get("/portal/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"


def test_the_stylesheet_is_served(client: TestClient) -> None:
    sheet = client.get("/portal/static/portal.css")
    assert sheet.status_code == 200 and "max-width" in sheet.text


def test_portal_pages_are_not_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/portal", "/admin"))]


@pytest.mark.parametrize("settings_extra", ["[portal]\nenabled = false"])
def test_a_disabled_portal_answers_404(client: TestClient) -> None:
    assert client.get("/portal/login").status_code == 404
    assert client.get("/admin/login").status_code == 404


# -- local passwords (CLI) ----------------------------------------------------------------------


def test_user_password_from_the_cli_is_what_the_portal_accepts(
    mfa: MFA, browser: Browser, monkeypatch: pytest.MonkeyPatch, store_url: str,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    home = mfa.home
    assert home is not None
    monkeypatch.setattr("sys.stdin", io.StringIO("a new long password 1\n"))
    assert cli(["user", "password", "alice", "--stdin", "--home", str(home),
                "--store", store_url]) == 0
    assert browser.password("alice", PASSWORD).status_code == 401
    assert 'id="mfa"' in browser.password("alice", "a new long password 1").text
    assert browser.answer(code_for(mfa, uri)).url.path == "/portal/"
    assert [e.action for e in mfa.audit_tail(50)].count("password.set") == 1


def test_a_short_password_is_refused_by_the_cli(
    mfa: MFA, monkeypatch: pytest.MonkeyPatch, store_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mfa.add_user("alice")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli(["user", "password", "alice", "--stdin", "--home", str(mfa.home),
                "--store", store_url]) == 2
    assert "12 to 1024 characters" in capsys.readouterr().err


# -- the first factor from a directory -------------------------------------------------------------


@pytest.mark.parametrize("settings_extra", ['[portal]\nfirst_factor = "pam"\n'
                                            'pam_service = "umfa-test"'])
def test_first_factor_pam_asks_the_configured_pam_service_not_the_local_passwords(
    mfa: MFA, monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str, str]] = []

    def fake_pam(service: str) -> Callable[[str, str], FirstFactor]:
        def check(user: str, password: str) -> FirstFactor:
            asked.append((service, user, password))
            return FirstFactor(password == "from the host")
        return check

    monkeypatch.setattr("pam_unified_mfa.portal.password.pam_check", fake_pam)
    uri = alice(mfa)  # a local password exists too, and must not count
    with portal_client(mfa) as client:
        browser = Browser(client, "/portal")
        assert browser.password("alice", PASSWORD).status_code == 401
        assert 'id="mfa"' in browser.password("alice", "from the host").text
        assert browser.answer(code_for(mfa, uri)).url.path == "/portal/"
    assert asked == [("umfa-test", "alice", PASSWORD), ("umfa-test", "alice", "from the host")]


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "reason"), [
    ({"first_factor": "none"}, "first_factor must be one of local, ldap, pam"),
    ({"first_factor": "ldap"}, "needs [portal.ldap] url"),
    ({"session_idle": "9h"}, "session_idle must be"),
    ({"reauth_window": "0s"}, "reauth_window must be"),
    ({"session_absolute": "soon"}, "invalid duration"),
    ({"cookie": "x"}, "unknown setting portal.cookie"),
])
def test_portal_settings_are_checked_at_load(table: dict[str, str], reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        _build(Settings, {"portal": table}, "")
