"""The Keycloak authenticator in a real Keycloak, driven by a real browser (e2e).

One Keycloak for the module, stopped when it ends (tests/keycloak_env.py: the pinned version,
fetched through Maven, our JAR from packaging/keycloak/build-jar in providers/, `kc.sh
start-dev` on loopback) and one `unified-mfa serve` with the Keycloak client's public key
registered. Through the Admin REST API the module creates a realm with brute-force detection
and stored events, a public client, and copies of the browser and direct-grant flows with our
step; each test then adds its own users to Keycloak and to our store.

The browser is Debian's headless chromium through Playwright: username and password on
Keycloak's page, then our page (a code, a push with the number to match, or the enrollment
QR), until Keycloak redirects to the application with an authorization code, which the test
exchanges for tokens to see who signed in. Push approvals come from the reference
authenticator (`unified-mfa-authenticator`), as a phone would send them. The direct grant is
the token endpoint with `otp=`. Steps configured otherwise (an RSA key inline, include groups,
an unreachable service in either fail mode) sit in flows bound to clients of their own; the
realm's own steps read the client key from Keycloak's file vault.

Every test uses users of its own, so one test's codes are never another's replays (S01). Time
is real: codes are the current step's, and the only waits are for real processes and for the
page's own refresh. Screenshots of the pages go to each test's tmp_path.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pyotp
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from playwright.sync_api import Browser, Page
from playwright.sync_api import Error as PlaywrightError

from tests.browser import chromium
from tests.helpers import free_port, require_tool
from tests.keycloak_env import (
    Keycloak,
    build_provider_jar,
    relying_party,
    running_keycloak,
)
from tests.test_authenticator import SERVER, App, Service, _pending_push, _wait_until_healthy

pytestmark = pytest.mark.e2e

REALM = "umfa"
CLIENT = "portal"
BRIDGE_CLIENT = "keycloak"
EXEMPT_GROUP = "mfa-exempt"
PASSWORD = "correct horse battery staple"
BROWSER_FLOW = "umfa-browser"
GRANT_FLOW = "umfa-direct-grant"
PAGE_TIMEOUT_MS = 60_000


# -- session: Keycloak, the bridge, the realm -----------------------------------------------


@pytest.fixture(scope="module")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keycloak]:
    work = tmp_path_factory.mktemp("keycloak")
    jar = build_provider_jar(work / "dist")
    with running_keycloak(work, jar) as server:
        print(f"\nKeycloak up in {server.started_in:.0f} s at {server.url}")
        yield server


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`unified-mfa serve` on a free loopback port: the auth API and the Keycloak bridge."""
    work = tmp_path_factory.mktemp("bridge")
    home = work / "server"
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "UNIFIED_MFA_HOME": str(home)}
    subprocess.run([str(SERVER), "init", "--public-url", url], env=env, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    log = work / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SERVER), "serve"], env=env, stdout=sink, stderr=sink,
                                   stdin=subprocess.DEVNULL)
    service = Service(home, url, process)
    try:
        _wait_until_healthy(service, log)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def client_key(bridge: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An EC P-256 key registered as the bridge client; its PKCS#8 PEM goes into Keycloak."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path_factory.mktemp("client") / "keycloak.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM,
                                                     PublicFormat.SubjectPublicKeyInfo))
    bridge.ok("client", "add", BRIDGE_CLIENT, "--public-key", str(public))
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


@pytest.fixture(scope="module")
def redirect_uri() -> Iterator[str]:
    with relying_party() as uri:
        yield uri


@dataclass
class Realm:
    """The test realm: where logins start and how the test reads their result."""

    keycloak: Keycloak
    name: str
    redirect_uri: str

    @property
    def token_url(self) -> str:
        return f"{self.keycloak.url}/realms/{self.name}/protocol/openid-connect/token"

    def auth_url(self) -> str:
        query = urllib.parse.urlencode({
            "client_id": CLIENT, "redirect_uri": self.redirect_uri, "response_type": "code",
            "scope": "openid", "state": secrets.token_urlsafe(8)})
        return f"{self.keycloak.url}/realms/{self.name}/protocol/openid-connect/auth?{query}"

    def password_grant(self, user: str, **extra: str) -> requests.Response:
        return requests.post(self.token_url, timeout=120, data={
            "grant_type": "password", "client_id": CLIENT, "username": user,
            "password": PASSWORD, "scope": "openid", **extra})


def step_config(bridge_url: str, key: str, **extra: str) -> dict[str, str]:
    return {"bridge-url": bridge_url, "client-id": BRIDGE_CLIENT, "client-key": key,
            "timeout-seconds": "10", "fail-mode": "secure", **extra}


@pytest.fixture(scope="module")
def realm(keycloak: Keycloak, bridge: Service, client_key: str, redirect_uri: str) -> Realm:
    admin = keycloak.admin
    admin.create_realm(REALM, bruteForceProtected=True, failureFactor=30,
                       eventsEnabled=True, enabledEventTypes=[])
    admin.create_client(REALM, CLIENT, redirect_uri)
    admin.create_group(REALM, EXEMPT_GROUP)
    # The realm's steps read the key from Keycloak's vault (the RSA and S07 steps hold theirs
    # inline).
    key = keycloak.put_secret(REALM, "unified-mfa-key", client_key)
    config = step_config(bridge.url, key, **{"exclude-groups": EXEMPT_GROUP})

    admin.copy_flow(REALM, "browser", BROWSER_FLOW)
    admin.disable_conditional_subflows(REALM, BROWSER_FLOW)
    admin.add_step(REALM, BROWSER_FLOW, f"{BROWSER_FLOW} forms", "unified-mfa", "umfa-browser",
                   config)
    admin.copy_flow(REALM, "direct grant", GRANT_FLOW)
    admin.disable_conditional_subflows(REALM, GRANT_FLOW)
    admin.add_step(REALM, GRANT_FLOW, GRANT_FLOW, "unified-mfa-direct-grant", "umfa-grant",
                   config)
    admin.update_realm(REALM, browserFlow=BROWSER_FLOW, directGrantFlow=GRANT_FLOW)
    return Realm(keycloak, REALM, redirect_uri)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context (no Keycloak cookies); a screenshot in tmp_path at the end."""
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    tab = context.new_page()
    try:
        yield tab
    finally:
        with contextlib.suppress(PlaywrightError):  # a screenshot for the record, if it can
            tab.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
        context.close()


# -- users -------------------------------------------------------------------------------


@dataclass
class User:
    name: str
    keycloak_id: str
    uri: str | None = None

    def code(self) -> str:
        """The current code of the user's TOTP (what the authenticator app shows now)."""
        assert self.uri is not None
        totp = pyotp.parse_uri(self.uri)
        assert isinstance(totp, pyotp.TOTP)
        return totp.now()


def new_user(realm: Realm, bridge: Service, *, groups: list[str] | None = None) -> User:
    """A user with the test password in Keycloak and the same name in our store."""
    name = f"u{secrets.token_hex(4)}"
    user_id = realm.keycloak.admin.create_user(realm.name, name, PASSWORD, groups)
    bridge.ok("user", "add", name)
    return User(name, user_id)


def totp_user(realm: Realm, bridge: Service) -> User:
    user = new_user(realm, bridge)
    user.uri = bridge.ok("enroll", user.name, "--kind", "totp", "--format", "uri").stdout.strip()
    return user


# -- browser steps -------------------------------------------------------------------------


def sign_in_with_password(page: Page, realm: Realm, user: User) -> None:
    """Keycloak's own first page; ends on our step's page."""
    page.goto(realm.auth_url())
    page.fill("#username", user.name)
    page.fill("#password", PASSWORD)
    page.click("#kc-login")
    page.wait_for_selector("#umfa")


def type_code(page: Page, code: str) -> None:
    page.fill("#umfa-code", code)
    page.click("#umfa-submit")


def signed_in_as(page: Page, realm: Realm) -> str:
    """Wait for the redirect to the application, exchange its code; the user it was for."""
    page.wait_for_url(re.compile(r"/callback\?.*\bcode="))
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    tokens = requests.post(realm.token_url, timeout=30, data={
        "grant_type": "authorization_code", "client_id": CLIENT, "code": query["code"][0],
        "redirect_uri": realm.redirect_uri})
    assert tokens.status_code == 200, tokens.text
    return str(claims(tokens.json()["access_token"])["preferred_username"])


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


# -- browser flow ---------------------------------------------------------------------------


def test_r13_password_then_totp_code_on_our_page_signs_in(
    realm: Realm, bridge: Service, page: Page,
) -> None:
    user = totp_user(realm, bridge)
    sign_in_with_password(page, realm, user)
    assert page.locator("#umfa").get_attribute("data-status") == "prompt"
    assert page.locator("#umfa-code").is_visible()
    type_code(page, user.code())
    assert signed_in_as(page, realm) == user.name


def test_s02_a_wrong_code_is_shown_and_counted_by_keycloak_then_a_right_one_signs_in(
    realm: Realm, bridge: Service, page: Page, tmp_path: Path,
) -> None:
    user = totp_user(realm, bridge)
    sign_in_with_password(page, realm, user)
    right = user.code()
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    type_code(page, wrong)
    page.wait_for_selector("#umfa[data-error=true]")
    assert "Invalid passcode" in page.locator("#umfa-message").inner_text()
    assert page.locator("#umfa-code").is_visible()
    page.screenshot(path=str(tmp_path / "wrong-code.png"), full_page=True)

    admin = realm.keycloak.admin
    assert admin.brute_force(realm.name, user.keycloak_id)["numFailures"] == 1
    errors = admin.events(realm.name, user.keycloak_id, "LOGIN_ERROR")
    assert [e["error"] for e in errors] == ["invalid_user_credentials"]

    type_code(page, user.code())
    assert signed_in_as(page, realm) == user.name


def test_s03_push_approved_by_the_reference_authenticator_while_the_page_waits(
    realm: Realm, bridge: Service, page: Page, tmp_path: Path,
) -> None:
    user = new_user(realm, bridge)
    app = App(tmp_path / "phone")
    uri = bridge.ok("enroll", user.name, "--kind", "push", "--format", "uri").stdout.strip()
    app.ok("enroll", uri)
    sign_in_with_password(page, realm, user)
    page.click("#umfa-push")
    number = page.locator("#umfa-number").inner_text().strip()
    assert re.fullmatch(r"\d+", number), number
    page.screenshot(path=str(tmp_path / "push-pending.png"), full_page=True)

    push = _pending_push(app, number)
    assert push["user"] == user.name
    assert push["service"] == f"keycloak:{realm.name}/{CLIENT}"
    assert app.ok("approve", push["id"], "--number", number).stdout.split()[0] == "approved"
    # No click: the page's own refresh follows the push to its decision.
    assert signed_in_as(page, realm) == user.name


def test_r13_a_user_without_a_factor_gets_a_qr_that_zbarimg_reads_and_its_code_signs_in(
    realm: Realm, bridge: Service, page: Page, tmp_path: Path,
) -> None:
    zbarimg = require_tool("zbarimg", "zbar-tools")
    user = new_user(realm, bridge)
    bridge.ok("user", "enforce", user.name, "enroll_at_login")
    sign_in_with_password(page, realm, user)
    assert page.locator("#umfa").get_attribute("data-status") == "enroll"
    page.screenshot(path=str(tmp_path / "enroll-page.png"), full_page=True)
    shot = tmp_path / "enroll-qr.png"
    page.locator("#umfa-qr").screenshot(path=str(shot))
    decoded = subprocess.run([zbarimg, "--raw", "-q", str(shot)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert decoded.returncode == 0, decoded.stderr
    uri = decoded.stdout.strip()
    assert uri.startswith("otpauth://totp/") and f":{user.name}?" in uri
    user.uri = uri
    type_code(page, user.code())
    assert signed_in_as(page, realm) == user.name


# -- direct grant ---------------------------------------------------------------------------


def test_s01_direct_grant_accepts_a_code_once_and_refuses_its_replay(
    realm: Realm, bridge: Service,
) -> None:
    user = totp_user(realm, bridge)
    code = user.code()
    first = realm.password_grant(user.name, otp=code)
    assert first.status_code == 200, first.text
    assert claims(first.json()["access_token"])["preferred_username"] == user.name
    replay = realm.password_grant(user.name, otp=code)
    assert replay.status_code == 401, replay.text
    assert replay.json()["error"] == "invalid_grant"
    assert realm.keycloak.admin.brute_force(realm.name, user.keycloak_id)["numFailures"] == 1


def test_direct_grant_without_a_code_is_refused(realm: Realm, bridge: Service) -> None:
    user = totp_user(realm, bridge)
    refused = realm.password_grant(user.name)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_grant"


def test_direct_grant_reads_the_totp_parameter_too(realm: Realm, bridge: Service) -> None:
    user = totp_user(realm, bridge)
    granted = realm.password_grant(user.name, totp=user.code())
    assert granted.status_code == 200, granted.text


def test_a_member_of_an_excluded_keycloak_group_is_not_asked(
    realm: Realm, bridge: Service,
) -> None:
    user = new_user(realm, bridge, groups=[EXEMPT_GROUP])
    granted = realm.password_grant(user.name)
    assert granted.status_code == 200, granted.text


# -- steps configured otherwise, each on a client of its own -----------------------------------


def grant_client(realm: Realm, name: str, config: dict[str, str]) -> str:
    """A client whose direct grants go through a copied flow with our step set to `config`;
    returns the client id."""
    admin = realm.keycloak.admin
    flow = f"grant-{name}"
    admin.copy_flow(realm.name, "direct grant", flow)
    admin.disable_conditional_subflows(realm.name, flow)
    admin.add_step(realm.name, flow, flow, "unified-mfa-direct-grant", flow, config)
    admin.create_client(realm.name, name, realm.redirect_uri)
    admin.update_client(realm.name, name, authenticationFlowBindingOverrides={
        "direct_grant": admin.flow_id(realm.name, flow)})
    return name


def grant(realm: Realm, client: str, user: str, **extra: str) -> requests.Response:
    return requests.post(realm.token_url, timeout=60, data={
        "grant_type": "password", "client_id": client, "username": user,
        "password": PASSWORD, **extra})


@pytest.mark.parametrize(("fail_mode", "status"), [("secure", 503), ("safe", 200)])
def test_s07_an_unreachable_bridge_follows_the_steps_fail_mode(
    realm: Realm, client_key: str, fail_mode: str, status: int,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = grant_client(realm, f"down-{fail_mode}", step_config(
        dead, client_key, **{"fail-mode": fail_mode, "timeout-seconds": "2"}))
    name = f"down{secrets.token_hex(3)}"
    user_id = realm.keycloak.admin.create_user(realm.name, name, PASSWORD)
    reply = grant(realm, client, name, otp="123456")
    assert reply.status_code == status, reply.text
    if status == 503:
        assert reply.json()["error"] == "temporarily_unavailable"
        # Not the user's failed attempt: brute-force detection does not count it.
        assert realm.keycloak.admin.brute_force(realm.name, user_id)["numFailures"] == 0


def test_a_step_with_an_rsa_key_inline_signs_rs256_assertions_the_bridge_accepts(
    realm: Realm, bridge: Service, tmp_path: Path,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "rsa.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM,
                                                     PublicFormat.SubjectPublicKeyInfo))
    bridge.ok("client", "add", "keycloak-rsa", "--public-key", str(public))
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    client = grant_client(realm, "rsa", {**step_config(bridge.url, pem),
                                         "client-id": "keycloak-rsa"})
    user = totp_user(realm, bridge)
    granted = grant(realm, client, user.name, otp=user.code())
    assert granted.status_code == 200, granted.text


def test_with_include_groups_only_members_and_subgroup_members_are_asked(
    realm: Realm, bridge: Service, client_key: str,
) -> None:
    admin = realm.keycloak.admin
    admin.create_group(realm.name, "staff")
    [staff] = admin.call("GET", f"/{realm.name}/groups", params={"search": "staff"})
    admin.call("POST", f"/{realm.name}/groups/{staff['id']}/children", expect=201,
               json={"name": "admins"})
    client = grant_client(realm, "staff-only", step_config(
        bridge.url, realm.keycloak.put_secret(realm.name, "unified-mfa-key", client_key),
        **{"include-groups": "/staff"}))
    outsider = new_user(realm, bridge)
    assert grant(realm, client, outsider.name).status_code == 200
    member = new_user(realm, bridge, groups=["/staff/admins"])
    asked = grant(realm, client, member.name)
    assert asked.status_code == 401, asked.text
