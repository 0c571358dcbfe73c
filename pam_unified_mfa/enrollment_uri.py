"""One enrollment, one URI, one QR code.

A user scans a single QR code. When the enrollment includes a TOTP key the
payload is a plain ``otpauth://totp/`` key URI, so any authenticator app can
read it (they ignore unknown parameters); our Protect app additionally reads
``enroll_url`` and ``enroll_token`` from the same URI to register the device for
push approval. A push-only enrollment has no key to give other apps, so it uses
our own ``unifiedmfa://enroll`` scheme instead of a key URI without a secret,
which other apps would reject or, worse, half-import.

Parsing is strict: the parser is what the Protect app (and our tests) trust,
and a lenient parser would quietly enroll something other than what the
server generated. Error messages never echo the URI, because it carries the
key and the enrollment token.
"""

from __future__ import annotations

import base64
import io
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import segno

from pam_unified_mfa.totp import TotpParams, provisioning_params, validate_secret

FORMATS = ("uri", "terminal", "png", "svg")

_TOTP_SCHEME = "otpauth"
_TOTP_TYPE = "totp"
_PUSH_SCHEME = "unifiedmfa"
_PUSH_HOST = "enroll"
_PARAM_URL = "enroll_url"
_PARAM_TOKEN = "enroll_token"  # noqa: S105 - a parameter name, not a secret

# A legitimate enrollment URI has fewer than a dozen parameters; the cap keeps
# a hostile QR code from making the parser do unbounded work.
_MAX_FIELDS = 32
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Control, format (e.g. bidi overrides, which can disguise an issuer name in
# an app's account list) and surrogate code points.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


@dataclass(frozen=True)
class Enrollment:
    """Everything one QR code hands to the user's device.

    ``totp_secret``/``params`` and ``service_url``/``token`` each come as a
    pair; at least one pair must be present.
    """

    issuer: str
    account: str
    totp_secret: str | None
    params: TotpParams | None
    service_url: str | None
    token: str | None


def _check_name(what: str, value: str) -> None:
    """Reject names that apps would display misleadingly or mangle."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise ValueError(f"{what} must not contain control or formatting characters")


def _check_service_url(url: str) -> None:
    """Reject registration URLs the Protect app could not or should not call."""
    if not url or not all(0x21 <= ord(ch) <= 0x7E for ch in url):
        raise ValueError("service_url must be a non-empty ASCII URL without spaces")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError("service_url is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("service_url must be an http(s) URL with a host")
    # The URL is printed into a QR code that may be photographed or logged.
    if parts.username is not None or parts.password is not None:
        raise ValueError("service_url must not embed credentials")
    if parts.fragment or "#" in url:
        raise ValueError("service_url must not contain a fragment")


def _check_token(token: str) -> None:
    """Keep tokens to printable ASCII so they survive every transport verbatim."""
    if not token or not all(0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ValueError("enrollment token must be non-empty printable ASCII without spaces")


def _validate(e: Enrollment) -> str | None:
    """Check an enrollment and return its canonical TOTP secret (if any).

    Done in build_uri and parse_uri rather than on construction, so both ends
    of the QR code apply exactly the same rules.
    """
    _check_name("issuer", e.issuer)
    _check_name("account", e.account)
    if ":" in e.issuer:
        # The otpauth label is "issuer:account"; apps split on the first colon.
        raise ValueError("issuer must not contain ':'")
    if (e.totp_secret is None) != (e.params is None):
        raise ValueError("totp_secret and params must be given together")
    if (e.service_url is None) != (e.token is None):
        raise ValueError("service_url and token must be given together")
    if e.totp_secret is None and e.service_url is None:
        raise ValueError("an enrollment needs a TOTP secret, a push registration, or both")
    if e.service_url is not None and e.token is not None:
        _check_service_url(e.service_url)
        _check_token(e.token)
    return None if e.totp_secret is None else validate_secret(e.totp_secret)


def _encode_query(pairs: list[tuple[str, str]]) -> str:
    # quote (not quote_plus): several authenticator apps show "+" literally.
    return urlencode(pairs, quote_via=quote)


def build_uri(e: Enrollment) -> str:
    """Return the single URI to put into the enrollment QR code."""
    secret = _validate(e)
    push: list[tuple[str, str]] = []
    if e.service_url is not None and e.token is not None:
        push = [(_PARAM_URL, e.service_url), (_PARAM_TOKEN, e.token)]
    if secret is None or e.params is None:
        query = [("issuer", e.issuer), ("account", e.account), *push]
        return f"{_PUSH_SCHEME}://{_PUSH_HOST}?{_encode_query(query)}"
    totp = provisioning_params(secret, e.params)
    label = f"{quote(e.issuer, safe='')}:{quote(e.account, safe='')}"
    query = [
        ("secret", totp["secret"]),
        ("issuer", e.issuer),
        ("algorithm", totp["algorithm"]),
        ("digits", totp["digits"]),
        ("period", totp["period"]),
        *push,
    ]
    return f"{_TOTP_SCHEME}://{_TOTP_TYPE}/{label}?{_encode_query(query)}"


def _unquote(what: str, raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not valid percent-encoded UTF-8") from None


def _parse_query(query: str) -> dict[str, str]:
    """Decode the query, refusing duplicates so no parameter is ambiguous."""
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError:
        # The original message may quote a field, i.e. possibly the secret.
        raise ValueError("malformed query string") from None
    result: dict[str, str] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate parameter {key!r}")
        result[key] = value
    return result


def _parse_int(what: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 4:
        raise ValueError(f"{what} must be a small decimal integer")
    return int(value)


def _push_part(query: dict[str, str]) -> tuple[str | None, str | None]:
    url = query.get(_PARAM_URL)
    token = query.get(_PARAM_TOKEN)
    if (url is None) != (token is None):
        raise ValueError(f"{_PARAM_URL} and {_PARAM_TOKEN} must appear together")
    return url, token


def _parse_totp(path: str, query: dict[str, str]) -> Enrollment:
    if not path.startswith("/") or len(path) < 2:
        raise ValueError("otpauth URI has no label")
    raw_label = path[1:]
    if "/" in raw_label:
        raise ValueError("otpauth label must not contain '/'")
    label_issuer: str | None = None
    if ":" in raw_label:
        raw_issuer, raw_account = raw_label.split(":", 1)
        label_issuer = _unquote("label issuer", raw_issuer)
        # The key URI format allows spaces after the separator colon.
        account = _unquote("label account", raw_account).lstrip(" ")
    else:
        account = _unquote("label account", raw_label)
    issuer = query.get("issuer", label_issuer)
    if issuer is None:
        raise ValueError("otpauth URI has no issuer")
    if label_issuer is not None and issuer != label_issuer:
        raise ValueError("issuer parameter does not match the label's issuer")
    secret = query.get("secret")
    if not secret:
        raise ValueError("otpauth URI has no secret")
    params = TotpParams(
        algorithm=query.get("algorithm", "SHA1"),
        digits=_parse_int("digits", query.get("digits", "6")),
        period=_parse_int("period", query.get("period", "30")),
    )
    url, token = _push_part(query)
    return Enrollment(issuer, account, validate_secret(secret), params, url, token)


def _parse_push(netloc: str, path: str, query: dict[str, str]) -> Enrollment:
    if netloc != _PUSH_HOST or path:
        raise ValueError(f"expected {_PUSH_SCHEME}://{_PUSH_HOST}?...")
    if "secret" in query:
        # A key here would be silently dropped; that must be the producer's bug.
        raise ValueError(f"{_PUSH_SCHEME} URIs carry no TOTP secret; use otpauth://totp/")
    missing = [k for k in ("issuer", "account", _PARAM_URL, _PARAM_TOKEN) if k not in query]
    if missing:
        raise ValueError(f"{_PUSH_SCHEME} URI lacks {', '.join(missing)}")
    return Enrollment(
        query["issuer"], query["account"], None, None, query[_PARAM_URL], query[_PARAM_TOKEN]
    )


def parse_uri(uri: str) -> Enrollment:
    """Parse a URI produced by build_uri back into an Enrollment.

    Unknown query parameters are ignored so that later server versions can
    add some without breaking deployed apps; everything we do use is checked.
    """
    if not uri or not all(0x21 <= ord(ch) <= 0x7E for ch in uri):
        raise ValueError("URI must be non-empty ASCII without spaces or control characters")
    if "#" in uri:
        raise ValueError("URI must not contain a fragment")
    if _BAD_PERCENT.search(uri):
        raise ValueError("URI contains a malformed percent-escape")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ValueError("malformed URI") from None
    query = _parse_query(parts.query)
    if parts.scheme == _TOTP_SCHEME:
        if parts.netloc == "hotp":
            raise ValueError(
                "counter-based (HOTP) keys are not supported; expected otpauth://totp/"
            )
        if parts.netloc != _TOTP_TYPE:
            raise ValueError("expected otpauth://totp/")
        enrollment = _parse_totp(parts.path, query)
    elif parts.scheme == _PUSH_SCHEME:
        enrollment = _parse_push(parts.netloc, parts.path, query)
    else:
        raise ValueError(
            f"unsupported URI scheme {parts.scheme!r}; expected {_TOTP_SCHEME} or {_PUSH_SCHEME}"
        )
    _validate(enrollment)
    return enrollment


def render(uri: str, fmt: str) -> bytes:
    """Render the enrollment URI for display or hand-over.

    Error level M survives a smudged or glare-covered screen while keeping the
    symbol small enough for a terminal; micro QR is off because most phone
    authenticator apps cannot read it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "uri":
        return (uri + "\n").encode("utf-8")
    qr = segno.make(uri, error="m", micro=False)
    if fmt == "terminal":
        text = io.StringIO()
        # compact=True packs two modules per character cell (half blocks), so
        # the code fits an 80x24 terminal.
        qr.terminal(out=text, compact=True)
        return text.getvalue().encode("utf-8")
    out = io.BytesIO()
    if fmt == "png":
        qr.save(out, kind="png", scale=6, border=4)
    else:
        qr.save(out, kind="svg", scale=6, border=4)
    return out.getvalue()


PNG_DATA_URI = "data:image/png;base64,"


def png_data_uri(uri: str) -> str:
    """The enrollment QR as an inline PNG for a web page: shown without a second request, so
    the URI (with its secret) never becomes an address that a proxy or a log could keep. Each
    module is a block of pixels, which phone cameras and zbarimg read even from a screenshot."""
    return PNG_DATA_URI + base64.b64encode(render(uri, "png")).decode("ascii")
