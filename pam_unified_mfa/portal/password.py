"""The portals' first factor, from `[portal] first_factor`: local, ldap or pam.

`local` asks the core (argon2 hashes in the store, set with `unified-mfa user password` and
`admin password`); `ldap` and `pam` are the same checks the RADIUS responder uses
(`pam_unified_mfa.first_factor`), with the portal's own `[portal.ldap]` and `pam_service`.
Every refusal is the same bare "no" (S06). An LDAP check that passed may carry the user's
directory groups; the core counts them for enforcement, as for RADIUS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.first_factor import REFUSED, FirstFactor, PasswordCheck, ldap_check, pam_check

PortalCheck = Callable[[str, str, str, RequestContext], FirstFactor]
"""(kind, name, password, ctx) -> the verdict; kind is "user" or "admin"."""

MAX_PASSWORD = 1024


def build_check(mfa: MFA) -> PortalCheck:
    """Built once per service: a bad `[portal.ldap]` is found at the first sign-in's start, not
    silently at each one."""
    settings = mfa.settings.portal
    if settings.first_factor == "local":
        def local(kind: str, name: str, password: str, ctx: RequestContext) -> FirstFactor:
            if not password or len(password) > MAX_PASSWORD:
                return REFUSED
            return FirstFactor(mfa.check_password(kind, name, password, ctx))
        return local
    check: PasswordCheck
    if settings.first_factor == "ldap":
        check = ldap_check(settings.ldap, mfa.home or Path.cwd(), adapter="portal")
    else:
        check = pam_check(settings.pam_service)

    def directory(kind: str, name: str, password: str, ctx: RequestContext) -> FirstFactor:
        if not password or len(password) > MAX_PASSWORD:
            return REFUSED
        return check(name, password)
    return directory
