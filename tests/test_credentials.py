"""Who may call the service: API clients by secret or by a signed, single-use assertion;
admins by an expiring bearer token; devices by short-lived requests signed with their key."""

from __future__ import annotations

import base64
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pam_unified_mfa.core import MFA
from pam_unified_mfa.core.credentials import (
    SECRET_MEMORY_SECONDS,
    VerifiedSecrets,
    auth_audience,
)
from pam_unified_mfa.errors import AlreadyExists, AuthenticationFailed
from tests.conftest import FakeClock
from tests.helpers import Device


def basic(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


def pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def assertion(mfa: MFA, key: Ed25519PrivateKey, name: str, lifetime: int = 60,
              jti: str | None = None, audience: str | None = None) -> str:
    now = int(mfa.env.clock())
    claims = {"iss": name, "sub": name, "aud": audience or auth_audience(mfa.env), "iat": now,
              "exp": now + lifetime, "jti": jti or uuid.uuid4().hex}
    return "Bearer " + jwt.encode(claims, key, algorithm="EdDSA")


def test_client_secret_authenticates_the_client(mfa: MFA) -> None:
    secret = mfa.add_client("vpn-gw")
    assert secret is not None
    assert mfa.authenticate_client(basic("vpn-gw", secret)) == "vpn-gw"


def test_client_secret_is_not_stored_in_clear(mfa: MFA) -> None:
    secret = mfa.add_client("vpn-gw")
    assert secret is not None
    with mfa.store.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT * FROM api_clients").fetchall()
    assert secret not in repr(rows)


def test_wrong_client_secret_is_refused(mfa: MFA) -> None:
    mfa.add_client("vpn-gw")
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(basic("vpn-gw", "not-the-secret"))


def test_unknown_client_is_refused_like_a_wrong_secret(mfa: MFA) -> None:
    mfa.add_client("vpn-gw")
    with pytest.raises(AuthenticationFailed) as unknown:
        mfa.authenticate_client(basic("nobody", "x"))
    with pytest.raises(AuthenticationFailed) as wrong:
        mfa.authenticate_client(basic("vpn-gw", "x"))
    assert str(unknown.value) == str(wrong.value)


def _delete_clients(mfa: MFA) -> None:
    with mfa.store.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM api_clients")


def test_a_verified_secret_is_remembered_for_seconds_not_longer(mfa: MFA,
                                                                clock: FakeClock) -> None:
    secret = mfa.add_client("vpn-gw")
    assert secret is not None
    header = basic("vpn-gw", secret)
    mfa.authenticate_client(header)
    _delete_clients(mfa)
    clock.advance(SECRET_MEMORY_SECONDS - 1)
    assert mfa.authenticate_client(header) == "vpn-gw"
    clock.advance(1)
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(header)


def test_a_signed_assertion_is_never_remembered(mfa: MFA) -> None:
    key = Ed25519PrivateKey.generate()
    mfa.add_client("keycloak", pem(key))
    mfa.authenticate_client(assertion(mfa, key, "keycloak"))
    _delete_clients(mfa)
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(assertion(mfa, key, "keycloak"))


def test_remembered_secrets_stay_bounded() -> None:
    remembered = VerifiedSecrets()
    for n in range(VerifiedSecrets.MAX_ENTRIES + 1):
        remembered.remember(basic("gw", str(n)), "gw", now=0.0)
    assert remembered.get(basic("gw", str(VerifiedSecrets.MAX_ENTRIES)), now=1.0) == "gw"
    assert remembered.get(basic("gw", "0"), now=1.0) is None


def test_client_names_are_unique(mfa: MFA) -> None:
    mfa.add_client("vpn-gw")
    with pytest.raises(AlreadyExists):
        mfa.add_client("vpn-gw")


def test_signed_assertion_authenticates_a_client_with_a_key(mfa: MFA) -> None:
    key = Ed25519PrivateKey.generate()
    assert mfa.add_client("keycloak", pem(key)) is None
    assert mfa.authenticate_client(assertion(mfa, key, "keycloak")) == "keycloak"


def test_an_assertion_is_accepted_once(mfa: MFA) -> None:
    key = Ed25519PrivateKey.generate()
    mfa.add_client("keycloak", pem(key))
    token = assertion(mfa, key, "keycloak")
    mfa.authenticate_client(token)
    with pytest.raises(AuthenticationFailed, match="already used"):
        mfa.authenticate_client(token)


def test_an_assertion_signed_by_another_key_is_refused(mfa: MFA) -> None:
    mfa.add_client("keycloak", pem(Ed25519PrivateKey.generate()))
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(assertion(mfa, Ed25519PrivateKey.generate(), "keycloak"))


def test_an_assertion_for_another_audience_is_refused(mfa: MFA) -> None:
    key = Ed25519PrivateKey.generate()
    mfa.add_client("keycloak", pem(key))
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(assertion(mfa, key, "keycloak",
                                          audience="https://elsewhere/v1/auth"))


def test_an_expired_assertion_is_refused(mfa: MFA, clock: FakeClock) -> None:
    key = Ed25519PrivateKey.generate()
    mfa.add_client("keycloak", pem(key))
    token = assertion(mfa, key, "keycloak", lifetime=60)
    clock.advance(61)
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(token)


def test_a_long_lived_assertion_is_refused(mfa: MFA) -> None:
    key = Ed25519PrivateKey.generate()
    mfa.add_client("keycloak", pem(key))
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_client(assertion(mfa, key, "keycloak", lifetime=3600))


def test_admin_token_authenticates_its_admin(mfa: MFA) -> None:
    mfa.add_admin("ops")
    assert mfa.authenticate_admin(mfa.issue_admin_token("ops")) == "ops"


def test_admin_token_expires(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_admin("ops")
    token = mfa.issue_admin_token("ops", ttl_seconds=60)
    clock.advance(61)
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_admin(token)


def test_unknown_admin_token_is_refused(mfa: MFA) -> None:
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_admin("umfa_not-a-token")


def device_request(device: Device, audience: str = "unified-mfa-device",
                   lifetime: int = 60, key: Ed25519PrivateKey | None = None) -> str:
    now = int(device.mfa.env.clock())
    return jwt.encode({"aud": audience, "iat": now, "exp": now + lifetime}, key or device.key,
                      algorithm="EdDSA", headers={"kid": device.factor_id})


@pytest.fixture
def device(mfa: MFA) -> Device:
    mfa.add_user("alice")
    return Device(mfa, mfa.enroll("alice", "push").uri)


def test_a_signed_device_request_names_the_device(mfa: MFA, device: Device) -> None:
    assert mfa.authenticate_device(device_request(device)) == device.factor_id


def test_a_device_request_signed_by_another_key_is_refused(mfa: MFA, device: Device) -> None:
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_device(device_request(device, key=Ed25519PrivateKey.generate()))


def test_a_device_request_for_another_audience_is_refused(mfa: MFA, device: Device) -> None:
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_device(device_request(device, audience="other"))


def test_a_long_lived_device_request_is_refused(mfa: MFA, device: Device) -> None:
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_device(device_request(device, lifetime=3600))


def test_a_reset_device_can_no_longer_authenticate(mfa: MFA, device: Device) -> None:
    request = device_request(device)
    mfa.add_admin("boss")
    mfa.reset_by_admin("alice", "boss")
    with pytest.raises(AuthenticationFailed):
        mfa.authenticate_device(request)
