"""The Keycloak bridge API (`/v1/keycloak/…`, docs/keycloak.md), tested over real HTTP.

As in tests/test_service.py: the service built around a fresh core (SQLite and PostgreSQL) runs
in uvicorn on a loopback port, time is real (assertions and device answers carry it) and the
core's clock can only move forward. The calls are made as the Java authenticator makes them:
an ES256 assertion from a P-256 key (what the documented `openssl` commands produce) on every
request, the browser's address and the `keycloak:<realm>/<client_id>` service in every body.
Set-up that is not the behaviour under test goes through the core; what a test asserts comes
from HTTP.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from keycloak_bridge.api import MAX_WAIT
from pam_unified_mfa.core import MFA, dialogue
from pam_unified_mfa.core.dialogue import HINT_UNIFIED, MSG_WRONG
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.errors import StoreUnavailable
from pam_unified_mfa.home import init_home
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.settings import SETTINGS_FILE
from tests import test_service
from tests.helpers import code_for, enroll_confirmed, require_tool, wrong_code
from tests.test_service import (
    TIMEOUT,
    Phone,
    Service,
    ShiftedClock,
    in_background,
    metric,
    serving,
    subscribed,
)

BROWSER = "198.51.100.23"
LOGIN = {"client_address": BROWSER, "service": "keycloak:corp/portal"}
FORM_FIELDS = {"status", "message", "token", "can_push", "push_number", "enroll_qr", "allowed"}


@dataclass
class KeycloakKey:
    """The key the Java authenticator holds, and the calls it makes with it."""

    svc: Service
    key: ec.EllipticCurvePrivateKey
    name: str = "keycloak-prod"

    @classmethod
    def registered(cls, svc: Service, name: str = "keycloak-prod") -> KeycloakKey:
        """A new P-256 key, registered as an API client with its public half."""
        key = ec.generate_private_key(ec.SECP256R1())
        svc.mfa.add_client(name, key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
        return cls(svc, key, name)

    def assertion(self, **claims: object) -> str:
        now = int(self.svc.clock())
        body: dict[str, object] = {
            "iss": self.name, "sub": self.name, "iat": now, "exp": now + 60,
            "aud": self.svc.mfa.settings.public_url.rstrip("/") + "/v1/auth",
            "jti": str(uuid.uuid4()), **claims}
        return jwt.encode(body, self.key, algorithm="ES256")

    def headers(self, **claims: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.assertion(**claims)}"}

    def call(self, step: str, headers: dict[str, str] | None = None,
             **body: object) -> httpx.Response:
        return self.svc.http.post(f"/v1/keycloak/{step}", json={**LOGIN, **body},
                                  headers=headers or self.headers())

    def form(self, step: str, **body: object) -> dict[str, Any]:
        """One bridge call that must succeed; returns its form."""
        response = self.call(step, **body)
        assert response.status_code == 200, response.text
        form: dict[str, Any] = response.json()
        assert set(form) == FORM_FIELDS
        return form


svc = test_service.svc  # the running service, as the auth API's tests have it


@pytest.fixture
def kc(svc: Service) -> KeycloakKey:
    return KeycloakKey.registered(svc)


@pytest.fixture
def totp_user(svc: Service) -> str:
    """alice with a confirmed TOTP (separated organisation); returns her enrollment URI."""
    svc.mfa.add_user("alice")
    return enroll_confirmed(svc.mfa, "alice", "totp").uri


def merge(svc: Service) -> None:
    """The organisation switched to unified mode (through the core)."""
    svc.mfa.add_admin("root", roles=("billing",))
    svc.mfa.confirm("root", svc.mfa.preview("root", "merge").confirmation)


@pytest.fixture
def phone(svc: Service) -> Phone:
    """alice on the unified Protect enrollment (push and TOTP), her phone registered."""
    merge(svc)
    svc.mfa.add_user("alice")
    return Phone(svc, svc.mfa.enroll("alice").uri)


def pushed(kc: KeycloakKey) -> dict[str, Any]:
    """alice's login up to the pending push: begin, then answer `push`."""
    begun = kc.form("begin", user="alice")
    form = kc.form("answer", token=begun["token"], answer="push")
    assert form["status"] == "push_pending", form
    return form


def approve(phone: Phone, number: str) -> None:
    (request,) = phone.pushes()
    answered = phone.send(request["id"], phone.signed(request["id"], "approve", number=number))
    assert answered.json() == {"status": "approved"}


# -- the dialogue -----------------------------------------------------------------------------


def test_begin_prompts_a_totp_user_for_a_code(kc: KeycloakKey, totp_user: str) -> None:
    form = kc.form("begin", user="alice")
    assert form["status"] == "prompt"
    assert form["token"] and form["message"]
    assert (form["can_push"], form["push_number"], form["enroll_qr"], form["allowed"]) == (
        False, None, None, False)


def test_a_valid_code_accepts_the_login(kc: KeycloakKey, totp_user: str) -> None:
    begun = kc.form("begin", user="alice")
    form = kc.form("answer", token=begun["token"], answer=code_for(kc.svc.mfa, totp_user))
    assert (form["status"], form["token"]) == ("accept", None)


def test_a_wrong_code_prompts_again_with_a_new_token_and_says_so(
        kc: KeycloakKey, totp_user: str) -> None:
    begun = kc.form("begin", user="alice")
    form = kc.form("answer", token=begun["token"], answer=wrong_code(kc.svc.mfa, totp_user))
    assert form["status"] == "prompt"
    assert form["token"] and form["token"] != begun["token"]
    assert form["message"].startswith(MSG_WRONG)


def test_s01_a_code_used_in_one_login_is_refused_in_the_next(
        kc: KeycloakKey, totp_user: str) -> None:
    code = code_for(kc.svc.mfa, totp_user)
    first = kc.form("begin", user="alice")
    assert kc.form("answer", token=first["token"], answer=code)["status"] == "accept"
    second = kc.form("begin", user="alice")
    assert kc.form("answer", token=second["token"], answer=code)["status"] != "accept"


def test_s03_answering_push_shows_the_number_one_of_the_device_choices(
        kc: KeycloakKey, phone: Phone) -> None:
    assert kc.form("begin", user="alice")["can_push"]
    form = pushed(kc)
    (request,) = phone.pushes()
    assert form["push_number"] in request["choices"] and form["token"]
    assert (request["service"], request["client"]) == (LOGIN["service"], BROWSER)


def test_s03_after_the_device_approves_poll_accepts(kc: KeycloakKey, phone: Phone) -> None:
    form = pushed(kc)
    approve(phone, form["push_number"])
    assert kc.form("poll", token=form["token"])["status"] == "accept"


def test_poll_without_a_decision_keeps_the_token_alive(kc: KeycloakKey, phone: Phone) -> None:
    form = pushed(kc)
    for _ in range(2):
        again = kc.form("poll", token=form["token"])
        assert (again["status"], again["token"]) == ("push_pending", form["token"])
        assert again["push_number"] == form["push_number"]


def test_poll_with_wait_returns_at_the_decision(kc: KeycloakKey, phone: Phone) -> None:
    form = pushed(kc)
    started = time.monotonic()
    with subscribed(kc.svc) as waiting:
        polled = in_background(lambda: kc.form("poll", token=form["token"], wait=MAX_WAIT))
        assert waiting.wait(TIMEOUT)
        approve(phone, form["push_number"])
        result = polled.result(TIMEOUT)
    assert result["status"] == "accept"
    assert time.monotonic() - started < MAX_WAIT / 2  # woken by the approval, not the timer


def test_poll_with_wait_and_no_decision_returns_pending_after_the_wait(
        kc: KeycloakKey, phone: Phone) -> None:
    form = pushed(kc)
    again = kc.form("poll", token=form["token"], wait=0.3)
    assert (again["status"], again["token"]) == ("push_pending", form["token"])


# -- enrollment at login (R13) ----------------------------------------------------------------


@pytest.fixture
def enroll_form(kc: KeycloakKey) -> dict[str, Any]:
    """The form of dave, who must enroll at login and has no factor yet, in a unified
    organisation: one QR for the Protect app's push and for any app's TOTP."""
    merge(kc.svc)
    kc.svc.mfa.add_user("dave")
    kc.svc.mfa.set_enforcement("dave", "enroll_at_login")
    form = kc.form("begin", user="dave")
    assert form["status"] == "enroll", form
    return form


def scanned(form: dict[str, Any], tmp_path: Path) -> str:
    """What zbarimg reads from the form's QR image, as a screenshot of it would give."""
    prefix = "data:image/png;base64,"
    assert form["enroll_qr"].startswith(prefix)
    image = tmp_path / "enroll-qr.png"
    image.write_bytes(base64.b64decode(form["enroll_qr"][len(prefix):], validate=True))
    read = subprocess.run([require_tool("zbarimg", "zbar-tools"), "--raw", "-q", str(image)],
                          capture_output=True, text=True, check=False, timeout=TIMEOUT)
    assert read.returncode == 0, read.stderr
    return read.stdout.strip()


def test_r13_enroll_at_login_shows_a_qr_that_zbarimg_reads_as_the_enrollment_uri(
        enroll_form: dict[str, Any], tmp_path: Path) -> None:
    enrollment = parse_uri(scanned(enroll_form, tmp_path))
    assert enrollment.account == "dave"
    assert enrollment.totp_secret and enrollment.token  # TOTP and the push registration
    assert enroll_form["token"] and not enroll_form["can_push"]


def test_r13_the_first_code_of_the_scanned_qr_completes_the_login(
        kc: KeycloakKey, enroll_form: dict[str, Any], tmp_path: Path) -> None:
    code = code_for(kc.svc.mfa, scanned(enroll_form, tmp_path))
    assert kc.form("answer", token=enroll_form["token"], answer=code)["status"] == "accept"


def test_s05_the_enroll_form_carries_the_secret_only_inside_the_qr(
        enroll_form: dict[str, Any], tmp_path: Path) -> None:
    enrollment = parse_uri(scanned(enroll_form, tmp_path))
    assert enrollment.totp_secret and enrollment.token
    rest = repr({k: v for k, v in enroll_form.items() if k != "enroll_qr"})
    assert enrollment.totp_secret not in rest and enrollment.token not in rest


def test_r13_a_user_not_on_the_unified_enrollment_is_encouraged_to_scan_it(
        kc: KeycloakKey, totp_user: str) -> None:
    merge(kc.svc)
    form = kc.form("begin", user="alice")
    assert (form["status"], form["enroll_qr"]) == ("prompt", None)  # encouraged, not forced
    assert HINT_UNIFIED in form["message"]


# -- S06: unknown users -----------------------------------------------------------------------


def test_s06_an_unknown_user_gets_the_same_form_as_a_user_with_push_and_totp(
        kc: KeycloakKey, phone: Phone) -> None:
    known = kc.form("begin", user="alice")
    unknown = kc.form("begin", user="mallory")
    assert unknown["token"] and known["token"]
    assert {**unknown, "token": "-"} == {**known, "token": "-"}


# -- who may call -----------------------------------------------------------------------------


def test_a_client_with_a_basic_secret_is_refused_with_401(svc: Service, totp_user: str) -> None:
    secret = svc.mfa.add_client("keycloak-secret")
    basic = base64.b64encode(f"keycloak-secret:{secret}".encode()).decode()
    response = svc.http.post("/v1/keycloak/begin", json={"user": "alice", **LOGIN},
                             headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}


def test_a_call_without_an_assertion_is_refused_with_401(svc: Service) -> None:
    response = svc.http.post("/v1/keycloak/begin", json={"user": "alice", **LOGIN})
    assert response.status_code == 401


def test_an_expired_assertion_is_refused_with_401(kc: KeycloakKey, totp_user: str) -> None:
    now = int(kc.svc.clock())
    response = kc.call("begin", kc.headers(iat=now - 120, exp=now - 60), user="alice")
    assert response.status_code == 401


def test_an_assertion_for_another_audience_is_refused_with_401(
        kc: KeycloakKey, totp_user: str) -> None:
    audience = kc.svc.mfa.settings.public_url.rstrip("/") + "/v1/keycloak"
    response = kc.call("begin", kc.headers(aud=audience), user="alice")
    assert response.status_code == 401


def test_a_reused_assertion_is_refused_with_401(kc: KeycloakKey, totp_user: str) -> None:
    headers = kc.headers()
    first = kc.call("begin", headers, user="alice")
    again = kc.call("begin", headers, user="alice")
    assert (first.status_code, again.status_code) == (200, 401)


@pytest.mark.parametrize("settings_extra", ["[service]\nclient_rate = 1\nclient_burst = 2"])
def test_a_client_past_its_rate_gets_429(kc: KeycloakKey, totp_user: str) -> None:
    statuses = [kc.call("begin", user="alice").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_a_wait_over_the_limit_gets_a_one_line_422_naming_the_field(
        kc: KeycloakKey, phone: Phone) -> None:
    response = kc.call("poll", token=pushed(kc)["token"], wait=MAX_WAIT + 1)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "wait" in detail and "\n" not in detail


def test_a_client_registered_with_the_documented_openssl_commands_may_call(
        svc: Service, home: Path, tmp_path: Path, totp_user: str) -> None:
    openssl = require_tool("openssl", "openssl")
    key, public = tmp_path / "kc.key", tmp_path / "kc.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True, timeout=TIMEOUT)
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(public)],
                   check=True, timeout=TIMEOUT)
    cli = Path(sys.executable).with_name("unified-mfa")
    subprocess.run([str(cli), "--home", str(home), "client", "add", "keycloak-prod",
                    "--public-key", str(public)], check=True, capture_output=True,
                   timeout=TIMEOUT)
    pkcs8 = key.read_bytes()
    assert pkcs8.startswith(b"-----BEGIN PRIVATE KEY-----")  # what the `key` setting takes
    key = load_pem_private_key(pkcs8, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert KeycloakKey(svc, key).form("begin", user="alice")["status"] == "prompt"


# -- the login's binding, metrics, audit ------------------------------------------------------


def test_a_token_is_refused_from_another_browser_address(kc: KeycloakKey, totp_user: str) -> None:
    begun = kc.form("begin", user="alice")
    elsewhere = kc.form("answer", token=begun["token"], client_address="203.0.113.9",
                        answer=code_for(kc.svc.mfa, totp_user))
    assert (elsewhere["status"], elsewhere["token"]) == ("reject", None)


def test_decisions_are_counted_under_the_keycloak_adapter(kc: KeycloakKey, totp_user: str) -> None:
    kc.form("begin", user="alice")
    assert metric(kc.svc, 'unified_mfa_decisions_total{adapter="keycloak",outcome="prompt"}') == 1


def test_the_audit_trail_names_the_keycloak_adapter_and_the_browser(
        kc: KeycloakKey, totp_user: str) -> None:
    begun = kc.form("begin", user="alice")
    kc.form("answer", token=begun["token"], answer=code_for(kc.svc.mfa, totp_user))
    login = [e for e in kc.svc.mfa.audit_tail(5) if e.action == "mfa.code"][-1]
    assert (login.outcome, login.adapter, login.client) == ("accepted", "keycloak", BROWSER)


# -- S07: the store unreachable ---------------------------------------------------------------


@contextmanager
def store_gone(tmp_path: Path, fail_mode: str) -> Iterator[KeycloakKey]:
    """A service whose store refuses every connection, with this `fail_mode`; yields a
    Keycloak key (unknown to the service, which cannot look any key up)."""
    home = tmp_path / "gone"
    init_home(home, "https://mfa.example.test", f"sqlite:///{tmp_path / 'gone.db'}")
    settings = home / SETTINGS_FILE
    text = settings.read_text(encoding="utf-8")
    assert 'fail_mode = "secure"' in text
    settings.write_text(text.replace('fail_mode = "secure"', f'fail_mode = "{fail_mode}"', 1),
                        encoding="utf-8")
    events = ServiceEvents()
    # Port 1 on loopback: nothing listens there.
    gone = MFA.open(home, store="postgresql://mfa@127.0.0.1:1/mfa", migrate=False,
                    events=events)
    try:
        with serving(create_app(gone, events)) as url, \
                httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            svc = Service(gone, http, ShiftedClock(), Waiter())
            yield KeycloakKey(svc, ec.generate_private_key(ec.SECP256R1()))
    finally:
        gone.close()


def test_s07_the_store_down_while_the_caller_is_verified_is_a_503(tmp_path: Path) -> None:
    """The caller's key and used jtis are in the store: unverifiable, so no verdict is given;
    the authenticator applies its own fail mode to the 503 as to a service that is down."""
    with store_gone(tmp_path, "safe") as kc:
        response = kc.call("begin", user="alice")
    assert (response.status_code, response.json()) == (503, {"detail": "store unavailable"})


@pytest.mark.parametrize(("fail_mode", "allowed"), [("secure", False), ("safe", True)])
def test_s07_an_outage_after_the_caller_is_verified_follows_the_authenticators_fail_mode(
        kc: KeycloakKey, totp_user: str, monkeypatch: pytest.MonkeyPatch, fail_mode: str,
        allowed: bool) -> None:
    def store_fails(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("store unavailable")

    monkeypatch.setattr(dialogue, "begin", store_fails)
    form = kc.form("begin", user="alice", fail_mode=fail_mode)
    assert (form["status"], form["allowed"], form["token"]) == ("unavailable", allowed, None)
