"""Typed, validated, read-only settings from `unified-mfa.toml`.

Loaded once at start. Unknown keys and wrong types are errors, so a typo can never silently turn a
fail-closed default into something weaker; every key is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.totp import TotpParams

SETTINGS_FILE = "unified-mfa.toml"
KEY_FILE = "unified-mfa.key"
SQLITE_FILE = "unified-mfa.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from '30s', '5m', '1h', '2d' — one unit, whole numbers, so configs stay readable."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"invalid duration {text!r}: a whole number with ms, s, m, h or d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` from a listen setting or option."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {text!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def _check_public_url(url: str) -> None:
    """The public URL goes into push enrollment QR codes: refuse what they could not carry."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or not all(0x21 <= ord(ch) <= 0x7E for ch in url):
        raise ConfigError("public_url must be an ASCII http(s) URL with a host and no spaces")
    if parts.username is not None or parts.password is not None or "#" in url:
        raise ConfigError("public_url must not hold credentials or a #fragment")


def default_home() -> Path:
    """The interfaces' order: $UNIFIED_MFA_HOME, else the system or per-user directory."""
    env = os.environ.get("UNIFIED_MFA_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/unified-mfa")
    return Path.home() / ".local" / "share" / "unified-mfa"


@dataclass(frozen=True)
class TotpSettings:
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30
    window: int = 1
    issuer: str = "Unified MFA"

    def params(self) -> TotpParams:
        return TotpParams(algorithm=self.algorithm, digits=self.digits, period=self.period)


@dataclass(frozen=True)
class ThrottleSettings:
    max_failures: int = 5
    lockout: str = "5m"
    max_lockout: str = "1h"


@dataclass(frozen=True)
class EnrollmentSettings:
    token_ttl: str = "24h"  # noqa: S105 - a lifetime, not a secret
    admin_reset_window: str = "24h"


@dataclass(frozen=True)
class DialogueSettings:
    ttl: str = "3m"
    max_attempts: int = 3


@dataclass(frozen=True)
class BypassSettings:
    ttl: str = "24h"
    length: int = 10


@dataclass(frozen=True)
class PushSettings:
    timeout: str = "60s"
    max_per_window: int = 5
    rate_window: str = "10m"
    not_me_block: str = "30m"


@dataclass(frozen=True)
class ConfirmSettings:
    ttl: str = "10m"


@dataclass(frozen=True)
class ServiceSettings:
    """`unified-mfa serve`: where it listens and how (docs/api.md, Transport)."""

    listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    allow_plain_http: bool = False
    client_rate: int = 50
    client_burst: int = 100
    admin_token_ttl: str = "30d"  # noqa: S105 - a lifetime, not a secret


@dataclass(frozen=True)
class PamdSettings:
    """`unified-mfa pamd`: the local store, or a central `unified-mfa serve` (docs/pam.md)."""

    server: str = ""
    client: str = ""
    client_secret_file: str = ""
    timeout: str = "10s"


FIRST_FACTORS = ("ldap", "pam", "none")
RADIUS_MODES = ("challenge", "append", "autopush")


@dataclass(frozen=True)
class LdapSettings:
    """The directory that checks RADIUS passwords when `[radius] first_factor = "ldap"`."""

    url: str = ""
    start_tls: bool = True
    ca_file: str = ""
    user_dn: str = ""
    """A DN template with `{user}` (escaped for a DN), e.g. uid={user},ou=people,dc=example."""
    timeout: str = "5s"
    group_base: str = ""
    """Where the user's groups are searched after the bind; empty: no directory groups."""
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    """`{dn}` is the user's DN, `{user}` the user name, both escaped for a filter (RFC 4515)."""


@dataclass(frozen=True)
class RadiusClientSettings:
    """One gateway (or a network of them) allowed to ask, with its own shared secret."""

    name: str = ""
    address: str = ""
    secret: str = ""
    secret_file: str = ""
    mode: str = "challenge"
    require_message_authenticator: bool = True
    first_factor: str = ""  # empty: [radius] first_factor


SHARED_REPLIES = ("auto", "on", "off")  # auto: on when the store is PostgreSQL


@dataclass(frozen=True)
class RadiusSettings:
    """`unified-mfa radius` (docs/radius.md)."""

    listen: str = "0.0.0.0:1812"
    first_factor: str = ""
    pam_service: str = "unified-mfa-radius"
    receive_buffer: int = 8 * 1024 * 1024
    reply_cache: str = "30s"
    shared_replies: str = "auto"
    ldap: LdapSettings = field(default_factory=LdapSettings)
    clients: tuple[RadiusClientSettings, ...] = field(
        default=(), metadata={"items": RadiusClientSettings})

    def check(self) -> None:
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ConfigError("[[radius.clients]] names must be unique")
        for client in self.clients:
            where = f"[[radius.clients]] {client.name or '(no name)'}"
            if not client.name or not client.address:
                raise ConfigError(f"{where}: name and address are required")
            if bool(client.secret) == bool(client.secret_file):
                raise ConfigError(f"{where}: set exactly one of secret and secret_file")
            if client.mode not in RADIUS_MODES:
                raise ConfigError(f"{where}: mode must be one of {', '.join(RADIUS_MODES)}")
            if client.first_factor and client.first_factor not in FIRST_FACTORS:
                raise ConfigError(f"{where}: first_factor must be one of "
                                  f"{', '.join(FIRST_FACTORS)}")
        if self.first_factor and self.first_factor not in FIRST_FACTORS:
            raise ConfigError(f"[radius] first_factor must be one of {', '.join(FIRST_FACTORS)}")
        if self.shared_replies not in SHARED_REPLIES:
            raise ConfigError(f"[radius] shared_replies must be one of {', '.join(SHARED_REPLIES)}")
        if self.receive_buffer < 65536:
            raise ConfigError("[radius] receive_buffer must be at least 65536 bytes")
        parse_duration(self.reply_cache)
        parse_duration(self.ldap.timeout)
        if self.ldap.url and "{user}" not in self.ldap.user_dn:
            raise ConfigError("[radius.ldap] user_dn must contain {user}")
        if self.ldap.group_base and not any(
                mark in self.ldap.group_filter for mark in ("{dn}", "{user}")):
            # Without the user in it, the filter would hand everyone every group it finds.
            raise ConfigError("[radius.ldap] group_filter must contain {dn} or {user}")


PORTAL_FIRST_FACTORS = ("local", "ldap", "pam")


@dataclass(frozen=True)
class PortalSettings:
    """The user and admin portals of `unified-mfa serve` (docs/portal.md)."""

    enabled: bool = True
    first_factor: str = "local"
    """`local` (argon2 hashes set with `user password` / `admin password`), `ldap` or `pam`."""
    pam_service: str = "unified-mfa-portal"
    session_idle: str = "15m"
    session_absolute: str = "8h"
    reauth_window: str = "5m"
    """How long after the last password + MFA a sensitive action goes through without both."""
    ldap: LdapSettings = field(default_factory=LdapSettings)

    def check(self) -> None:
        if self.first_factor not in PORTAL_FIRST_FACTORS:
            raise ConfigError("[portal] first_factor must be one of "
                              f"{', '.join(PORTAL_FIRST_FACTORS)}")
        idle, absolute, reauth = (parse_duration(self.session_idle),
                                  parse_duration(self.session_absolute),
                                  parse_duration(self.reauth_window))
        if not 0 < idle <= absolute:
            raise ConfigError("[portal] session_idle must be more than 0 and at most "
                              "session_absolute")
        if not 0 < reauth <= absolute:
            raise ConfigError("[portal] reauth_window must be more than 0 and at most "
                              "session_absolute")
        parse_duration(self.ldap.timeout)
        if self.ldap.url and "{user}" not in self.ldap.user_dn:
            raise ConfigError("[portal.ldap] user_dn must contain {user}")
        if self.first_factor == "ldap" and not self.ldap.url:
            raise ConfigError("[portal] first_factor = ldap needs [portal.ldap] url and user_dn")


@dataclass(frozen=True)
class Settings:
    """Everything `unified-mfa.toml` may say; defaults are the safe choice."""

    public_url: str = DEFAULT_PUBLIC_URL
    store: str = ""
    fail_mode: str = "secure"
    totp: TotpSettings = field(default_factory=TotpSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    enrollment: EnrollmentSettings = field(default_factory=EnrollmentSettings)
    dialogue: DialogueSettings = field(default_factory=DialogueSettings)
    bypass: BypassSettings = field(default_factory=BypassSettings)
    push: PushSettings = field(default_factory=PushSettings)
    confirm: ConfirmSettings = field(default_factory=ConfirmSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    pamd: PamdSettings = field(default_factory=PamdSettings)
    radius: RadiusSettings = field(default_factory=RadiusSettings)
    portal: PortalSettings = field(default_factory=PortalSettings)

    def __post_init__(self) -> None:
        if self.fail_mode not in ("secure", "safe"):
            raise ConfigError(f"fail_mode must be 'secure' or 'safe', not {self.fail_mode!r}")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("public_url must start with http:// or https://")
        _check_public_url(self.public_url)
        if self.store and not self.store.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ConfigError("store must be a sqlite:/// or postgresql:// URL")
        try:
            self.totp.params()
        except ValueError as exc:
            raise ConfigError(f"[totp] {exc}") from None
        if not 0 <= self.totp.window <= 5:
            raise ConfigError("[totp] window must be between 0 and 5 steps")
        issuer = self.totp.issuer
        # The issuer goes into every enrollment URI, whose label is "issuer:account".
        if not issuer.strip() or issuer != issuer.strip() or ":" in issuer or any(
            unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in issuer
        ):
            raise ConfigError("[totp] issuer must be non-empty text without ':', control "
                              "characters or surrounding spaces")
        if self.throttle.max_failures < 1 or self.dialogue.max_attempts < 1:
            raise ConfigError("max_failures and max_attempts must be at least 1")
        if bool(self.service.tls_cert) != bool(self.service.tls_key):
            raise ConfigError("[service] tls_cert and tls_key go together")
        if self.service.client_rate < 1 or self.service.client_burst < 1:
            raise ConfigError("[service] client_rate and client_burst must be at least 1")
        parse_duration(self.service.admin_token_ttl)
        if self.pamd.server and (not self.pamd.server.startswith(("http://", "https://"))
                                 or not self.pamd.client or not self.pamd.client_secret_file):
            raise ConfigError("[pamd] server must be an http(s) URL, with client and "
                              "client_secret_file set")
        if parse_duration(self.pamd.timeout) <= 0:
            raise ConfigError("[pamd] timeout must be more than 0")
        self.radius.check()
        self.portal.check()
        if not 8 <= self.bypass.length <= 20:
            raise ConfigError("[bypass] length must be between 8 and 20 digits")
        # Every text setting of these sections is a duration: check them all once, at load.
        for section in (self.throttle, self.enrollment, self.dialogue, self.bypass, self.push,
                        self.confirm):
            for f in fields(section):
                value = getattr(section, f.name)
                if isinstance(value, str):
                    parse_duration(value)

    def seconds(self, duration: str) -> float:
        return parse_duration(duration)


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    """Build one dataclass from a TOML table, refusing unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(f"unknown setting {where}{key}")
        default = getattr(cls(), key)
        item = spec.metadata.get("items")
        if item is not None:  # an array of tables: [[section.key]]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}{key} must be an array of tables ([[{where}{key}]])")
            kwargs[key] = tuple(_build(item, v, f"{where}{key}.") for v in value)
            continue
        if hasattr(default, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            kwargs[key] = _build(type(default), value, f"{where}{key}.")
            continue
        # bool is a subclass of int: check it explicitly so `digits = true` is refused.
        if type(value) is not type(default):
            raise ConfigError(
                f"setting {where}{key} must be {type(default).__name__}, not {type(value).__name__}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def load_settings(home: Path) -> Settings:
    """Read the home's settings file; a missing file means all defaults, a bad one is an error."""
    path = home / SETTINGS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} does not parse: {exc}") from None
    settings: Settings = _build(Settings, data, "")
    return settings


def store_url(home: Path, settings: Settings, override: str | None = None) -> str:
    """The store URL: --store, else the `store` setting, else SQLite inside the home."""
    if override:
        return override
    if settings.store:
        return settings.store
    return f"sqlite:///{home / SQLITE_FILE}"


SETTINGS_TEMPLATE = """\
# Unified MFA settings. Every key is described in docs/configuration.md.
# Unknown keys are refused, so a typo cannot weaken a default.

# Where devices and remote adapters reach `unified-mfa serve`; goes into enrollment QR codes.
public_url = "{public_url}"

# Empty: SQLite in this directory. Or a PostgreSQL URL: postgresql://user:pass@host/db
store = "{store}"

# What adapters do when the store is unreachable: "secure" (deny) or "safe" (allow, logged).
fail_mode = "secure"

[totp]
algorithm = "SHA1"
digits = 6
period = 30
window = 1
issuer = "Unified MFA"

[throttle]
max_failures = 5
lockout = "5m"
max_lockout = "1h"
"""
