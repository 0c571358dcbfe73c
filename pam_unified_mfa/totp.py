"""Time-based one-time passwords (RFC 6238) for the TOTP second factor.

The HMAC/truncation arithmetic is delegated to pyotp so that this module holds
no home-grown cryptography; what lives here is the policy around it: which
parameters we accept, how strong new keys are, and how a submitted code is
checked without leaking information through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyotp

ALGORITHMS = ("SHA1", "SHA256", "SHA512")

# Digits and period are limited to what common authenticator apps display
# correctly; anything else would enroll keys that silently never match.
_DIGITS = (6, 8)
_MIN_PERIOD = 10
_MAX_PERIOD = 300

_DIGESTS: dict[str, Callable[..., Any]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}

_BASE32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@dataclass(frozen=True)
class TotpParams:
    """TOTP parameters shared by the server and the user's authenticator.

    Validated on construction so that an invalid combination can never reach
    storage or an enrollment QR code, where it would only surface later as
    codes that never match.
    """

    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"unsupported TOTP algorithm {self.algorithm!r}; expected one of {ALGORITHMS}"
            )
        # bool is an int subclass; True/False as digits is always a caller bug.
        if type(self.digits) is not int or self.digits not in _DIGITS:
            raise ValueError(f"TOTP digits must be 6 or 8, got {self.digits!r}")
        if type(self.period) is not int or not _MIN_PERIOD <= self.period <= _MAX_PERIOD:
            raise ValueError(
                f"TOTP period must be {_MIN_PERIOD}..{_MAX_PERIOD} seconds, got {self.period!r}"
            )


class _KeyDecodedOnce(pyotp.HOTP):
    """pyotp's HOTP, keeping the key it decoded and checked when it was built, and packing
    the counter with `int.to_bytes`.

    pyotp decodes the base32 key again for every code it computes, and a check computes one
    per step of the window: on a login's path that was a tenth of the core's CPU. The
    arithmetic stays pyotp's.
    """

    def byte_secret(self) -> bytes:
        key: bytes | None = self.__dict__.get("_key")
        if key is None:
            key = self.__dict__["_key"] = super().byte_secret()
        return key

    @staticmethod
    def int_to_bytestring(i: int, padding: int = 8) -> bytes:
        """The counter as RFC 4226 feeds it to the HMAC: 8 bytes, big-endian. pyotp builds
        them a byte at a time in Python; a time step always fits."""
        return i.to_bytes(padding, "big")


def _hotp(secret: str, params: TotpParams) -> pyotp.HOTP:
    """Build the pyotp generator for explicit counters.

    HOTP rather than pyotp.TOTP because we compute the time step ourselves:
    recent pyotp caps TOTP intervals at 120 s, while our accepted range is wider,
    and TOTP is by definition HOTP over the time-step counter (RFC 6238, 1.2).
    """
    return _KeyDecodedOnce(secret, digits=params.digits, digest=_DIGESTS[params.algorithm])


def validate_secret(secret: str) -> str:
    """Check a base32 TOTP key and return its canonical form (upper case, unpadded).

    Keys arrive from URIs, config files and imports in slightly different
    spellings; canonicalising once keeps stored and displayed keys comparable.
    The error messages never include the key itself.
    """
    canonical = secret.upper().rstrip("=")
    if not canonical:
        raise ValueError("TOTP secret is empty")
    if not set(canonical) <= _BASE32_ALPHABET:
        raise ValueError("TOTP secret is not valid base32")
    try:
        base64.b32decode(canonical + "=" * (-len(canonical) % 8))
    except binascii.Error:
        raise ValueError("TOTP secret is not valid base32") from None
    # pyotp enforces its own minimum key length; surface that here, at
    # enrollment time, instead of at the first login attempt.
    try:
        _hotp(canonical, TotpParams())
    except ValueError as exc:
        raise ValueError(f"TOTP secret rejected: {exc}") from None
    return canonical


def new_secret(params: TotpParams) -> str:
    """Generate a fresh random key as unpadded base32.

    The key is as long as the HMAC output (20/32/64 bytes), as RFC 6238
    section 5.1 recommends; a shorter key would cap the strength of SHA256/512.
    """
    size = _DIGESTS[params.algorithm]().digest_size
    return base64.b32encode(secrets.token_bytes(size)).decode("ascii").rstrip("=")


def step_at(params: TotpParams, timestamp: float) -> int:
    """Return the RFC 6238 time-step counter for a Unix timestamp.

    Exposed so that callers can persist the last accepted step and refuse to
    accept the same (or an older) step again, which is what stops replay.
    """
    if not math.isfinite(timestamp) or timestamp < 0:
        raise ValueError("timestamp must be a finite, non-negative Unix time")
    return int(timestamp // params.period)


def code_at(secret: str, params: TotpParams, timestamp: float) -> str:
    """Return the code an authenticator shows at ``timestamp``."""
    return _hotp(secret, params).at(step_at(params, timestamp))


def match_step(
    secret: str, params: TotpParams, code: str, timestamp: float, window: int = 1
) -> int | None:
    """Return the time step ``code`` is valid for within +-``window`` steps, else None.

    Returning the step instead of a bool lets the caller enforce one use per
    step. Every step in the window is compared with a constant-time comparison
    and the loop never exits early, so response timing reveals neither how many
    digits were right nor which step matched. Malformed codes take the same
    path against a placeholder that cannot match, so they cost the same as a
    wrong code and never raise. If a code happens to be valid for several steps
    the latest one is returned: that is the conservative choice for a replay
    guard, as it burns every earlier step too.
    """
    if window < 0:
        raise ValueError("window must be >= 0")
    current = step_at(params, timestamp)
    generator = _hotp(secret, params)
    well_formed = len(code) == params.digits and code.isascii() and code.isdigit()
    # NUL bytes never equal a generated code, yet have the right length.
    candidate = code.encode("ascii") if well_formed else b"\x00" * params.digits
    matched: int | None = None
    for step in range(max(0, current - window), current + window + 1):
        expected = generator.at(step).encode("ascii")
        if hmac.compare_digest(candidate, expected):
            matched = step
    return matched if well_formed else None


def provisioning_params(secret: str, params: TotpParams) -> dict[str, str]:
    """Return the otpauth URI query values describing this key.

    Kept separate from URI building so every producer (QR, CLI, admin API)
    spells the parameters identically.
    """
    return {
        "secret": validate_secret(secret),
        "algorithm": params.algorithm,
        "digits": str(params.digits),
        "period": str(params.period),
    }
