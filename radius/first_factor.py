"""The password check before the second factor: a directory bind, the host's PAM, or none.

Each check is blocking (a network bind, a PAM stack) and runs in a worker thread; it answers
only yes or no, so the responder cannot tell an unknown user from a wrong password (S06).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import LdapSettings, RadiusSettings, parse_duration

log = logging.getLogger("unified_mfa.radius")

PasswordCheck = Callable[[str, str], bool]
"""(user, password) -> whether the first factor holds."""


def no_check(user: str, password: str) -> bool:
    """`none`: the gateway in front of us has checked the password already."""
    return True


def pam_check(service: str) -> PasswordCheck:
    """`pam`: the host's PAM stack `service` (python-pam)."""
    import pam

    def check(user: str, password: str) -> bool:
        if not password:
            return False
        return bool(pam.authenticate(user, password, service=service))

    return check


def ldap_check(settings: LdapSettings, home: Path) -> PasswordCheck:
    """`ldap`: bind as the user (ldap3); StartTLS unless the URL is ldaps:// or it is turned off.

    The user name is escaped for the DN, so `*`, `,`, `=` or `\\` in it cannot change whose
    entry is bound.
    """
    import ldap3
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.dn import escape_rdn

    if not settings.url or "{user}" not in settings.user_dn:
        raise ConfigError("[radius.ldap] url and user_dn are required for first_factor = ldap")
    ca_file = settings.ca_file
    if ca_file and not Path(ca_file).is_absolute():
        ca_file = str(home / ca_file)
    timeout = parse_duration(settings.timeout)
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file or None)
    server = ldap3.Server(settings.url, tls=tls, connect_timeout=timeout)
    start_tls = settings.start_tls and not settings.url.lower().startswith("ldaps://")

    def check(user: str, password: str) -> bool:
        if not password or not user:
            return False  # an empty password would be an anonymous bind (RFC 4513 §5.1.2)
        dn = settings.user_dn.replace("{user}", escape_rdn(user))
        connection = ldap3.Connection(server, user=dn, password=password,
                                      receive_timeout=timeout, raise_exceptions=False)
        try:
            if start_tls and not connection.start_tls():
                log.error("radius: LDAP StartTLS failed: %s", connection.result)
                return False
            return bool(connection.bind())
        except LDAPException as exc:
            log.error("radius: LDAP unavailable: %s", type(exc).__name__)
            return False
        finally:
            connection.unbind()

    return check


def password_checks(settings: RadiusSettings, home: Path, wanted: set[str]) -> dict[
        str, PasswordCheck]:
    """One check per first factor the clients use; built once at start, so a bad LDAP or PAM
    setting stops the responder instead of failing every login."""
    checks: dict[str, PasswordCheck] = {}
    for name in wanted:
        if name == "none":
            checks[name] = no_check
        elif name == "pam":
            checks[name] = pam_check(settings.pam_service)
        elif name == "ldap":
            checks[name] = ldap_check(settings.ldap, home)
    return checks
