"""Changing the organisation policy: merge, separate, TOTP source, methods (R01-R04, R08-R11).

Merge, separate and the TOTP source are two-step (R03): `preview` states what will change and
returns a single-use confirmation bound to the policy version it was computed for; `apply`
needs that confirmation, so a change made in between voids it. Both steps are audited.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from pam_unified_mfa import totp
from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import (
    ENFORCEMENTS,
    admin_roles,
    find_admin,
    list_users,
    new_id,
)
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.factors import (
    PROTECT_PUSH,
    PROTECT_TOTP,
    THIRD_PARTY_TOTP,
    account_factors,
    secret_context,
    token_hash,
    working_factors,
)
from pam_unified_mfa.core.orgpolicy import METHODS, TOTP_SOURCES, get_policy
from pam_unified_mfa.enrollment_uri import Enrollment, build_uri
from pam_unified_mfa.errors import (
    ConfirmationError,
    LockoutRefused,
    PermissionDenied,
    PolicyViolation,
)
from pam_unified_mfa.store.models import Admin, Confirmation, DeviceMessage, Factor

ACTIONS = ("merge", "separate", "totp_source")
MIGRATED_NOTICE = "Your push account was migrated: this app now also shows your TOTP codes."
SEPARATE_WARNING = ("Separating is not recommended: users must then manage push and TOTP "
                    "apart, and users relying on one method may lock themselves out later. "
                    "No one loses a working factor now.")


@dataclass(frozen=True)
class PolicyView:
    mode: str
    totp_source: str
    methods: tuple[str, ...]
    default_enforcement: str
    version: int


@dataclass(frozen=True)
class Preview:
    """What a two-step change will do; `confirmation` is the token the confirm step needs."""

    action: str
    argument: str
    confirmation: str
    changes: dict[str, str]
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    expires_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "argument": self.argument,
                "confirmation": self.confirmation, "changes": self.changes,
                "counts": self.counts, "warnings": self.warnings, "expires_at": self.expires_at}


def show(session: Session, env: Env) -> PolicyView:
    policy = get_policy(session, env.clock())
    methods = tuple(m for m in METHODS
                    if (policy.push_enabled if m == "push" else policy.totp_enabled))
    return PolicyView(policy.mode, policy.totp_source, methods, policy.default_enforcement,
                      policy.version)


def _require(session: Session, admin_name: str, action: str) -> Admin:
    """Merge and separate need the billing role (R02); other changes any admin."""
    admin = find_admin(session, admin_name)
    if action in ("merge", "separate") and "billing" not in admin_roles(admin):
        raise PermissionDenied(
            f"refused: {action} needs the 'billing' role, which admin {admin_name} does not hold"
        )
    return admin


def allowed(session: Session, admin_name: str, action: str) -> bool:
    """Whether the admin holds what `action` needs (R02): for a portal to show a button
    enabled or not; the change itself checks again."""
    try:
        _require(session, admin_name, action)
    except PermissionDenied:
        return False
    return True


def _user_counts(session: Session, env: Env) -> dict[str, int]:
    now = env.clock()
    counts = {"users": 0, "push_to_migrate": 0, "third_party_totp": 0, "protect_totp_only": 0,
              "unified": 0, "without_factor": 0}
    for account in list_users(session):
        counts["users"] += 1
        working = working_factors(session, account, now)
        kinds = {f.kind for f in working}
        if any(f.unified for f in working):
            counts["unified"] += 1
        elif PROTECT_PUSH in kinds:
            counts["push_to_migrate"] += 1
        elif kinds == {PROTECT_TOTP}:
            counts["protect_totp_only"] += 1
        if THIRD_PARTY_TOTP in kinds:
            counts["third_party_totp"] += 1
        if not working:
            counts["without_factor"] += 1
    return counts


def preview(
    session: Session, env: Env, admin_name: str, action: str, argument: str,
    ctx: RequestContext,
) -> Preview:
    """Step one: check the role, state what will change, and hand out a confirmation."""
    if action != "totp_source":  # only it takes one: no caller's text is kept or audited
        argument = ""
    now = env.clock()
    admin = _require(session, admin_name, action)
    policy = get_policy(session, now)
    counts = _user_counts(session, env)
    warnings: list[str] = []
    if action == "merge":
        if policy.mode == "unified":
            raise PolicyViolation("the organisation is already unified")
        changes = {"mode": "separated -> unified",
                   "totp_source": f"{policy.totp_source} -> protect",
                   "methods": "push, totp (both enabled: Protect holds both)"}
        warnings.append(
            f"{counts['push_to_migrate']} push device(s) receive their TOTP and a migration "
            "notice (R10); every user keeps logging in with what they have (R04); "
            f"{counts['third_party_totp']} third-party TOTP app(s) keep working until their "
            "user resets the Protect enrollment (R09)."
        )
    elif action == "separate":
        if policy.mode == "separated":
            raise PolicyViolation("the organisation is already separated")
        changes = {"mode": "unified -> separated",
                   "enrollments": f"{counts['unified']} unified enrollment(s) split into "
                                  "independent push and TOTP factors (R11)"}
        warnings.append(SEPARATE_WARNING)
    elif action == "totp_source":
        if argument not in TOTP_SOURCES:
            raise PolicyViolation(f"totp source must be one of {', '.join(TOTP_SOURCES)}")
        if argument == policy.totp_source:
            raise PolicyViolation(f"the TOTP source is already {argument}")
        if policy.mode == "unified" and argument != "protect":
            raise PolicyViolation(
                "unified Protect enrollment uses Protect TOTP: separate first to allow "
                "third-party TOTP apps")
        changes = {"totp_source": f"{policy.totp_source} -> {argument}"}
        warnings.append("Existing factors of both kinds keep working (R04); only new "
                        f"enrollments must use {argument} TOTP (R08).")
    else:
        raise PolicyViolation(f"unknown policy action {action!r}")
    token = secrets.token_urlsafe(24)
    expires = now + env.seconds(env.settings.confirm.ttl)
    session.add(Confirmation(id=token_hash(token), action=action, argument=argument,
                             admin_id=admin.id, policy_version=policy.version, created_at=now,
                             expires_at=expires))
    audit.record(session, now, actor=admin_name, action=f"policy.{action}", subject="org",
                 outcome="previewed", ctx=ctx, detail={"users": counts["users"],
                                                       "to": argument or None})
    return Preview(action, argument, token, changes, counts, warnings, expires)


def apply(
    session: Session, env: Env, admin_name: str, confirmation: str, ctx: RequestContext,
) -> dict[str, int]:
    """Step two: apply exactly what was previewed, once, if nothing changed in between."""
    now = env.clock()
    policy = get_policy(session, now, for_update=True)
    pending = session.get(Confirmation, token_hash(confirmation))
    if pending is None or pending.used_at is not None or pending.expires_at <= now:
        raise ConfirmationError("confirmation unknown, expired or already used: preview again")
    admin = _require(session, admin_name, pending.action)
    if admin.id != pending.admin_id:
        raise ConfirmationError("a confirmation can only be confirmed by the admin who asked")
    if pending.policy_version != policy.version:
        raise ConfirmationError("the policy changed since the preview: preview again")
    spent = cast(CursorResult[Any], session.execute(
        update(Confirmation).where(Confirmation.id == pending.id, Confirmation.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)))
    if spent.rowcount != 1:
        raise ConfirmationError("confirmation already used")
    result: dict[str, int] = {}
    if pending.action == "merge":
        policy.mode, policy.totp_source = "unified", "protect"
        policy.push_enabled = policy.totp_enabled = True
        result["migrated"] = _migrate_push_devices(session, env, ctx, admin_name)
    elif pending.action == "separate":
        policy.mode = "separated"
        result["split"] = _split_unified(session, env)
    else:
        policy.totp_source = pending.argument
    policy.version += 1
    policy.updated_at = now
    audit.record(session, now, actor=admin_name, action=f"policy.{pending.action}",
                 subject="org", outcome="applied", ctx=ctx,
                 detail={"mode": policy.mode, "to": pending.argument or None,
                         "migrated": result.get("migrated"), "count": result.get("split")})
    return result


def _migrate_push_devices(session: Session, env: Env, ctx: RequestContext, actor: str) -> int:
    """R10: each push-only Protect device joins a unified enrollment and gets its TOTP.

    The TOTP seed travels over the device channel (encrypted at rest until delivered); the
    user's existing factors are untouched, so nobody is interrupted (R04).
    """
    now = env.clock()
    params = env.settings.totp.params()
    migrated = 0
    for account in list_users(session):
        for push in account_factors(session, account, "active"):
            if push.kind != PROTECT_PUSH or push.unified:
                continue
            secret = totp.new_secret(params)
            factor = Factor(
                id=new_id("f"), account_id=account.id, kind=PROTECT_TOTP, state="active",
                enrollment_id=push.enrollment_id, unified=True, retires="",
                algorithm=params.algorithm, digits=params.digits, period=params.period,
                created_at=now, confirmed_at=now,
            )
            factor.secret = env.keyring.encrypt(secret.encode(), secret_context(factor.id))
            push.unified = True
            session.add(factor)
            uri = build_uri(Enrollment(issuer=env.settings.totp.issuer, account=account.name,
                                       totp_secret=secret, params=params, service_url=None,
                                       token=None))
            message_id = new_id("m")
            payload = json.dumps({"notice": MIGRATED_NOTICE, "totp_uri": uri})
            session.add(DeviceMessage(
                id=message_id, factor_id=push.id, kind="migrated",
                payload=env.keyring.encrypt(payload.encode(), f"device_message:{message_id}"),
                created_at=now,
            ))
            audit.record(session, now, actor=actor, action="factor.migrate",
                         subject=account.name, outcome="unified", ctx=ctx,
                         detail={"factor": push.id})
            migrated += 1
    session.flush()
    return migrated


def _split_unified(session: Session, env: Env) -> int:
    """R11: every unified enrollment becomes independent push and TOTP factors."""
    split = 0
    for account in list_users(session):
        for factor in account_factors(session, account, "active", "pending"):
            if factor.unified:
                factor.unified = False
                factor.enrollment_id = new_id("e")
                split += 1
    return split


def set_method(
    session: Session, env: Env, admin_name: str, method: str, enabled: bool,
    ctx: RequestContext,
) -> PolicyView:
    """Enable or disable a method for new enrollments; the last one cannot go (R01).

    Existing factors keep working either way (R04): nobody is locked out by a policy change.
    """
    now = env.clock()
    _require(session, admin_name, "method")
    if method not in METHODS:
        raise PolicyViolation(f"method must be one of {', '.join(METHODS)}")
    policy = get_policy(session, now, for_update=True)
    if not enabled and policy.mode == "unified":
        raise PolicyViolation("unified Protect needs both push and TOTP: separate first")
    push, totp_on = policy.push_enabled, policy.totp_enabled
    if method == "push":
        push = enabled
    else:
        totp_on = enabled
    if not (push or totp_on):
        raise LockoutRefused(
            f"refused: disabling {method} would leave the organisation without any MFA method"
        )
    policy.push_enabled, policy.totp_enabled = push, totp_on
    policy.version += 1
    policy.updated_at = now
    audit.record(session, now, actor=admin_name, action="policy.method", subject="org",
                 outcome="enabled" if enabled else "disabled", ctx=ctx, detail={"method": method})
    return show(session, env)


def set_default_enforcement(
    session: Session, env: Env, admin_name: str, enforcement: str, ctx: RequestContext,
) -> PolicyView:
    now = env.clock()
    _require(session, admin_name, "enforcement")
    if enforcement not in ENFORCEMENTS:
        raise PolicyViolation(f"enforcement must be one of {', '.join(ENFORCEMENTS)}")
    policy = get_policy(session, now, for_update=True)
    previous = policy.default_enforcement
    policy.default_enforcement = enforcement
    policy.version += 1
    policy.updated_at = now
    audit.record(session, now, actor=admin_name, action="policy.enforcement", subject="org",
                 outcome="changed", ctx=ctx, detail={"from": previous, "to": enforcement})
    return show(session, env)

