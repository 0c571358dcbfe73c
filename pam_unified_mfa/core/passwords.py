"""Local passwords: the portals' first factor on a small site without a directory.

Stored as argon2id hashes (argon2-cffi's defaults, RFC 9106's second profile), one per user or
admin name. An unknown name is checked against a fixed decoy hash, so it costs the same time
as a wrong password and answers the same "no" (S06). A wrong password of an existing account
counts toward the core's throttle (S02), the same counter as wrong codes: guessing a local
password online is slowed down like guessing a code.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import admin_account, find_account, find_admin, get_user
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.verification import record_failure
from pam_unified_mfa.errors import PolicyViolation
from pam_unified_mfa.store.models import Account, Admin, LocalPassword

KINDS = ("user", "admin")
MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a bound keeps a form post from costing more

_HASHER = PasswordHasher()
# Made once per process from a throwaway text: what an unknown name is checked against.
_DECOY = _HASHER.hash("unified-mfa decoy password, never set for anyone")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PolicyViolation(f"password kind must be one of {', '.join(KINDS)}")


def _account_of(session: Session, kind: str, name: str) -> Account | None:
    """The account whose throttle a wrong password counts on: the user's, or the admin's own
    (a linked admin's is the linked user's, as for their codes, R14)."""
    if kind == "user":
        return find_account(session, name)
    admin = session.scalars(select(Admin).where(Admin.name == name)).one_or_none()
    return admin_account(session, admin) if admin is not None else None


def set_password(session: Session, env: Env, kind: str, name: str, password: str,
                 ctx: RequestContext, actor: str) -> None:
    """Set (or replace) the local password of an existing user or admin."""
    _check_kind(kind)
    if kind == "user":
        get_user(session, name)
    else:
        find_admin(session, name)
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PolicyViolation(f"a password must have {MIN_LENGTH} to {MAX_LENGTH} characters")
    now = env.clock()
    row = session.get(LocalPassword, (kind, name))
    if row is None:
        session.add(LocalPassword(kind=kind, name=name, hash=_HASHER.hash(password),
                                  updated_at=now))
    else:
        row.hash, row.updated_at = _HASHER.hash(password), now
    audit.record(session, now, actor=actor, action="password.set", subject=name,
                 outcome="changed", ctx=ctx, detail={"kind": kind})


def check_password(session: Session, env: Env, kind: str, name: str, password: str,
                   ctx: RequestContext) -> bool:
    """True when `password` is the local password of `name`; the same cost and answer for an
    unknown name, a name without a local password and a wrong password (S06)."""
    _check_kind(kind)
    row = session.get(LocalPassword, (kind, name)) if len(password) <= MAX_LENGTH else None
    if row is None:
        _verify(_DECOY, password[:MAX_LENGTH])
        return False
    if not _verify(row.hash, password):
        account = _account_of(session, kind, name)
        if account is not None:
            record_failure(session, env, account, ctx, "password", action="password.check")
        return False
    if _HASHER.check_needs_rehash(row.hash):
        row.hash = _HASHER.hash(password)
    return True


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
