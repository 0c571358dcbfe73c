"""The portals in a real browser (e2e): Debian's headless Chromium through Playwright, against
a real `unified-mfa serve`, with the reference authenticator as the user's phone.

- A billing admin signs in (password + TOTP), merges with an explicit Confirm; an admin
  without the billing role sees Merge disabled (R02, R03).
- A user signs in with password + TOTP, sees the unified banner, scans the QR shown on the page
  (the test screenshots the QR, decodes it with zbarimg and enrolls the reference authenticator
  from it), sees "Protect Push" and "Authenticator App", resets the Authenticator App with a
  Protect code (R07), and is refused deleting their last factor (R12).
- A form posted by the browser without its CSRF token is refused.

Set-up goes through the CLI on the service's home, as an administrator would do it. Time is
real: codes are computed for the current step, and a second code of the same key is taken from
the next step (still inside the window), never a replay. Screenshots of each page go to the
test's tmp_path; with UNIFIED_MFA_SCREENSHOTS=1 (scripts/portal-screenshots) they are also
written to docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page

from tests.browser import chromium
from tests.helpers import free_port, require_tool
from tests.portal_client import PASSWORD
from tests.test_authenticator import SERVER, App, Service, _wait_until_healthy

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PHONE = {"width": 420, "height": 860}
WIDE = {"width": 1000, "height": 760}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """`unified-mfa serve` on a free loopback port with a fresh home (plain http: loopback)."""
    home = tmp_path / "server"
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "UNIFIED_MFA_HOME": str(home)}
    subprocess.run([str(SERVER), "init", "--public-url", url], env=env, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SERVER), "serve"], env=env, stdout=sink, stderr=sink,
                                   stdin=subprocess.DEVNULL)
    running = Service(home, url, process)
    try:
        _wait_until_healthy(running, log)
        yield running
    finally:
        running.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    """Where this test's screenshots go; copied to docs/screenshots/ when asked for."""
    folder = tmp_path / "shots"
    folder.mkdir()
    yield folder
    if os.environ.get("UNIFIED_MFA_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copyfile(shot, SCREENSHOTS / shot.name)


def new_page(browser: Browser, viewport: dict[str, int]) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def set_password(service: Service, kind: str, name: str) -> None:
    result = subprocess.run([str(SERVER), kind, "password", name, "--stdin"],
                            input=PASSWORD + "\n", env=service.env(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def totp_of(uri: str) -> pyotp.TOTP:
    key = pyotp.parse_uri(uri)
    assert isinstance(key, pyotp.TOTP)
    return key


def next_code(uri: str) -> str:
    """The code of the next time step: inside the window, never a replay of this step's."""
    return totp_of(uri).at(time.time() + 30)


def sign_in(page: Page, service: Service, prefix: str, name: str, code: str,
            shots: Path | None = None) -> None:
    page.goto(f"{service.url}{prefix}/")
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    if shots:
        page.screenshot(path=str(shots / f"{prefix.strip('/')}-sign-in.png"), full_page=True)
    page.click("#login-submit")
    page.wait_for_selector("#mfa")
    if shots:
        page.screenshot(path=str(shots / f"{prefix.strip('/')}-mfa.png"), full_page=True)
    page.fill("#mfa-code", code)
    page.click("#mfa-submit")
    page.wait_for_url(f"{service.url}{prefix}/")


def admin_with_totp(service: Service, name: str, *roles: str) -> str:
    service.ok("admin", "add", name, *[arg for role in roles for arg in ("--role", role)])
    set_password(service, "admin", name)
    return service.ok("admin", "enroll", name, "--format", "uri").stdout.strip()


def test_r02_r03_a_billing_admin_merges_with_confirm_and_another_admin_cannot(
    service: Service, browser: Browser, shots: Path,
) -> None:
    service.ok("user", "add", "alice")
    boss = admin_with_totp(service, "boss", "billing")
    page = new_page(browser, WIDE)
    sign_in(page, service, "/admin", "boss", totp_of(boss).now(), shots)
    assert page.is_visible("#merge-banner")
    assert page.is_enabled("#merge")
    page.screenshot(path=str(shots / "admin-configurations.png"), full_page=True)
    page.click("#merge-offer")
    page.wait_for_selector("#confirm")
    assert "separated -> unified" in page.inner_text("#changes")
    page.screenshot(path=str(shots / "admin-merge-confirm.png"), full_page=True)
    assert '"mode": "separated"' in service.ok("policy", "show", "--json").stdout
    page.click("#confirm-apply")
    page.wait_for_selector("#notice")
    assert page.get_attribute("#policy", "data-mode") == "unified"
    assert '"mode": "unified"' in service.ok("policy", "show", "--json").stdout
    page.goto(f"{service.url}/admin/users/alice")
    page.screenshot(path=str(shots / "admin-user.png"), full_page=True)

    ops = admin_with_totp(service, "ops")
    other = new_page(browser, WIDE)
    sign_in(other, service, "/admin", "ops", totp_of(ops).now())
    assert not other.is_enabled("#separate")
    assert other.is_visible("#needs-billing")


def test_r07_r12_r13_a_user_scans_the_unified_qr_resets_and_cannot_delete_the_last_factor(
    service: Service, browser: Browser, shots: Path, tmp_path: Path,
) -> None:
    zbarimg = require_tool("zbarimg", "zbar-tools")
    service.ok("user", "add", "alice")
    set_password(service, "user", "alice")
    old = service.ok("enroll", "alice", "--kind", "totp", "--format", "uri").stdout.strip()
    service.merge()
    page = new_page(browser, PHONE)
    sign_in(page, service, "/portal", "alice", totp_of(old).now(), shots)

    # The unified banner, and the unified QR offered to a user not on it yet (R13).
    assert page.is_visible("#banner")
    page.click("#enroll-unified")
    page.wait_for_selector("#enroll-qr")
    page.screenshot(path=str(shots / "portal-enroll.png"), full_page=True)
    qr = tmp_path / "qr.png"
    page.locator("#enroll-qr").screenshot(path=str(qr))
    decoded = subprocess.run([zbarimg, "--raw", "-q", str(qr)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert decoded.returncode == 0, decoded.stderr
    uri = decoded.stdout.strip()
    assert uri.startswith("otpauth://totp/") and "enroll_token=" in uri
    phone = App(tmp_path / "phone")
    assert phone.json("enroll", uri)["enrolled"] == "push + TOTP"
    page.fill("#confirm-code", phone.ok("code").stdout.strip())
    page.click("#confirm-submit")
    page.wait_for_selector("#notice")

    # The Protect enrollment: active, with its two entries (R05).
    protect = page.locator('.card[data-unified="true"]')
    assert protect.get_attribute("data-state") == "active"
    labels = protect.locator(".entry .label").all_inner_texts()
    assert labels == ["Protect Push", "Authenticator App"]
    assert protect.locator('.entry[data-state="active"]').count() == 2
    page.screenshot(path=str(shots / "portal-security.png"), full_page=True)

    # The old separate TOTP may go (the Protect enrollment remains)...
    page.locator('.card[data-unified="false"] a[id^="delete-"]').click()
    page.click("#delete-confirm")
    page.wait_for_selector("#notice")
    assert page.locator('.card[data-unified="false"]').count() == 0
    # ...but the last working factor may not (R12).
    page.locator('.card[data-unified="true"] a[id^="delete-"]').click()
    page.click("#delete-confirm")
    page.wait_for_selector("#warning")
    assert "last working factor" in page.inner_text("#warning")
    page.screenshot(path=str(shots / "portal-delete-refused.png"), full_page=True)

    # Reset Authenticator App: a current Protect code proves possession (R07).
    page.locator('.card[data-unified="true"] a[id^="reset-"]').click()
    page.wait_for_selector("#reset-code")
    page.screenshot(path=str(shots / "portal-reset.png"), full_page=True)
    page.fill("#reset-code", next_code(uri))
    page.click("#reset-submit")
    page.wait_for_selector("#enroll-qr")
    assert page.is_visible("#swap-note")
    page.screenshot(path=str(shots / "portal-reset-qr.png"), full_page=True)
    shown = service.ok("user", "show", "alice", "--json").stdout
    assert shown.count('"state": "pending"') == 2  # the replacement waits for its scan (R12)


def test_csrf_a_form_the_browser_posts_without_its_token_is_refused(
    service: Service, browser: Browser,
) -> None:
    service.ok("user", "add", "alice")
    set_password(service, "user", "alice")
    uri = service.ok("enroll", "alice", "--kind", "totp", "--format", "uri").stdout.strip()
    page = new_page(browser, PHONE)
    sign_in(page, service, "/portal", "alice", totp_of(uri).now())
    # The browser's own cookies, but no token: what a cross-site form would send at best.
    refused = page.context.request.post(f"{service.url}/portal/enroll",
                                        form={"kind": "push"})
    assert refused.status == 403
    with_token = page.context.request.post(f"{service.url}/portal/enroll", form={
        "kind": "push", "csrf": page.get_attribute('input[name="csrf"]', "value") or ""})
    assert with_token.status == 200
