"""Reading the organisation policy row, created with the defaults of a fresh installation."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from pam_unified_mfa.store.models import OrgPolicy, table_of
from pam_unified_mfa.store.prepared import PreparedQuery

MODES = ("separated", "unified")
TOTP_SOURCES = ("protect", "third_party")
METHODS = ("push", "totp")


def get_policy(session: Session, now: float, *, for_update: bool = False) -> OrgPolicy:
    """The single policy row; an installation starts separated, Protect TOTP, both methods on."""
    policy = session.get(OrgPolicy, 1, with_for_update=for_update)
    if policy is None:
        policy = OrgPolicy(id=1, mode="separated", totp_source="protect", push_enabled=True,
                           totp_enabled=True, default_enforcement="required", version=1,
                           updated_at=now)
        session.add(policy)
        session.flush()
    return policy


class PolicyRow(NamedTuple):
    """What a login reads of the policy, as a plain row (store/prepared.py says why)."""

    mode: str
    totp_source: str
    default_enforcement: str


_POLICY = table_of(OrgPolicy)
_POLICY_ROW = PreparedQuery(select(*[_POLICY.c[name] for name in PolicyRow._fields])
                       .where(_POLICY.c.id == 1), PolicyRow._make)


def login_policy(session: Session, now: float) -> PolicyRow:
    """The policy as every login reads it; the row is created as `get_policy` does if missing."""
    row = _POLICY_ROW.first(session, {})
    if row is None:
        policy = get_policy(session, now)
        row = PolicyRow(policy.mode, policy.totp_source, policy.default_enforcement)
    return row


def method_enabled(policy: OrgPolicy, method: str) -> bool:
    return policy.push_enabled if method == "push" else policy.totp_enabled
