"""The single enrollment URI / QR code: building, strict parsing and rendering."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pyotp
import pytest

from pam_unified_mfa.enrollment_uri import (
    FORMATS,
    Enrollment,
    build_uri,
    parse_uri,
    render,
)
from pam_unified_mfa.totp import TotpParams, code_at

SECRET = base64.b32encode(b"12345678901234567890123456789012").decode("ascii").rstrip("=")
PARAMS = TotpParams(algorithm="SHA256", digits=8, period=60)
SERVICE_URL = "https://mfa.example.com/api/v1"
TOKEN = "tok_3q2-Zx9_vP"

UNIFIED = Enrollment(
    issuer="Example Corp",
    account="alice",
    totp_secret=SECRET,
    params=PARAMS,
    service_url=SERVICE_URL,
    token=TOKEN,
)
TOTP_ONLY = replace(UNIFIED, service_url=None, token=None)
PUSH_ONLY = replace(UNIFIED, totp_secret=None, params=None)

# Spaces, a colon in the account, non-ASCII letters, a dash and an emoji.
AWKWARD = replace(UNIFIED, issuer="Exämple Corp \u2013 Zürich", account="ops:alice Müller 🔐")

GOOD = build_uri(UNIFIED)


@pytest.fixture
def zbarimg() -> str:
    """zbarimg is a required test tool: its absence is a failure, not a skip."""
    path = shutil.which("zbarimg")
    if path is None:
        pytest.fail("zbarimg is required to decode rendered QR codes (apt-get install zbar-tools)")
    return path


def test_unified_enrollment_roundtrips() -> None:
    assert parse_uri(build_uri(UNIFIED)) == UNIFIED


def test_push_only_enrollment_roundtrips() -> None:
    assert parse_uri(build_uri(PUSH_ONLY)) == PUSH_ONLY


def test_totp_only_enrollment_roundtrips() -> None:
    assert parse_uri(build_uri(TOTP_ONLY)) == TOTP_ONLY


def test_unified_uri_is_an_otpauth_totp_uri() -> None:
    assert GOOD.startswith("otpauth://totp/Example%20Corp:alice?secret=")


def test_unified_uri_carries_the_push_parameters() -> None:
    assert "&enroll_url=https%3A%2F%2Fmfa.example.com%2Fapi%2Fv1&enroll_token=" in GOOD


def test_totp_only_uri_has_no_push_parameters() -> None:
    assert "enroll_" not in build_uri(TOTP_ONLY)


def test_push_only_uri_uses_the_unifiedmfa_scheme() -> None:
    assert build_uri(PUSH_ONLY).startswith("unifiedmfa://enroll?issuer=Example%20Corp&account=")


def test_build_uri_canonicalises_the_secret() -> None:
    lower = replace(UNIFIED, totp_secret=SECRET.lower() + "====")
    assert parse_uri(build_uri(lower)).totp_secret == SECRET


def test_r05_unified_uri_totp_part_is_standard_otpauth() -> None:
    otp = pyotp.parse_uri(GOOD)
    assert isinstance(otp, pyotp.TOTP)
    assert (otp.secret, otp.digits, otp.interval) == (SECRET, 8, 60)
    assert (otp.issuer, otp.name) == ("Example Corp", "alice")
    assert otp.digest is hashlib.sha256


def test_r05_standard_parser_computes_our_codes() -> None:
    otp = pyotp.parse_uri(GOOD)
    assert isinstance(otp, pyotp.TOTP)
    assert otp.at(1_767_225_600) == code_at(SECRET, PARAMS, 1_767_225_600)


def test_label_with_spaces_colons_and_unicode_roundtrips() -> None:
    assert parse_uri(build_uri(AWKWARD)) == AWKWARD


def test_label_with_spaces_colons_and_unicode_is_read_by_pyotp() -> None:
    otp = pyotp.parse_uri(build_uri(AWKWARD))
    assert (otp.issuer, otp.name) == (AWKWARD.issuer, AWKWARD.account)


def test_built_uri_is_plain_ascii_without_spaces() -> None:
    uri = build_uri(AWKWARD)
    assert uri.isascii()
    assert " " not in uri
    assert "+" not in uri


def test_parse_accepts_spaces_after_the_label_colon() -> None:
    uri = GOOD.replace("Example%20Corp:alice", "Example%20Corp:%20alice", 1)
    assert parse_uri(uri) == UNIFIED


def test_parse_uses_defaults_for_absent_optional_totp_parameters() -> None:
    uri = f"otpauth://totp/Example%20Corp:alice?secret={SECRET}&issuer=Example%20Corp"
    assert parse_uri(uri).params == TotpParams()


def test_parse_ignores_unknown_parameters() -> None:
    assert parse_uri(GOOD + "&image=https%3A%2F%2Fexample.com%2Flogo.png") == UNIFIED


@pytest.mark.parametrize(
    "enrollment",
    [
        replace(UNIFIED, totp_secret=None, params=None, service_url=None, token=None),
        replace(UNIFIED, params=None),
        replace(UNIFIED, totp_secret=None),
        replace(UNIFIED, token=None),
        replace(UNIFIED, service_url=None),
        replace(UNIFIED, issuer=""),
        replace(UNIFIED, account=" "),
        replace(UNIFIED, account=" alice"),
        replace(UNIFIED, issuer="Example:Corp"),
        replace(UNIFIED, account="alice\n"),
        replace(UNIFIED, issuer="Example\u202eCorp"),
        replace(UNIFIED, totp_secret="not base32!"),
        replace(UNIFIED, totp_secret="GEZDGNBV"),
        replace(UNIFIED, service_url="ftp://mfa.example.com"),
        replace(UNIFIED, service_url="https://"),
        replace(UNIFIED, service_url="https://user:pw@mfa.example.com"),
        replace(UNIFIED, service_url="https://mfa.example.com/#x"),
        replace(UNIFIED, token=""),
        replace(UNIFIED, token="has space"),
    ],
)
def test_build_uri_rejects_invalid_enrollments(enrollment: Enrollment) -> None:
    with pytest.raises(ValueError):
        build_uri(enrollment)


def test_build_uri_error_does_not_echo_the_secret() -> None:
    bad = SECRET[:-1] + "1"
    with pytest.raises(ValueError) as excinfo:
        build_uri(replace(UNIFIED, totp_secret=bad))
    assert bad not in str(excinfo.value)


MALFORMED = {
    "empty": "",
    "wrong scheme": GOOD.replace("otpauth://", "https://", 1),
    "hotp": GOOD.replace("otpauth://totp/", "otpauth://hotp/", 1) + "&counter=0",
    "no label": GOOD.replace("/Example%20Corp:alice?", "/?", 1),
    "slash in label": GOOD.replace("Corp:alice", "Corp/x:alice", 1),
    "missing secret": GOOD.replace(f"secret={SECRET}&", "", 1),
    "empty secret": GOOD.replace(f"secret={SECRET}", "secret=", 1),
    "bad base32": GOOD.replace(f"secret={SECRET}", "secret=ABC1DEFG", 1),
    "short key": GOOD.replace(f"secret={SECRET}", "secret=GEZDGNBV", 1),
    "digits 7": GOOD.replace("digits=8", "digits=7", 1),
    "digits word": GOOD.replace("digits=8", "digits=eight", 1),
    "digits signed": GOOD.replace("digits=8", "digits=%2B8", 1),
    "algorithm": GOOD.replace("algorithm=SHA256", "algorithm=MD5", 1),
    "period": GOOD.replace("period=60", "period=5", 1),
    "duplicate": GOOD + f"&secret={SECRET}",
    "issuer mismatch": GOOD.replace("issuer=Example%20Corp", "issuer=Evil", 1),
    "no issuer": GOOD.replace("Example%20Corp:", "", 1).replace("&issuer=Example%20Corp", "", 1),
    "url without token": GOOD.split("&enroll_token=")[0],
    "token without url": GOOD.replace("&enroll_url=https%3A%2F%2Fmfa.example.com%2Fapi%2Fv1", ""),
    "bad enroll_url": GOOD.replace("https%3A%2F%2Fmfa", "javascript%3A%2F%2Fmfa", 1),
    "raw space": GOOD.replace("%20", " ", 1),
    "non-ascii": GOOD.replace("alice", "alicé", 1),
    "fragment": GOOD + "#x",
    "bad percent escape": GOOD.replace("%20", "%G0", 1),
    "truncated percent escape": GOOD + "%2",
    "invalid utf-8": GOOD.replace("alice", "%FFalice", 1),
    "query field without =": GOOD + "&junk",
    "push wrong host": build_uri(PUSH_ONLY).replace("//enroll?", "//register?", 1),
    "push with path": build_uri(PUSH_ONLY).replace("//enroll?", "//enroll/x?", 1),
    "push with secret": build_uri(PUSH_ONLY) + f"&secret={SECRET}",
    "push without account": build_uri(PUSH_ONLY).replace("&account=alice", "", 1),
    "push without token": build_uri(PUSH_ONLY).split("&enroll_token=")[0],
}


@pytest.mark.parametrize("uri", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_uri_rejects_malformed_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(uri)


@pytest.mark.parametrize("uri", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_uri_errors_do_not_echo_secret_or_token(uri: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_uri(uri)
    message = str(excinfo.value)
    assert SECRET not in message
    assert TOKEN not in message


def test_r05_png_qr_decodes_to_the_same_uri_with_zbarimg(zbarimg: str, tmp_path: Path) -> None:
    uri = build_uri(AWKWARD)
    png = tmp_path / "enroll.png"
    png.write_bytes(render(uri, "png"))
    result = subprocess.run(
        [zbarimg, "--raw", "-q", str(png)], capture_output=True, check=True, timeout=30
    )
    assert result.stdout.decode("utf-8").rstrip("\n") == uri


def test_png_render_is_a_png_image() -> None:
    assert render(GOOD, "png").startswith(b"\x89PNG\r\n\x1a\n")


def test_svg_render_is_xml_with_an_svg_root() -> None:
    data = render(GOOD, "svg")
    assert b"<svg" in data
    # Our own renderer's output, not untrusted input.
    root = ET.fromstring(data)  # noqa: S314
    assert root.tag.rsplit("}", 1)[-1] == "svg"


def test_terminal_render_is_non_empty_text() -> None:
    text = render(GOOD, "terminal").decode("utf-8")
    assert text.strip()
    assert text.count("\n") > 10


def test_uri_render_is_the_uri_and_a_newline() -> None:
    assert render(GOOD, "uri") == (GOOD + "\n").encode("ascii")


def test_every_format_renders() -> None:
    assert all(render(GOOD, fmt) for fmt in FORMATS)


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        render(GOOD, "jpeg")
