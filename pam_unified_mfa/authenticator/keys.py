"""The device key: generated at enrollment, it signs every request and every push answer.

The service never sees the private key, only the public half sent at registration; a signed
answer therefore proves that this device, not whoever holds a copy of a token, approved the
login (S03). Ed25519 because it is small, fast and has no parameters to get wrong.
"""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from pam_unified_mfa.errors import UnifiedMFAError

DEVICE_AUDIENCE = "unified-mfa-device"
# The service accepts request tokens up to 120 s old; 60 s leaves room for a skewed clock.
REQUEST_TOKEN_TTL = 60
_ALGORITHM = "EdDSA"


class DeviceKeyError(UnifiedMFAError):
    """The stored device key cannot be used (damaged state)."""


def new_key() -> tuple[str, str]:
    """A fresh key pair: (private PEM to store, public PEM to register)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    public = key.public_key().public_bytes(Encoding.PEM,
                                           PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def _load(private_pem: str) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise DeviceKeyError("the stored device key is damaged; re-enroll this account") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise DeviceKeyError("the stored device key is not an Ed25519 key; re-enroll this account")
    return key


def request_token(private_pem: str, device_id: str, now: float | None = None) -> str:
    """The bearer token of one device API call: short-lived, bound to the device API."""
    issued = int(time.time() if now is None else now)
    claims = {"aud": DEVICE_AUDIENCE, "iat": issued, "exp": issued + REQUEST_TOKEN_TTL}
    return jwt.encode(claims, _load(private_pem), algorithm=_ALGORITHM,
                      headers={"kid": device_id})


def push_answer(private_pem: str, device_id: str, push_id: str, decision: str, *,
                number: str | None = None, not_me: bool = False,
                now: float | None = None) -> str:
    """The signed decision on one push request; the core verifies it and uses it once."""
    claims: dict[str, object] = {"sub": push_id, "decision": decision,
                                 "iat": int(time.time() if now is None else now)}
    if decision == "approve":
        claims["number"] = number
    else:
        claims["not_me"] = not_me
    return jwt.encode(claims, _load(private_pem), algorithm=_ALGORITHM,
                      headers={"kid": device_id})
