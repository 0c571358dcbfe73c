"""Checking a code against a user's factors, with replay protection (S01) and throttling (S02).

Both live here, in the store, so they hold across every adapter and every node: an accepted
time step is recorded with one conditional UPDATE (only one of two concurrent submissions can
win it), and failures are counted with an atomic increment.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session

from pam_unified_mfa import totp
from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import AccountRow
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.factors import (
    BYPASS,
    TOTP_KINDS,
    FactorRow,
    confirm,
    is_usable,
    login_factors,
    secret_context,
)
from pam_unified_mfa.store.models import Account, Factor, table_of
from pam_unified_mfa.store.prepared import Prepared, PreparedQuery

# A TOTP check used for unknown users so that they cost the same time as real ones (S06).
_DECOY_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 - public, never enrolled


@dataclass(frozen=True)
class CodeCheck:
    """`locked` says the account is locked now, by this failure or an earlier one (S02)."""

    accepted: bool
    reason: str
    factor_id: str | None = None
    kind: str | None = None
    locked: bool = False


# Statements on every login's path are prepared once (store/prepared.py).
# The step only moves forward: a code of this step or an older one is never taken again (S01).
_FACTORS = table_of(Factor)
_ACCOUNTS = table_of(Account)
_CLAIM_STEP = Prepared(update(_FACTORS)
                       .where(_FACTORS.c.id == bindparam("factor_id"),
                              or_(_FACTORS.c.last_step.is_(None),
                                  _FACTORS.c.last_step < bindparam("step")))
                       .values(last_step=bindparam("step")))
_SPEND_BYPASS = Prepared(update(_FACTORS)
                         .where(_FACTORS.c.id == bindparam("factor_id"),
                                _FACTORS.c.used_at.is_(None))
                         .values(used_at=bindparam("now")))
_CLEAR_FAILURES = Prepared(update(_ACCOUNTS)
                           .where(_ACCOUNTS.c.id == bindparam("account_id"),
                                  or_(_ACCOUNTS.c.failures != 0, _ACCOUNTS.c.lock_count != 0,
                                      _ACCOUNTS.c.locked_until.is_not(None)))
                           .values(failures=0, lock_count=0, locked_until=None))
_COUNT_FAILURE = PreparedQuery(
    update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("account_id"))
    .values(failures=_ACCOUNTS.c.failures + 1)
    .returning(_ACCOUNTS.c.failures, _ACCOUNTS.c.lock_count),
    lambda row: (int(row[0]), int(row[1])))
_LOCK = Prepared(update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("account_id"))
                 .values(failures=0, lock_count=_ACCOUNTS.c.lock_count + 1,
                         locked_until=bindparam("until")))

AnyAccount = Account | AccountRow
"""The ORM object (admin and portal paths) or the row a login reads: both have what is used."""


def is_locked(account: AnyAccount, now: float) -> bool:
    return account.locked_until is not None and account.locked_until > now


def normalise_code(code: str) -> str:
    """Users type spaces and dashes from grouped displays ("123 456"); nothing else is fixed up."""
    return code.strip().replace(" ", "").replace("-", "")


def decoy_check(env: Env, code: str) -> None:
    """Spend the work of one TOTP check without touching the store."""
    totp.match_step(_DECOY_SECRET, env.settings.totp.params(), normalise_code(code),
                    env.clock(), env.settings.totp.window)


def _claim_totp(session: Session, env: Env, factor: FactorRow, code: str,
                now: float) -> str | None:
    """'ok' if the code matches a step not used before, 'replay' if used, None if no match."""
    if factor.secret is None:
        return None
    secret = env.keyring.decrypt(factor.secret, secret_context(factor.id)).decode()
    params = totp.TotpParams(algorithm=factor.algorithm or "SHA1", digits=factor.digits or 6,
                             period=factor.period or 30)
    step = totp.match_step(secret, params, code, now, env.settings.totp.window)
    if step is None:
        return None
    claimed = _CLAIM_STEP.run(session, {"factor_id": factor.id, "step": step})
    return "ok" if claimed == 1 else "replay"


def _claim_bypass(session: Session, env: Env, factor: FactorRow, code: str,
                  now: float) -> str | None:
    if factor.code_hash is None or not env.keyring.verify_mac(
        code.encode(), f"bypass:{factor.id}", factor.code_hash
    ):
        return None
    spent = _SPEND_BYPASS.run(session, {"factor_id": factor.id, "now": now})
    return "ok" if spent == 1 else "replay"


def record_failure(
    session: Session, env: Env, account: AnyAccount, ctx: RequestContext, reason: str,
    action: str = "mfa.code",
) -> bool:
    """Count a failure atomically; at the limit, lock with doubling back-off (S02).

    `action` names what failed in the audit trail (a code, or a portal's local password).
    Returns whether this failure locked the account.
    """
    now = env.clock()
    settings = env.settings.throttle
    counted = _COUNT_FAILURE.first(session, {"account_id": account.id})
    assert counted is not None, "the account of a login is not deleted during it"
    failures, lock_count = counted
    audit.record(session, now, actor=account.name, action=action, subject=account.name,
                 outcome="rejected", ctx=ctx, detail={"reason": reason, "attempts": failures})
    locked = failures >= settings.max_failures
    if locked:
        lockout = min(env.seconds(settings.lockout) * 2 ** min(lock_count, 16),
                      env.seconds(settings.max_lockout))
        _LOCK.run(session, {"account_id": account.id, "until": now + lockout})
        audit.record(session, now, actor=account.name, action="user.locked",
                     subject=account.name, outcome="locked", ctx=ctx,
                     detail={"locked_for": int(lockout), "attempts": failures})
    _forget(session, account)
    return locked


def _forget(session: Session, account: AnyAccount) -> None:
    """An ORM object of the account would now hold old counts: it reads them again."""
    if isinstance(account, Account):
        session.expire(account)


def record_success(session: Session, account: AnyAccount) -> None:
    """Clear the failure count and back-off. Most logins have none, as the row read at the
    start of the login shows: then there is no statement at all. A failure counted by another
    request since that read stays counted, as if it had come after this success."""
    if not (account.failures or account.lock_count or account.locked_until is not None):
        return
    if _CLEAR_FAILURES.run(session, {"account_id": account.id}):
        _forget(session, account)


def check_code(
    session: Session, env: Env, account: AnyAccount, code: str, ctx: RequestContext,
    only: tuple[str, ...] | None = None, pending: bool = False,
    factors: list[FactorRow] | None = None,
) -> CodeCheck:
    """Try a code against every usable TOTP factor and bypass code of the account.

    A correct code during a lock is refused (S02); a code whose time step was already accepted
    is refused (S01). A first valid code for a pending factor confirms it. `only` restricts
    the check to active factors of the given kinds (proof of possession for a reset, R07);
    `pending` to factors awaiting their first code (finishing an enrollment). `factors`, when
    the caller has just read them in this transaction, saves reading them again.
    """
    now = env.clock()
    if is_locked(account, now):
        decoy_check(env, code)
        audit.record(session, now, actor=account.name, action="mfa.code", subject=account.name,
                     outcome="rejected", ctx=ctx, detail={"reason": "locked"})
        return CodeCheck(False, "locked", locked=True)
    code = normalise_code(code)
    states = ("pending",) if pending else ("active",) if only else ("active", "pending")
    if factors is None:
        factors = login_factors(session, account.id)
    candidates = [f for f in factors if f.state in states and is_usable(f, now)
                  and (only is None or f.kind in only)]
    outcome: str | None = None
    matched: FactorRow | None = None
    for factor in candidates:
        if factor.kind in TOTP_KINDS:
            result = _claim_totp(session, env, factor, code, now)
        elif factor.kind == BYPASS and len(code) == env.settings.bypass.length:
            result = _claim_bypass(session, env, factor, code, now)
        else:
            continue
        if result == "ok":
            matched = factor
            break
        outcome = outcome or result
    if not candidates:
        decoy_check(env, code)
    if matched is None:
        reason = outcome or "invalid"
        locked = record_failure(session, env, account, ctx, reason)
        return CodeCheck(False, reason, locked=locked)
    record_success(session, account)
    if matched.state == "pending":
        pending_factor = session.get(Factor, matched.id)
        assert pending_factor is not None
        confirm(session, env, pending_factor, ctx)
    audit.record(session, now, actor=account.name, action="mfa.code", subject=account.name,
                 outcome="accepted", ctx=ctx,
                 detail={"factor": matched.id, "kind": matched.kind})
    return CodeCheck(True, "ok", matched.id, matched.kind)
