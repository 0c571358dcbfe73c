"""The password check before the second factor: a directory bind, the host's PAM, or none.

Shared by the adapters that check the password themselves (the RADIUS responder, the portals),
so both bind to a directory the same way. Each check is blocking (a network bind, a PAM stack)
and runs in a worker thread. A refusal carries nothing but "no", so the adapter cannot tell an
unknown user from a wrong password (S06); only a check that passed may carry the user's
directory groups, which the core counts for enforcement (docs/radius.md).
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import LdapSettings, parse_duration


@dataclass(frozen=True)
class FirstFactor:
    """The first factor's verdict and, when it held, the user's directory groups (their names)."""

    ok: bool
    groups: tuple[str, ...] = ()


REFUSED = FirstFactor(False)
PASSED = FirstFactor(True)

PasswordCheck = Callable[[str, str], FirstFactor]
"""(user, password) -> whether the first factor holds, and the groups it found."""

_PLACEHOLDER = re.compile(r"\{(dn|user)\}")
INVALID_CREDENTIALS = 49  # RFC 4511: what a wrong password and an unknown entry both answer


def no_check(user: str, password: str) -> FirstFactor:
    """`none`: the gateway in front of us has checked the password already."""
    return PASSED


def pam_check(service: str) -> PasswordCheck:
    """`pam`: the host's PAM stack `service` (python-pam)."""
    import pam

    def check(user: str, password: str) -> FirstFactor:
        if not password:
            return REFUSED
        return PASSED if pam.authenticate(user, password, service=service) else REFUSED

    return check


def group_filter(template: str, user: str, dn: str) -> str:
    """The group search filter for one user: `{dn}` and `{user}` replaced in one pass, each
    escaped for a filter value (RFC 4515), so `*`, `(`, `)` or `\\` in a name (or a DN) can
    neither widen the search nor add a clause."""
    from ldap3.utils.conv import escape_filter_chars

    values = {"dn": dn, "user": user}
    return _PLACEHOLDER.sub(lambda m: str(escape_filter_chars(values[m.group(1)])), template)


def _check_group_filter(template: str, section: str) -> None:
    """Refuse a filter that does not parse at start, not at every login."""
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter

    try:
        parse_filter(group_filter(template, "user", "uid=user,dc=example"), None,
                     False, False, None, False)
    except LDAPException as exc:
        raise ConfigError(f"[{section}] group_filter does not parse: {exc}") from None


def _reason(exc: Exception) -> str:
    """An ldap3 exception as one readable line (some wrap their message in a tuple)."""
    args = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], tuple) else exc.args
    return "; ".join(str(arg) for arg in args) or type(exc).__name__


def _group_names(connection: Any, base: str, query: str) -> tuple[str, ...] | None:
    """The `cn` of every group `query` finds under `base`, searched on the user's own (bound)
    connection; None when the search fails. Nested groups are not followed."""
    import ldap3

    if not connection.search(base, query, search_scope=ldap3.SUBTREE, attributes=["cn"]):
        if connection.result.get("description") == "success":
            return ()  # nothing found
        return None
    names: set[str] = set()
    for entry in connection.response or ():
        if entry.get("type") != "searchResEntry":
            continue  # a referral: not followed
        values = entry.get("attributes", {}).get("cn", ())
        names.update([values] if isinstance(values, str) else values)
    return tuple(sorted(names))


def ldap_check(settings: LdapSettings, home: Path, adapter: str = "radius") -> PasswordCheck:
    """`ldap`: bind as the user (ldap3); StartTLS unless the URL is ldaps:// or it is turned off.
    `adapter` names the settings section (`[ADAPTER.ldap]`) and the log the errors go to.
    With `group_base`, the user's groups are then searched on the same bound connection, so
    the directory's own access rules decide what the user's groups are.

    The user name is escaped for the DN, so `*`, `,`, `=` or `\\` in it cannot change whose
    entry is bound. Whatever fails — the connection, StartTLS, the bind, the group search —
    refuses the login (fail closed) and, unless it is a plain wrong password, says why in the
    log.
    """
    import ldap3
    from ldap3.core.exceptions import LDAPException, LDAPStartTLSError
    from ldap3.utils.dn import escape_rdn

    section = f"{adapter}.ldap"
    log = logging.getLogger(f"unified_mfa.{adapter}")
    if not settings.url or "{user}" not in settings.user_dn:
        raise ConfigError(f"[{section}] url and user_dn are required for first_factor = ldap")
    if settings.group_base:
        _check_group_filter(settings.group_filter, section)
    ca_file = settings.ca_file
    if ca_file and not Path(ca_file).is_absolute():
        ca_file = str(home / ca_file)
    timeout = parse_duration(settings.timeout)
    url = settings.url.rstrip("/")  # ldap3 takes no path, not even the empty one of `host/`
    try:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file or None)
        # No schema read (get_info): one bind, one search per login and nothing else.
        server = ldap3.Server(url, tls=tls, connect_timeout=timeout, get_info=ldap3.NONE)
    except LDAPException as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    start_tls = settings.start_tls and not url.lower().startswith("ldaps://")

    def check(user: str, password: str) -> FirstFactor:
        if not password or not user:
            return REFUSED  # an empty password would be an anonymous bind (RFC 4513 §5.1.2)
        dn = settings.user_dn.replace("{user}", escape_rdn(user))
        # No referrals: they would carry the user's password to another server.
        connection = ldap3.Connection(server, user=dn, password=password,
                                      receive_timeout=timeout, raise_exceptions=False,
                                      auto_referrals=False)
        try:
            if start_tls and not connection.start_tls():
                log.error("%s: LDAP StartTLS with %s failed: %s", adapter, url,
                          connection.result.get("description"))
                return REFUSED
            if not connection.bind():
                if connection.result.get("result") != INVALID_CREDENTIALS:
                    log.error("%s: LDAP bind at %s refused: %s", adapter, url,
                              connection.result.get("description"))
                return REFUSED
            if not settings.group_base:
                return PASSED
            query = group_filter(settings.group_filter, user, dn)
            groups = _group_names(connection, settings.group_base, query)
            if groups is None:
                # Fail closed: without the groups, a stricter group's enforcement would be lost.
                log.error("%s: LDAP group search under %s failed: %s", adapter,
                          settings.group_base, connection.result.get("description"))
                return REFUSED
            return FirstFactor(True, groups)
        except LDAPStartTLSError as exc:
            log.error("%s: LDAP StartTLS with %s failed (is ca_file the directory's CA, "
                      "and the URL's host a name in its certificate?): %s", adapter, url,
                      _reason(exc))
            return REFUSED
        except LDAPException as exc:
            log.error("%s: LDAP server %s unavailable: %s: %s", adapter, url,
                      type(exc).__name__, _reason(exc))
            return REFUSED
        finally:
            with contextlib.suppress(LDAPException):
                connection.unbind()

    return check
