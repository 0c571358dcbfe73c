"""Enrolling, confirming, deleting and resetting factors (R05-R09, R11, R12, R14).

A new enrollment starts `pending` and becomes `active` with its first valid code (or, for push,
when the device registers). A reset by the user is a swap: the replacement is pending and carries
the ids it `retires`, so the old factors keep working until the new one is proven (R12).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from pam_unified_mfa import totp
from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import new_id
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.orgpolicy import get_policy, method_enabled
from pam_unified_mfa.enrollment_uri import Enrollment, build_uri
from pam_unified_mfa.errors import LockoutRefused, NotFound, PolicyViolation
from pam_unified_mfa.store.models import Account, EnrollmentToken, Factor, OrgPolicy, table_of
from pam_unified_mfa.store.prepared import PreparedQuery

PROTECT_PUSH = "protect_push"
PROTECT_TOTP = "protect_totp"
THIRD_PARTY_TOTP = "third_party_totp"
BYPASS = "bypass"
TOTP_KINDS = (PROTECT_TOTP, THIRD_PARTY_TOTP)
WORKING_KINDS = (PROTECT_PUSH, PROTECT_TOTP, THIRD_PARTY_TOTP)
ENROLL_KINDS = ("unified", "push", "totp", "third_party_totp")


def secret_context(factor_id: str) -> str:
    """Associated data binding a seed's ciphertext to its own row (S05)."""
    return f"factor:{factor_id}:secret"


def token_hash(token: str) -> str:
    """Tokens are high-entropy, so a plain hash suffices to keep them out of the store."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class FactorView:
    """What every surface shows of a factor (R15): never a secret."""

    id: str
    kind: str
    state: str
    unified: bool
    enrollment: str
    created_at: float
    confirmed_at: float | None
    expires_at: float | None
    used: bool


@dataclass(frozen=True)
class EnrollResult:
    account: str
    kind: str
    uri: str
    factor_ids: tuple[str, ...]
    expires_at: float


# Built once: this runs on every login, and building a statement costs more than running it.
# States are filtered here, not in SQL: an account has a handful of factors, and an expanding
# IN would be compiled again at every call.
_FACTORS = (select(Factor).where(Factor.account_id == bindparam("account_id"))
            .order_by(Factor.created_at, Factor.id))


def account_factors(session: Session, account: Account, *states: str) -> list[Factor]:
    factors = session.scalars(_FACTORS, {"account_id": account.id})
    return [f for f in factors if f.state in states] if states else list(factors)


class FactorRow(NamedTuple):
    """What a login reads of a factor, as a plain row (store/prepared.py says why).

    `unified` is read for its truth only: SQLite gives 0 or 1.
    """

    id: str
    kind: str
    state: str
    unified: bool
    secret: str | None
    code_hash: str | None
    algorithm: str | None
    digits: int | None
    period: int | None
    device_key: str | None
    expires_at: float | None
    used_at: float | None


_FACTOR_TABLE = table_of(Factor)
FACTOR_ROW_COLUMNS = [_FACTOR_TABLE.c[name] for name in FactorRow._fields]
# What a login reads: active and pending factors. Not IN (…): that would be an expanding
# parameter, compiled again at each call.
LOGIN_STATES = or_(_FACTOR_TABLE.c.state == "active", _FACTOR_TABLE.c.state == "pending")
_LOGIN_FACTORS = PreparedQuery(
    select(*FACTOR_ROW_COLUMNS)
    .where(_FACTOR_TABLE.c.account_id == bindparam("account_id"), LOGIN_STATES)
    .order_by(_FACTOR_TABLE.c.created_at, _FACTOR_TABLE.c.id), FactorRow._make)


def login_factors(session: Session, account_id: str) -> list[FactorRow]:
    """The account's active and pending factors, oldest first, as a login reads them: one
    statement per login, whose rows every decision of the login then shares."""
    return _LOGIN_FACTORS.rows(session, {"account_id": account_id})


def is_usable(factor: Factor | FactorRow, now: float) -> bool:
    """Active (or pending, awaiting its first code) and neither expired nor spent."""
    if factor.state not in ("active", "pending"):
        return False
    if factor.expires_at is not None and factor.expires_at <= now:
        return False
    return factor.used_at is None


def working_factors(session: Session, account: Account, now: float) -> list[Factor]:
    """Confirmed push/TOTP factors: what keeps a user from being locked out (R11, R12).

    Bypass codes do not count: they are single-use and expire.
    """
    return [f for f in account_factors(session, account, "active") if is_working(f, now)]


def is_working(factor: Factor | FactorRow, now: float) -> bool:
    """A confirmed, usable push or TOTP factor (not a bypass code)."""
    return factor.state == "active" and factor.kind in WORKING_KINDS and is_usable(factor, now)


def view(factor: Factor) -> FactorView:
    return FactorView(
        id=factor.id, kind=factor.kind, state=factor.state, unified=factor.unified,
        enrollment=factor.enrollment_id, created_at=factor.created_at,
        confirmed_at=factor.confirmed_at, expires_at=factor.expires_at,
        used=factor.used_at is not None,
    )


def visible_factors(session: Session, account: Account, now: float) -> list[FactorView]:
    """Factors worth showing: everything not retired, with expired pending ones left out."""
    return [
        view(f) for f in account_factors(session, account, "active", "pending")
        if f.state == "active" or is_usable(f, now)
    ]


def on_unified(session: Session, account: Account) -> bool:
    return unified_in(account_factors(session, account, "active"))


def unified_in(factors: list[Factor] | list[FactorRow]) -> bool:
    """Whether an active factor among these came from a unified Protect enrollment."""
    return any(f.unified for f in factors if f.state == "active")


def retire(session: Session, factor: Factor, now: float) -> None:
    """Retired factors keep their row for the audit trail but lose their secret."""
    factor.state = "retired"
    factor.secret = None
    factor.device_key = None
    factor.code_hash = None
    factor.used_at = factor.used_at or now


def _resolve_kind(policy: OrgPolicy, account: Account, requested: str | None) -> str:
    """Map `--kind` onto what the policy allows (R08, R14); None picks the policy's default."""
    source_kind = "totp" if policy.totp_source == "protect" else "third_party_totp"
    if account.kind == "admin":
        if requested not in (None, "totp", "third_party_totp"):
            raise PolicyViolation("an admin not linked to a user uses TOTP only (no push)")
        kind = requested or source_kind
    elif requested is None:
        kind = "unified" if policy.mode == "unified" else source_kind
    else:
        kind = requested
    if kind not in ENROLL_KINDS:
        raise PolicyViolation(f"unknown enrollment kind {kind!r}")
    if account.kind != "admin":
        if policy.mode == "unified" and kind in ("push", "totp"):
            raise PolicyViolation(
                "the organisation uses unified Protect enrollment: enroll with --kind unified"
            )
        if policy.mode == "separated" and kind == "unified":
            raise PolicyViolation(
                "the organisation is separated: enroll push and TOTP on their own"
            )
        if kind == "push" and not method_enabled(policy, "push"):
            raise PolicyViolation("push is not enabled for new enrollments")
        if kind in ("totp", "third_party_totp") and not method_enabled(policy, "totp"):
            raise PolicyViolation("TOTP is not enabled for new enrollments")
    if kind == "totp" and policy.totp_source != "protect":
        raise PolicyViolation("the organisation uses third-party TOTP apps (R08): "
                              "enroll with --kind third_party_totp")
    if kind == "third_party_totp" and policy.totp_source != "third_party":
        raise PolicyViolation("the organisation uses Protect TOTP (R08): "
                              "third-party TOTP apps are not enabled for new enrollments")
    return kind


def _components(kind: str) -> tuple[str, ...]:
    return {
        "unified": (PROTECT_PUSH, PROTECT_TOTP),
        "push": (PROTECT_PUSH,),
        "totp": (PROTECT_TOTP,),
        "third_party_totp": (THIRD_PARTY_TOTP,),
    }[kind]


def create_enrollment(
    session: Session, env: Env, account: Account, kind: str, *,
    retires: tuple[str, ...] = (), ttl: float | None = None,
) -> EnrollResult:
    """Create the pending factors of one enrollment and the single URI that enrolls them all.

    Earlier pending factors of the same kinds are withdrawn so only the newest QR works.
    """
    now = env.clock()
    expires = now + (ttl if ttl is not None else env.seconds(env.settings.enrollment.token_ttl))
    for old in account_factors(session, account, "pending"):
        if old.kind in _components(kind):
            retire(session, old, now)
    enrollment_id = new_id("e")
    params = env.settings.totp.params()
    secret: str | None = None
    token: str | None = None
    ids: list[str] = []
    for component in _components(kind):
        factor = Factor(
            id=new_id("f"), account_id=account.id, kind=component, state="pending",
            enrollment_id=enrollment_id, unified=kind == "unified",
            retires=",".join(retires), expires_at=expires, created_at=now,
        )
        if component in TOTP_KINDS:
            secret = totp.new_secret(params)
            factor.secret = env.keyring.encrypt(secret.encode(), secret_context(factor.id))
            factor.algorithm, factor.digits, factor.period = (
                params.algorithm, params.digits, params.period)
        session.add(factor)
        session.flush()
        if component == PROTECT_PUSH:
            token = secrets.token_urlsafe(32)
            session.add(EnrollmentToken(token_hash=token_hash(token), account_id=account.id,
                                        factor_id=factor.id, expires_at=expires))
        ids.append(factor.id)
    uri = build_uri(Enrollment(
        issuer=env.settings.totp.issuer, account=account.name,
        totp_secret=secret, params=params if secret else None,
        service_url=env.settings.public_url if token else None, token=token,
    ))
    return EnrollResult(account.name, kind, uri, tuple(ids), expires)


def enroll(
    session: Session, env: Env, account: Account, requested: str | None, ctx: RequestContext,
    actor: str,
) -> EnrollResult:
    """Start an enrollment the policy allows; an active one of the same kind needs a reset."""
    now = env.clock()
    policy = get_policy(session, now)
    kind = _resolve_kind(policy, account, requested)
    if _already_active(session, account, kind, now):
        raise PolicyViolation(
            f"{account.name} already has an active {kind} enrollment: use reset to replace it"
        )
    result = create_enrollment(session, env, account, kind)
    audit.record(session, now, actor=actor, action="factor.enroll", subject=account.name,
                 outcome="pending", ctx=ctx, detail={"kind": kind})
    return result


def _already_active(session: Session, account: Account, kind: str, now: float) -> bool:
    active_kinds = {f.kind for f in working_factors(session, account, now)
                    if kind != "unified" or f.unified}
    return set(_components(kind)) <= active_kinds


def enroll_options(session: Session, env: Env, account: Account) -> tuple[str, ...]:
    """The enrollment kinds `enroll` would accept for this account now (R05, R08, R14): what a
    portal may offer, decided here so that it never offers what the core would refuse."""
    now = env.clock()
    policy = get_policy(session, now)
    options: list[str] = []
    for kind in ENROLL_KINDS:
        try:
            resolved = _resolve_kind(policy, account, kind)
        except PolicyViolation:
            continue
        if resolved == kind and not _already_active(session, account, kind, now):
            options.append(kind)
    return tuple(options)


def confirm(session: Session, env: Env, factor: Factor, ctx: RequestContext) -> None:
    """A pending factor proved by its first valid code becomes active; a swap retires the old.

    Pending siblings of the same enrollment stay pending until they are proven themselves (a
    push device registers on its own), but the swap happens now: the user has shown they hold
    the replacement (R12, R09).
    """
    now = env.clock()
    factor.state = "active"
    factor.confirmed_at = now
    factor.expires_at = None
    retired: list[str] = []
    for old_id in filter(None, factor.retires.split(",")):
        old = session.get(Factor, old_id)
        if old is not None and old.state != "retired" and old.account_id == factor.account_id:
            retire(session, old, now)
            retired.append(old_id)
    if factor.retires:
        session.execute(update(Factor).where(Factor.enrollment_id == factor.enrollment_id)
                        .values(retires=""))
    account = session.get(Account, factor.account_id)
    if account is not None:
        account.must_enroll_until = None
    audit.record(session, now, actor=account.name if account else "-", action="factor.confirm",
                 subject=account.name if account else "-", outcome="active", ctx=ctx,
                 detail={"factor": factor.id, "kind": factor.kind,
                         "retired": ",".join(retired) or None})


def get_factor(session: Session, account: Account, factor_id: str) -> Factor:
    factor = session.get(Factor, factor_id)
    if factor is None or factor.account_id != account.id or factor.state == "retired":
        raise NotFound(f"{account.name} has no factor {factor_id}")
    return factor


def delete_factor(
    session: Session, env: Env, account: Account, factor_id: str, ctx: RequestContext,
    actor: str,
) -> list[str]:
    """Delete one factor, or a whole unified Protect enrollment (R06 in reverse).

    Refused when it would take away the user's last working factor (R12).
    """
    now = env.clock()
    factor = get_factor(session, account, factor_id)
    targets = [factor]
    if factor.unified:
        targets = [f for f in account_factors(session, account, "active", "pending")
                   if f.enrollment_id == factor.enrollment_id]
    target_ids = {f.id for f in targets}
    remaining = [f for f in working_factors(session, account, now) if f.id not in target_ids]
    losing_working = any(f.state == "active" and f.kind in WORKING_KINDS for f in targets)
    if losing_working and not remaining:
        raise LockoutRefused(
            f"refused: {factor_id} is the last working factor of {account.name}; deleting it "
            "would lock them out. Enroll another factor first, or have an admin reset it."
        )
    for target in targets:
        retire(session, target, now)
    audit.record(session, now, actor=actor, action="factor.delete", subject=account.name,
                 outcome="deleted", ctx=ctx,
                 detail={"factors": ",".join(sorted(target_ids)), "kind": factor.kind})
    return sorted(target_ids)


def protect_factors(session: Session, account: Account) -> list[Factor]:
    return [f for f in account_factors(session, account, "active")
            if f.kind in (PROTECT_PUSH, PROTECT_TOTP)]


def reset_targets(
    session: Session, policy: OrgPolicy, account: Account, factor_id: str | None,
) -> tuple[list[Factor], str]:
    """Which factors a reset replaces, and which enrollment kind replaces them.

    Unified: the whole Protect enrollment at once (R06). Separated: one named factor, or every
    Protect factor when none is named. Third-party TOTP goes with a Protect reset once the
    organisation has switched to Protect TOTP (R09).
    """
    if factor_id is not None:
        if policy.mode == "unified":
            raise PolicyViolation("in unified mode the Protect enrollment is reset as a whole")
        factor = get_factor(session, account, factor_id)
        kind = {PROTECT_PUSH: "push", PROTECT_TOTP: "totp",
                THIRD_PARTY_TOTP: "third_party_totp"}.get(factor.kind)
        if kind is None:
            raise PolicyViolation("bypass codes are not reset: delete them or issue new ones")
        return [factor], kind
    targets = protect_factors(session, account)
    if policy.totp_source == "protect":
        targets += [f for f in account_factors(session, account, "active")
                    if f.kind == THIRD_PARTY_TOTP]
    if policy.mode == "unified":
        kind = "unified"
    else:
        kind = "totp" if policy.totp_source == "protect" else "third_party_totp"
    return targets, kind


def admin_reset(
    session: Session, env: Env, account: Account, factor_id: str | None, ctx: RequestContext,
    actor: str,
) -> list[str]:
    """An admin reset retires now and lets the user enroll at their next login (R12).

    That enrollment is protected by the first factor and closes after a short window.
    """
    now = env.clock()
    policy = get_policy(session, now)
    targets, _ = reset_targets(session, policy, account, factor_id)
    for target in targets:
        retire(session, target, now)
    account.must_enroll_until = now + env.seconds(env.settings.enrollment.admin_reset_window)
    ids = sorted(f.id for f in targets)
    audit.record(session, now, actor=actor, action="factor.reset", subject=account.name,
                 outcome="must_enroll", ctx=ctx,
                 detail={"factors": ",".join(ids) or None})
    return ids


def user_reset(
    session: Session, env: Env, account: Account, factor_id: str | None, ctx: RequestContext,
) -> EnrollResult:
    """The user's own reset, after proving possession (R07): a swap, nothing lost yet (R12)."""
    now = env.clock()
    policy = get_policy(session, now)
    targets, kind = reset_targets(session, policy, account, factor_id)
    if account.kind == "admin":
        kind = "totp" if policy.totp_source == "protect" else "third_party_totp"
    result = create_enrollment(session, env, account, kind,
                               retires=tuple(sorted(f.id for f in targets)))
    audit.record(session, now, actor=account.name, action="factor.reset", subject=account.name,
                 outcome="pending", ctx=ctx,
                 detail={"kind": kind, "factors": ",".join(sorted(f.id for f in targets)) or None})
    return result


def issue_bypass(
    session: Session, env: Env, account: Account, count: int, ttl: float, ctx: RequestContext,
    actor: str,
) -> list[str]:
    """Break-glass codes: stored as keyed hashes, single use, expiring; shown only once."""
    if not 1 <= count <= 20:
        raise PolicyViolation("count must be between 1 and 20")
    if ttl <= 0:
        raise PolicyViolation("ttl must be positive")
    now = env.clock()
    length = env.settings.bypass.length
    codes: list[str] = []
    for _ in range(count):
        code = "".join(secrets.choice("0123456789") for _ in range(length))
        factor_id = new_id("f")
        session.add(Factor(
            id=factor_id, account_id=account.id, kind=BYPASS, state="active",
            enrollment_id=factor_id, unified=False, retires="",
            code_hash=env.keyring.mac(code.encode(), f"bypass:{factor_id}"),
            expires_at=now + ttl, created_at=now, confirmed_at=now,
        ))
        codes.append(code)
    session.flush()
    audit.record(session, now, actor=actor, action="bypass.issue", subject=account.name,
                 outcome="issued", ctx=ctx, detail={"count": count, "ttl": int(ttl)})
    return codes
