"""The RADIUS responder's first factors, built from `[radius]`.

The checks themselves live in `pam_unified_mfa.first_factor`, shared with the portals; this
module picks the ones the configured clients use.
"""

from __future__ import annotations

from pathlib import Path

from pam_unified_mfa.first_factor import (
    PASSED,
    REFUSED,
    FirstFactor,
    PasswordCheck,
    group_filter,
    ldap_check,
    no_check,
    pam_check,
)
from pam_unified_mfa.settings import RadiusSettings

__all__ = ["PASSED", "REFUSED", "FirstFactor", "PasswordCheck", "group_filter", "ldap_check",
           "no_check", "pam_check", "password_checks"]


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
