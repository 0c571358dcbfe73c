"""The first read of every login: the policy, the account, its groups' enforcement and its
factors, in one statement.

A login read them in four statements, and each prepared statement costs more around it than
in the database (store/prepared.py): one statement with joins took 7% off the core's time per
check (docs/performance.md). The policy row leads the joins, so a name the store does not
know still gets a row, the policy alone, from the same one statement a known user's login runs:
the two cost the store the same (S06).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, case, func, literal_column, select
from sqlalchemy.orm import Session

from pam_unified_mfa.core.accounts import ACCOUNT_ROW_COLUMNS, ENFORCEMENTS, AccountRow
from pam_unified_mfa.core.factors import FACTOR_ROW_COLUMNS, LOGIN_STATES, FactorRow
from pam_unified_mfa.core.orgpolicy import PolicyRow, get_policy
from pam_unified_mfa.store.models import (
    Account,
    Admin,
    Factor,
    Group,
    Membership,
    OrgPolicy,
    table_of,
)
from pam_unified_mfa.store.prepared import PreparedQuery


class LoginRead(NamedTuple):
    """What a login knows before it decides anything."""

    policy: PolicyRow
    account: AccountRow | None  # None: a name the store does not know
    group_enforcement: str | None  # the strictest of the account's stored groups' settings
    factors: list[FactorRow]  # active and pending, oldest first


_POLICY = table_of(OrgPolicy)
_ACCOUNTS = table_of(Account)
_ADMINS = table_of(Admin)
_GROUPS = table_of(Group)
_MEMBERSHIPS = table_of(Membership)
_FACTORS = table_of(Factor)

_POLICY_COLUMNS = [_POLICY.c[name] for name in PolicyRow._fields]
_ACCOUNT_AT = len(_POLICY_COLUMNS)
_RANK_AT = _ACCOUNT_AT + len(ACCOUNT_ROW_COLUMNS)
_FACTOR_AT = _RANK_AT + 1

# The strictest group setting as its rank in ENFORCEMENTS (strictest first), so that SQL's min
# finds it. The names are written into the statement: they are constants.
_GROUP_RANK = (
    select(func.min(case(*[(_GROUPS.c.enforcement == literal_column(f"'{name}'"),
                            literal_column(str(rank)))
                           for rank, name in enumerate(ENFORCEMENTS)])))
    .select_from(_GROUPS.join(_MEMBERSHIPS, _MEMBERSHIPS.c.group_id == _GROUPS.c.id))
    .where(_MEMBERSHIPS.c.account_id == _ACCOUNTS.c.id)
    .scalar_subquery())
_LIVE_FACTOR = and_(_FACTORS.c.account_id == _ACCOUNTS.c.id, LOGIN_STATES)


def _query(account_matches: Any) -> PreparedQuery[Sequence[Any]]:
    return PreparedQuery(
        select(*_POLICY_COLUMNS, *ACCOUNT_ROW_COLUMNS, _GROUP_RANK, *FACTOR_ROW_COLUMNS)
        .select_from(_POLICY.outerjoin(_ACCOUNTS, account_matches)
                     .outerjoin(_FACTORS, _LIVE_FACTOR))
        .where(_POLICY.c.id == literal_column("1"))
        .order_by(_FACTORS.c.created_at, _FACTORS.c.id), tuple)


_USER = _query(and_(_ACCOUNTS.c.kind == bindparam("kind"), _ACCOUNTS.c.name == bindparam("name")))
# An admin's account: its own TOTP-only one, or the linked user's for a linked admin (R14).
_ADMIN = _query(_ACCOUNTS.c.id == select(_ADMINS.c.account_id)
                .where(_ADMINS.c.name == bindparam("name")).scalar_subquery())


def login_read(session: Session, name: str, kind: str, now: float) -> LoginRead:
    """What a login as `name` (a user, or with `kind` "admin" an admin console's) reads first.
    A store without a policy row gets one, as `get_policy` makes it."""
    query, params = ((_ADMIN, {"name": name}) if kind == "admin"
                     else (_USER, {"kind": kind, "name": name}))
    rows = query.rows(session, params)
    if not rows:
        get_policy(session, now)
        rows = query.rows(session, params)
    first = rows[0]
    account = AccountRow._make(first[_ACCOUNT_AT:_RANK_AT]) if first[_ACCOUNT_AT] else None
    rank = first[_RANK_AT]
    return LoginRead(
        PolicyRow._make(first[:_ACCOUNT_AT]), account,
        ENFORCEMENTS[rank] if rank is not None else None,
        [FactorRow._make(row[_FACTOR_AT:]) for row in rows if row[_FACTOR_AT] is not None])
