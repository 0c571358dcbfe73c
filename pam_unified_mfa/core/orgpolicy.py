"""Reading the organisation policy row, created with the defaults of a fresh installation."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy.orm import Session

from pam_unified_mfa.store.models import OrgPolicy

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


def method_enabled(policy: OrgPolicy, method: str) -> bool:
    return policy.push_enabled if method == "push" else policy.totp_enabled
