"""TOTP generation and verification, checked against RFC 6238 and oathtool."""

from __future__ import annotations

import base64
import hmac
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest

from pam_unified_mfa.totp import (
    ALGORITHMS,
    TotpParams,
    code_at,
    match_step,
    new_secret,
    provisioning_params,
    step_at,
    validate_secret,
)

# RFC 6238 appendix B seeds: the ASCII digits repeated to the digest size.
RFC_SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890" * 6 + b"1234",
}


def b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


RFC_SECRETS = {alg: b32(seed) for alg, seed in RFC_SEEDS.items()}

# (timestamp, algorithm, expected 8-digit code) from RFC 6238 appendix B.
RFC6238_VECTORS = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]

SECRET = RFC_SECRETS["SHA1"]
PARAMS = TotpParams()
# 20 s into a 30 s step, so neighbouring steps are unambiguous.
NOW = 1_700_000_000.0
STEP = step_at(PARAMS, NOW)

OATHTOOL_NOW = "2026-01-01 00:00:00 UTC"
OATHTOOL_TS = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def code_for_step(step: int, params: TotpParams = PARAMS, secret: str = SECRET) -> str:
    return code_at(secret, params, step * params.period)


@pytest.fixture
def oathtool() -> str:
    """oathtool is a required test tool: its absence is a failure, not a skip."""
    path = shutil.which("oathtool")
    if path is None:
        pytest.fail("oathtool is required for the TOTP cross-check (apt-get install oathtool)")
    return path


def run_oathtool(path: str, secret: str, params: TotpParams) -> str:
    result = subprocess.run(
        [
            path,
            f"--totp={params.algorithm}",
            "-d",
            str(params.digits),
            "-s",
            f"{params.period}s",
            "-b",
            secret,
            "--now",
            OATHTOOL_NOW,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(("timestamp", "algorithm", "expected"), RFC6238_VECTORS)
def test_code_at_matches_rfc6238_appendix_b_vectors(
    timestamp: int, algorithm: str, expected: str
) -> None:
    params = TotpParams(algorithm=algorithm, digits=8, period=30)
    assert code_at(RFC_SECRETS[algorithm], params, timestamp) == expected


@pytest.mark.parametrize(("timestamp", "algorithm", "expected"), RFC6238_VECTORS)
def test_match_step_accepts_rfc6238_vectors_at_their_step(
    timestamp: int, algorithm: str, expected: str
) -> None:
    params = TotpParams(algorithm=algorithm, digits=8, period=30)
    assert match_step(RFC_SECRETS[algorithm], params, expected, timestamp) == timestamp // 30


def test_step_at_counts_periods_since_epoch() -> None:
    assert step_at(TotpParams(period=30), 59.9) == 1
    assert step_at(TotpParams(period=60), 120) == 2


@pytest.mark.parametrize("timestamp", [-1.0, float("nan"), float("inf")])
def test_step_at_rejects_invalid_timestamps(timestamp: float) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        step_at(PARAMS, timestamp)


def test_current_step_code_matches_current_step() -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP), NOW) == STEP


def test_previous_step_code_is_accepted_with_window_one() -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP - 1), NOW, window=1) == STEP - 1


def test_next_step_code_is_accepted_with_window_one() -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP + 1), NOW, window=1) == STEP + 1


@pytest.mark.parametrize("offset", [-2, 2])
def test_code_two_steps_away_is_rejected_with_window_one(offset: int) -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP + offset), NOW, window=1) is None


def test_window_zero_accepts_the_exact_step() -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP), NOW, window=0) == STEP


@pytest.mark.parametrize("offset", [-1, 1])
def test_window_zero_rejects_neighbouring_steps(offset: int) -> None:
    assert match_step(SECRET, PARAMS, code_for_step(STEP + offset), NOW, window=0) is None


def test_window_is_clipped_at_the_epoch() -> None:
    assert match_step(SECRET, PARAMS, code_for_step(0), 0.0, window=1) == 0


def test_negative_window_raises() -> None:
    with pytest.raises(ValueError, match="window"):
        match_step(SECRET, PARAMS, code_for_step(STEP), NOW, window=-1)


def test_code_from_another_secret_is_rejected() -> None:
    other = RFC_SECRETS["SHA256"]
    assert match_step(SECRET, PARAMS, code_for_step(STEP, secret=other), NOW) is None


@pytest.mark.parametrize(
    "code",
    ["", "12345", "1234567", "12345678", "12345a", " 12345", "12 345", "+12345", "١٢٣٤٥٦"],
)
def test_malformed_code_returns_none(code: str) -> None:
    assert match_step(SECRET, PARAMS, code, NOW) is None


def count_comparisons(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


def test_match_step_compares_every_step_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_comparisons(monkeypatch)
    # The earliest step in the window matches; an early return would stop at 1.
    assert match_step(SECRET, PARAMS, code_for_step(STEP - 2), NOW, window=2) == STEP - 2
    assert len(calls) == 5


def test_malformed_code_costs_the_same_comparisons_as_a_wrong_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_comparisons(monkeypatch)
    assert match_step(SECRET, PARAMS, "abc", NOW, window=1) is None
    assert len(calls) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithm": "MD5"},
        {"algorithm": "sha1"},
        {"digits": 7},
        {"digits": 10},
        {"digits": True},
        {"period": 9},
        {"period": 301},
        {"period": 30.0},
    ],
)
def test_invalid_params_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TotpParams(**kwargs)


@pytest.mark.parametrize(("algorithm", "size"), [("SHA1", 20), ("SHA256", 32), ("SHA512", 64)])
def test_new_secret_key_length_equals_digest_size(algorithm: str, size: int) -> None:
    secret = new_secret(TotpParams(algorithm=algorithm))
    padded = secret + "=" * (-len(secret) % 8)
    assert len(base64.b32decode(padded)) == size


def test_new_secret_is_unpadded_base32() -> None:
    secret = new_secret(TotpParams(algorithm="SHA256"))
    assert "=" not in secret
    assert validate_secret(secret) == secret


def test_new_secret_is_random() -> None:
    assert new_secret(PARAMS) != new_secret(PARAMS)


def test_validate_secret_canonicalises_case_and_padding() -> None:
    assert validate_secret(SECRET.lower() + "====") == SECRET


@pytest.mark.parametrize("secret", ["", "====", "NOT-BASE32!", "ABCDEFGH1", "A" * 33])
def test_validate_secret_rejects_invalid_base32(secret: str) -> None:
    with pytest.raises(ValueError):
        validate_secret(secret)


def test_validate_secret_rejects_short_keys() -> None:
    with pytest.raises(ValueError):
        validate_secret(b32(b"0123456789"))  # 80 bits


def test_validate_secret_error_does_not_echo_the_secret() -> None:
    secret = SECRET[:-1] + "1"
    with pytest.raises(ValueError) as excinfo:
        validate_secret(secret)
    assert secret not in str(excinfo.value)


def test_provisioning_params_are_otpauth_strings() -> None:
    params = TotpParams(algorithm="SHA512", digits=8, period=60)
    assert provisioning_params(SECRET.lower(), params) == {
        "secret": SECRET,
        "algorithm": "SHA512",
        "digits": "8",
        "period": "60",
    }


@pytest.mark.parametrize("digits", [6, 8])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_code_at_equals_oathtool(oathtool: str, algorithm: str, digits: int) -> None:
    params = TotpParams(algorithm=algorithm, digits=digits)
    secret = RFC_SECRETS[algorithm]
    assert code_at(secret, params, OATHTOOL_TS) == run_oathtool(oathtool, secret, params)


@pytest.mark.parametrize("period", [10, 60, 300])
def test_code_at_equals_oathtool_for_non_default_periods(oathtool: str, period: int) -> None:
    params = TotpParams(period=period)
    assert code_at(SECRET, params, OATHTOOL_TS) == run_oathtool(oathtool, SECRET, params)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_oathtool_accepts_new_secret(oathtool: str, algorithm: str) -> None:
    params = TotpParams(algorithm=algorithm, digits=8)
    secret = new_secret(params)
    assert code_at(secret, params, OATHTOOL_TS) == run_oathtool(oathtool, secret, params)
