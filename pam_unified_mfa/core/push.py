"""Push approval: device registration, challenges with number matching, signed answers.

The rules live here rather than in the HTTP service so every adapter gets them: a challenge
shows a number on the login screen that the user must pick on the device (S03); the device's
answer is a JWT signed with the key it registered, valid once, for one login, before expiry;
push requests per user are rate-limited and "deny — not me" can block further pushes (S04).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import AccountRow, new_id
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.events import after_commit
from pam_unified_mfa.core.factors import PROTECT_PUSH, confirm, token_hash
from pam_unified_mfa.core.verification import record_failure
from pam_unified_mfa.errors import AuthenticationFailed, UnifiedMFAError
from pam_unified_mfa.store.changes import announce
from pam_unified_mfa.store.models import (
    Account,
    DeviceMessage,
    EnrollmentToken,
    Factor,
    PushChallenge,
)

log = logging.getLogger("unified_mfa.push")

ANSWER_ALGORITHMS = ["EdDSA", "ES256"]
ANSWER_MAX_AGE = 120  # seconds a signed answer may be old: enough for a slow phone, no more


class PushError(UnifiedMFAError):
    """A device request or answer was refused; the message says why, never with a secret.

    `reason` is one of unknown, replayed, expired, forged, invalid: what a protocol adapter
    needs to pick its status code.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PushView:
    """What the device shows: who, where, when, and the numbers to choose from."""

    id: str
    user: str
    service: str
    client: str
    created_at: float
    expires_at: float
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Registration:
    user: str
    factor_id: str


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _load_key(pem: str) -> Ed25519PublicKey | EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise PushError("device key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey | EllipticCurvePublicKey):
        raise PushError("device key must be Ed25519 or P-256")
    return key


def register_device(
    session: Session, env: Env, token: str, public_key_pem: str, ctx: RequestContext,
) -> Registration:
    """Bind a device key to the pending push factor of a single-use, unexpired token."""
    now = env.clock()
    _load_key(public_key_pem)
    row = session.get(EnrollmentToken, token_hash(token))
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise PushError("enrollment token unknown, used or expired: ask for a new QR code",
                        "expired")
    spent = session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.token_hash == row.token_hash, EnrollmentToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    factor = session.get(Factor, row.factor_id)
    if _rowcount(spent) != 1 or factor is None or factor.state != "pending":
        raise PushError("enrollment token unknown, used or expired: ask for a new QR code",
                        "expired")
    account = session.get(Account, factor.account_id)
    assert account is not None
    factor.device_key = public_key_pem
    confirm(session, env, factor, ctx)
    return Registration(account.name, factor.id)


def start(
    session: Session, env: Env, account: Account | AccountRow, dialogue_id: str,
    ctx: RequestContext,
) -> PushChallenge | str:
    """Create a challenge, or say why not (blocked after "not me", or rate-limited: S04)."""
    now = env.clock()
    settings = env.settings.push
    if account.push_blocked_until is not None and account.push_blocked_until > now:
        audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                     outcome="blocked", ctx=ctx, detail={"reason": "not_me_block"})
        return "Push is blocked for this account after a reported unknown login; enter a passcode"
    window_start = now - env.seconds(settings.rate_window)
    recent = session.scalar(
        select(func.count()).select_from(PushChallenge)
        .where(PushChallenge.account_id == account.id, PushChallenge.created_at > window_start)
    ) or 0
    if recent >= settings.max_per_window:
        audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                     outcome="rate_limited", ctx=ctx, detail={"count": recent})
        return "Too many push requests; wait a few minutes or enter a passcode"
    number = f"{secrets.randbelow(90) + 10}"
    decoys: set[str] = set()
    while len(decoys) < 2:
        candidate = f"{secrets.randbelow(90) + 10}"
        if candidate != number:
            decoys.add(candidate)
    choices = [number, *decoys]
    secrets.SystemRandom().shuffle(choices)
    challenge = PushChallenge(
        id=new_id("p"), account_id=account.id, dialogue_id=dialogue_id, number=number,
        choices=",".join(choices), service=ctx.service, adapter=ctx.adapter, client=ctx.client,
        status="pending", created_at=now, expires_at=now + env.seconds(settings.timeout),
    )
    session.add(challenge)
    audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                 outcome="sent", ctx=ctx)
    announce(session, account.id)
    after_commit(session, lambda: env.events.push_created(account.id, challenge.id))
    return challenge


def pending_for_device(session: Session, env: Env, factor_id: str) -> list[PushView]:
    """Open challenges of the account that owns this registered device."""
    now = env.clock()
    factor = session.get(Factor, factor_id)
    if factor is None or factor.kind != PROTECT_PUSH or factor.state != "active":
        raise PushError("unknown device", "unknown")
    account = session.get(Account, factor.account_id)
    assert account is not None
    rows = session.scalars(
        select(PushChallenge)
        .where(PushChallenge.account_id == factor.account_id,
               PushChallenge.status == "pending", PushChallenge.expires_at > now)
        .order_by(PushChallenge.created_at)
    )
    return [PushView(c.id, account.name, c.service, c.client, c.created_at, c.expires_at,
                     tuple(c.choices.split(","))) for c in rows]


def answer(session: Session, env: Env, signed: str, ctx: RequestContext) -> str | PushError:
    """Verify a device's signed answer and decide the challenge once. Returns the new status.

    The JWT header names the device (`kid` = push factor id); claims: `sub` the challenge id,
    `decision` approve|deny, `number` the number picked (for approve), `not_me` (for deny),
    `iat` recent. A forged, replayed or late answer is audited and *returned* as a PushError,
    for the caller to raise once the audit record is committed.
    """
    now = env.clock()
    try:
        header = jwt.get_unverified_header(signed)
    except jwt.PyJWTError:
        raise PushError("malformed push answer", "invalid") from None
    factor = session.get(Factor, str(header.get("kid", "")))
    if factor is None or factor.kind != PROTECT_PUSH or factor.state != "active" \
            or not factor.device_key:
        raise PushError("unknown device", "unknown")
    account = session.get(Account, factor.account_id)
    assert account is not None
    try:
        claims = jwt.decode(signed, _load_key(factor.device_key), algorithms=ANSWER_ALGORITHMS,
                            options={"require": ["sub", "iat", "decision"], "verify_iat": False})
    except jwt.PyJWTError:
        audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                     outcome="forged", ctx=ctx, detail={"factor": factor.id})
        return PushError("push answer signature is not valid for this device", "forged")
    issued = float(claims["iat"])
    if not now - ANSWER_MAX_AGE <= issued <= now + 30:
        raise PushError("push answer is too old or from the future", "expired")
    challenge = session.get(PushChallenge, str(claims["sub"]))
    if challenge is None or challenge.account_id != factor.account_id:
        raise PushError("unknown push request", "unknown")
    if challenge.status != "pending":
        audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                     outcome="replayed", ctx=ctx, detail={"factor": factor.id})
        return PushError("this push request was already answered", "replayed")
    if challenge.expires_at <= now:
        audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                     outcome="late_answer", ctx=ctx, detail={"factor": factor.id})
        return PushError("this push request has expired", "expired")
    decision = claims["decision"]
    if decision == "approve":
        picked = str(claims.get("number", ""))
        if not hmac.compare_digest(picked.encode(), challenge.number.encode()):
            status = "wrong_number"
        else:
            status = "approved"
    elif decision == "deny":
        status = "denied_not_me" if claims.get("not_me") is True else "denied"
    else:
        raise PushError("decision must be approve or deny")
    decided = session.execute(
        update(PushChallenge)
        .where(PushChallenge.id == challenge.id, PushChallenge.status == "pending")
        .values(status=status, decided_at=now, factor_id=factor.id)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(decided) != 1:
        raise PushError("this push request was already answered", "replayed")
    if status == "wrong_number":
        record_failure(session, env, account, ctx, "wrong_number")
    if status == "denied_not_me":
        account.push_blocked_until = now + env.seconds(env.settings.push.not_me_block)
        log.warning("push denied as not me: user=%s client=%s", account.name,
                    challenge.client or "-")
    audit.record(session, now, actor=account.name, action="mfa.push", subject=account.name,
                 outcome=status, ctx=ctx, detail={"factor": factor.id})
    dialogue_id = challenge.dialogue_id
    announce(session, dialogue_id)
    after_commit(session, lambda: env.events.push_decided(dialogue_id))
    return status


def status_for_dialogue(session: Session, dialogue_id: str) -> PushChallenge | None:
    return session.scalars(
        select(PushChallenge).where(PushChallenge.dialogue_id == dialogue_id)
        .order_by(PushChallenge.created_at.desc()).limit(1)
    ).one_or_none()


def changes_since(session: Session, since: float) -> set[str]:
    """Wait keys that a change since `since` (any node's clock) may concern: the dialogue ids
    of challenges decided, cancelled or expired since then, and the account ids of challenges
    created since then and still pending. The cost follows the logins of that interval, not
    the number of waits; the caller keeps the keys it has."""
    decided = session.scalars(
        select(PushChallenge.dialogue_id).where(PushChallenge.decided_at >= since))
    created = session.scalars(
        select(PushChallenge.account_id).where(PushChallenge.created_at >= since,
                                               PushChallenge.status == "pending"))
    return {*decided, *created}


def _close(session: Session, dialogue_id: str, now: float, status: str) -> None:
    session.execute(
        update(PushChallenge)
        .where(PushChallenge.dialogue_id == dialogue_id, PushChallenge.status == "pending")
        .values(status=status, decided_at=now)
        .execution_options(synchronize_session=False)
    )


def cancel(session: Session, dialogue_id: str, now: float) -> None:
    """A login that finished another way leaves no challenge open on the device."""
    _close(session, dialogue_id, now, "cancelled")


def expire(session: Session, dialogue_id: str, now: float) -> None:
    _close(session, dialogue_id, now, "expired")


DEVICE_AUDIENCE = "unified-mfa-device"
DEVICE_TOKEN_MAX_LIFETIME = 120


def _device(session: Session, device_id: str) -> Factor:
    factor = session.get(Factor, device_id)
    if factor is None or factor.kind != PROTECT_PUSH or factor.state != "active" \
            or not factor.device_key:
        raise PushError("unknown device", "unknown")
    return factor


def authenticate_device(session: Session, env: Env, bearer: str) -> str:
    """The device id of a request signed by a registered device key (short-lived JWT)."""
    now = env.clock()
    try:
        header = jwt.get_unverified_header(bearer)
        factor = _device(session, str(header.get("kid", "")))
        assert factor.device_key is not None
        claims = jwt.decode(bearer, _load_key(factor.device_key), algorithms=ANSWER_ALGORITHMS,
                            audience=DEVICE_AUDIENCE,
                            options={"require": ["iat", "exp"], "verify_exp": False,
                                     "verify_iat": False})
    except (jwt.PyJWTError, PushError):
        raise AuthenticationFailed("device authentication failed") from None
    issued, expires = float(claims["iat"]), float(claims["exp"])
    if not issued - 30 <= now < expires or expires - issued > DEVICE_TOKEN_MAX_LIFETIME:
        raise AuthenticationFailed("device authentication failed")
    return factor.id


def account_of_device(session: Session, device_id: str) -> str:
    return _device(session, device_id).account_id


def set_endpoint(session: Session, env: Env, device_id: str, url: str | None,
                 ctx: RequestContext) -> None:
    """The device's webhook for wake-ups (UnifiedPush pattern); https, or http on loopback."""
    factor = _device(session, device_id)
    if url is not None and not url.startswith(("https://", "http://127.", "http://[::1]",
                                               "http://localhost")):
        raise PushError("a push endpoint must be an https:// URL", "invalid")
    factor.push_endpoint = url
    account = session.get(Account, factor.account_id)
    audit.record(session, env.clock(), actor=account.name if account else "-",
                 action="device.endpoint", subject=account.name if account else "-",
                 outcome="set" if url else "cleared", ctx=ctx, detail={"factor": factor.id})


def endpoints(session: Session, account_id: str) -> list[str]:
    rows = session.scalars(select(Factor.push_endpoint).where(
        Factor.account_id == account_id, Factor.kind == PROTECT_PUSH, Factor.state == "active",
        Factor.push_endpoint.is_not(None)))
    return [url for url in rows if url]


def messages(session: Session, env: Env, device_id: str) -> list[dict[str, str]]:
    """Undelivered messages for a device, decrypted for delivery over its channel (R10)."""
    _device(session, device_id)
    rows = session.scalars(select(DeviceMessage).where(
        DeviceMessage.factor_id == device_id, DeviceMessage.delivered_at.is_(None)))
    return [{"id": m.id, "kind": m.kind, "payload": env.keyring.decrypt(
        m.payload, f"device_message:{m.id}").decode()} for m in rows]


def ack_message(session: Session, env: Env, device_id: str, message_id: str) -> None:
    """Delivered: never sent again, and the secret it carried leaves the store."""
    message = session.get(DeviceMessage, message_id)
    if message is None or message.factor_id != device_id:
        raise PushError("unknown message", "unknown")
    message.delivered_at = message.delivered_at or env.clock()
    message.payload = ""
