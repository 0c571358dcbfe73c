"""Every operation of the service's OpenAPI document, fuzzed by schemathesis: never a 5xx.

Schemathesis reads the document the application serves (`/openapi.json`, the contract of
docs/openapi.json) and calls the ASGI application in-process, lifespan included, with data that
fits the document and data that does not (its positive and negative modes). One service (per
store: SQLite, PostgreSQL) answers every operation of the module, as one running service
answers every caller. The callers are
real: an admin token (billing role), an API client with a secret, another with a signing key,
and a registered push device, each sending the credential its operation declares; a user with
TOTP and a push device exists, so requests that name her reach the core. The store is up, so no
answer may be a server error. A second pass sends no credentials at all: no operation that
declares a security scheme may then answer with success. Bounds and a longer campaign:
tests/fuzzing.py and docs/security-testing.md.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.home import init_home
from pam_unified_mfa.service.app import build_app, create_app
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.settings import SETTINGS_FILE
from tests.conftest import BACKENDS, fresh_postgres
from tests.fuzzing import fuzz_settings
from tests.helpers import Device, now_code, secret_of

# Its coverage phase would also try every path with every method the document does not list:
# the framework's 405, a fifth of the calls for nothing of ours.
AnyCase = Case[Any]
CONFIG = schemathesis.Config.from_dict({"phases": {"coverage": {"unexpected-methods": []}}})
schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(), config=CONFIG)
"""The document as the application serves it; each call goes to the test's service (`app=`)."""
# The fuzzer calls the auth API hundreds of times a second as one client: 429 is not what this
# suite looks for.
SETTINGS_EXTRA = "[service]\nclient_rate = 1000000\nclient_burst = 1000000\n"


def _pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class Callers:
    """One real caller for each security scheme of the document."""

    mfa: MFA
    admin_token: str
    client_secret: str
    client_key: Ed25519PrivateKey
    device: Device

    def credential(self, scheme: str) -> str:
        """The Authorization header of `scheme`; signed ones are fresh for each call."""
        now = int(time.time())
        if scheme == "admin_token":
            return f"Bearer {self.admin_token}"
        if scheme == "client_secret":
            return "Basic " + base64.b64encode(f"vpn:{self.client_secret}".encode()).decode()
        if scheme == "client_assertion":
            audience = self.mfa.settings.public_url.rstrip("/") + "/v1/auth"
            claims = {"iss": "keycloak", "sub": "keycloak", "aud": audience, "iat": now,
                      "exp": now + 60, "jti": str(uuid.uuid4())}
            return f"Bearer {jwt.encode(claims, self.client_key, algorithm='EdDSA')}"
        assert scheme == "device", scheme
        token = jwt.encode({"aud": "unified-mfa-device", "iat": now, "exp": now + 60},
                           self.device.key, algorithm="EdDSA",
                           headers={"kid": self.device.factor_id})
        return f"Bearer {token}"


@dataclass
class Served:
    app: FastAPI
    callers: Callers


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    place = tmp_path_factory.mktemp("schemathesis")
    store_url = f"sqlite:///{place / 'store.db'}" if request.param == "sqlite" else (
        fresh_postgres())
    home = place / "home"
    init_home(home, "https://mfa.example.test", store_url)
    with (home / SETTINGS_FILE).open("a", encoding="utf-8") as settings:
        settings.write("\n" + SETTINGS_EXTRA)
    events = ServiceEvents()
    mfa = MFA.open(home, store=store_url, events=events)
    try:
        mfa.add_admin("root", roles=("billing",))
        mfa.add_user("alice")
        secret = secret_of(mfa.enroll("alice", "totp").uri)
        assert mfa.authenticate_code("alice", now_code(mfa, secret), RequestContext()).granted
        device = Device(mfa, mfa.enroll("alice", "push").uri)
        client_secret = mfa.add_client("vpn")
        assert client_secret is not None
        client_key = Ed25519PrivateKey.generate()
        mfa.add_client("keycloak", _pem(client_key))
        callers = Callers(mfa, mfa.issue_admin_token("root"), client_secret, client_key, device)
        yield Served(create_app(mfa, events), callers)
    finally:
        asgi.shutdown_lifespans()  # schemathesis started the app's lifespan: end it here
        mfa.close()


def declared_schemes(case: AnyCase) -> list[str]:
    """The security schemes the operation accepts (any one of them), in the document's order."""
    requirements = case.operation.definition.raw.get("security", [])
    return [name for requirement in requirements for name in requirement]


WAITS = {"query": ("wait",), "body": ("wait", "timeout")}
"""Long-poll knobs (device pushes, Keycloak poll, auth wait): seconds the call may hold."""
LONGEST_WAIT = 0.05


def bounded_waits(case: AnyCase) -> None:
    """Cut a valid long-poll wait to LONGEST_WAIT: a wait that nothing ends would hold the run
    for its whole length (up to 300 s), and waiting is what those calls are for, not a fault.
    Invalid values (negative, too large, not numbers) are left for the service to refuse."""
    for where, names in WAITS.items():
        values = case.query if where == "query" else case.body
        if not isinstance(values, dict):
            continue
        for name in names:
            value = values.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                continue
            try:
                seconds = float(value)  # the coverage phase sends query values as text
            except ValueError:
                continue
            if LONGEST_WAIT < seconds <= 300:
                values[name] = str(LONGEST_WAIT) if isinstance(value, str) else LONGEST_WAIT


def without_authorization(case: AnyCase) -> None:
    if case.headers:
        for name in [n for n in case.headers if n.lower() == "authorization"]:
            del case.headers[name]


@schema.parametrize()
@fuzz_settings(10)
def test_no_operation_answers_a_server_error_to_real_callers(case: AnyCase, served: Served) -> None:
    bounded_waits(case)
    without_authorization(case)
    schemes = declared_schemes(case)
    headers = {"Authorization": served.callers.credential(schemes[0])} if schemes else {}
    response = case.call(headers=headers, app=served.app)
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@fuzz_settings(2)
def test_no_operation_answers_a_server_error_or_success_without_credentials(
        case: AnyCase, served: Served) -> None:
    bounded_waits(case)
    without_authorization(case)
    response = case.call(app=served.app)
    case.validate_response(response, checks=[not_a_server_error])
    if declared_schemes(case):
        assert not 200 <= response.status_code < 300, (case.method, case.path,
                                                      response.status_code)
