"""The one dialogue every adapter drives after the first factor.

`begin` decides what to ask; `answer` takes a code or the word `push`; `poll` follows a pending
push. Each step that continues returns a fresh opaque token and the previous one dies, so the
dialogue is resumable by a stateless adapter (a RADIUS State, a browser form) on any node and
cannot be replayed. Adapters only render `Step`s; every decision is made here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from pam_unified_mfa.core import audit, push
from pam_unified_mfa.core.accounts import (
    AccountRow,
    account_row,
    login_enforcement,
    new_id,
)
from pam_unified_mfa.core.context import TEXT_MAX, RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.factors import (
    BYPASS,
    PROTECT_PUSH,
    TOTP_KINDS,
    FactorRow,
    _resolve_kind,
    create_enrollment,
    is_usable,
    is_working,
    login_factors,
    token_hash,
    unified_in,
)
from pam_unified_mfa.core.login_read import LoginRead, login_read
from pam_unified_mfa.core.orgpolicy import get_policy
from pam_unified_mfa.core.verification import check_code, decoy_check, is_locked, record_success
from pam_unified_mfa.store.models import Account, Dialogue, table_of
from pam_unified_mfa.store.prepared import Prepared, PreparedQuery

TOKEN_BYTES = 24  # 32 characters: unguessable, and fits a RADIUS State attribute (<= 253 octets)

PROMPT_CODE = "Enter a passcode"
PROMPT_CODE_OR_PUSH = "Enter a passcode, or 'push' (or nothing) for a push approval"
PROMPT_ENROLL = ("Scan this QR code with the Protect app or any authenticator app, "
                 "then enter the code it shows")
HINT_UNIFIED = ("Your organisation now uses one Protect enrollment for push and codes: "
                "scan the new QR code in your security settings")
MSG_WRONG = "Invalid passcode, try again"
MSG_DENIED = "Access denied"
MSG_LOCKED = "Too many failed attempts; try again later"
MSG_EXPIRED = "This login attempt has expired; start again"
MSG_NO_FACTOR = "No MFA method is enrolled for this account; contact your administrator"
MSG_UNAVAILABLE = "The MFA service is unavailable"
DECOY_METHODS = ("code", "push")


class Outcome(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    PROMPT = "prompt"
    ENROLL = "enroll"
    PUSH_PENDING = "push_pending"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Step:
    """What the adapter shows or does next; `token` resumes the dialogue where it continues.

    `UNAVAILABLE` carries the core's fail-mode verdict in `allowed` (S07), so no adapter has to
    decide it.
    """

    outcome: Outcome
    message: str
    token: str | None = None
    methods: tuple[str, ...] = ()
    push_number: str | None = None
    deadline: float | None = None
    enroll_uri: str | None = None
    suggest_unified: bool = False
    allowed: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    wait_key: str | None = None

    @property
    def finished(self) -> bool:
        return self.outcome in (Outcome.ACCEPT, Outcome.REJECT, Outcome.UNAVAILABLE)

    @property
    def granted(self) -> bool:
        return self.outcome is Outcome.ACCEPT or (
            self.outcome is Outcome.UNAVAILABLE and self.allowed)


def _methods(factors: list[FactorRow], now: float) -> tuple[str, ...]:
    usable = [f for f in factors if is_usable(f, now)]
    methods: list[str] = []
    if any(f.kind in TOTP_KINDS or f.kind == BYPASS for f in usable):
        methods.append("code")
    if any(f.kind == PROTECT_PUSH and f.state == "active" and f.device_key for f in usable):
        methods.append("push")
    return tuple(methods)


def _has_working(factors: list[FactorRow], now: float) -> bool:
    """Confirmed push/TOTP only: a user who may enroll gets a fresh QR at every login until
    one is confirmed, even if an earlier one was shown and abandoned."""
    return any(is_working(f, now) for f in factors)


def _prompt_text(methods: tuple[str, ...]) -> str:
    return PROMPT_CODE_OR_PUSH if "push" in methods else PROMPT_CODE


class LiveDialogue(NamedTuple):
    """A dialogue row as claimed (store/prepared.py says why a plain row)."""

    id: str
    account_id: str | None
    username: str
    state: str
    attempts: int
    enroll_factor_id: str | None
    push_number: str | None
    push_deadline: float | None
    expires_at: float


# Every login runs these: prepared once (store/prepared.py). A dialogue is read as a row and
# changed by explicit UPDATEs, never through the ORM's unit of work.
_TABLE = table_of(Dialogue)
_LIVE_COLUMNS = [_TABLE.c[name] for name in LiveDialogue._fields]
_LIVE_WHERE = (_TABLE.c.token_hash == bindparam("b_token_hash"),
               _TABLE.c.adapter == bindparam("b_adapter"),
               _TABLE.c.client == bindparam("b_client"), _TABLE.c.expires_at > bindparam("b_now"))
_LIVE = PreparedQuery(select(*_LIVE_COLUMNS).where(*_LIVE_WHERE), LiveDialogue._make)
_INSERT_COLUMNS = ("id", "token_hash", "account_id", "username", "adapter", "client", "state",
                   "attempts", "enroll_factor_id", "expires_at", "created_at")
_INSERT = Prepared(insert(_TABLE).values({name: bindparam(name) for name in _INSERT_COLUMNS}))
_BY_ID = _TABLE.c.id == bindparam("b_id")
_DELETE = Prepared(delete(_TABLE).where(_BY_ID))
_ROTATE = PreparedQuery(update(_TABLE).where(*_LIVE_WHERE)
                        .values(token_hash=bindparam("b_new_hash"))
                        .returning(*_LIVE_COLUMNS), LiveDialogue._make)
_COUNT_ATTEMPT = Prepared(update(_TABLE).where(_BY_ID).values(attempts=_TABLE.c.attempts + 1))
_PUSH_SENT = Prepared(update(_TABLE).where(_BY_ID).values(
    state="push", push_number=bindparam("b_number"), push_deadline=bindparam("b_deadline"),
    expires_at=bindparam("b_expires")))


def _new_dialogue(
    session: Session, env: Env, username: str, account: AccountRow | None, ctx: RequestContext,
    state: str, enroll_factor: str | None = None, attempts: int = 0,
) -> str:
    now = env.clock()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    _INSERT.run(session, {
        "id": new_id(), "token_hash": token_hash(token),
        # A name past TEXT_MAX is no user's (check_name): kept cut, it still matches no one.
        "account_id": account.id if account else None, "username": username[:TEXT_MAX],
        "adapter": ctx.adapter, "client": ctx.client, "state": state, "attempts": attempts,
        "enroll_factor_id": enroll_factor,
        "expires_at": now + env.seconds(env.settings.dialogue.ttl), "created_at": now,
    })
    return token


def _finish(session: Session, env: Env, dialogue: LiveDialogue | None, step: Step) -> Step:
    """End the dialogue; a push still open on the device is withdrawn."""
    if dialogue is not None:
        if dialogue.state == "push":
            push.cancel(session, dialogue.id, env.clock())
        _DELETE.run(session, {"b_id": dialogue.id})
    return step


_NOBODY = AccountRow(id="", kind="user", name="", enforcement=None, must_enroll_until=None,
                     locked_until=None, push_blocked_until=None, failures=0, lock_count=0)
"""Who the decoy reads are made for: an account that matches no row."""


def _decoy_reads(session: Session, read: LoginRead, now: float,
                 directory_groups: tuple[str, ...]) -> None:
    """What `begin` does for a known user after its first read (directory groups, methods),
    done for an account that matches no row: an unknown name then costs the store, and the
    login, what a known one costs, so the time `begin` takes does not tell them apart (S06)."""
    login_enforcement(session, _NOBODY, read.policy, None, directory_groups)
    _methods(read.factors, now)
    if read.policy.mode == "unified":
        unified_in(read.factors)


@dataclass(frozen=True)
class _Asking:
    """`begin` will ask for a code (or a push): whom, with the factors it read and what to say.
    `account` None is an unknown name, asked like a user with both methods (S06)."""

    account: AccountRow | None
    factors: list[FactorRow]
    methods: tuple[str, ...]
    suggest: bool = False

    def prompt(self, token: str) -> Step:
        return Step(Outcome.PROMPT, _prompt_text(self.methods), token, self.methods,
                    suggest_unified=self.suggest,
                    extra={"hint": HINT_UNIFIED} if self.suggest else {})


def _opening(session: Session, env: Env, username: str, ctx: RequestContext, kind: str,
             directory_groups: tuple[str, ...]) -> Step | _Asking:
    """What `begin` decides before any dialogue exists: a finished step (exempt, locked, no
    factor, an enrollment), or whom to ask for a code."""
    now = env.clock()
    read = login_read(session, username, kind, now)
    account, policy = read.account, read.policy
    if account is None:
        # Indistinguishable from a user with both methods: every answer will be refused (S06).
        _decoy_reads(session, read, now, directory_groups)
        return _Asking(None, [], DECOY_METHODS)
    enforcement = login_enforcement(session, account, policy, read.group_enforcement,
                                    directory_groups)
    if enforcement == "exempt":
        audit.record(session, now, actor=account.name, action="mfa.login", subject=account.name,
                     outcome="accepted", ctx=ctx, detail={"reason": "exempt"})
        return Step(Outcome.ACCEPT, "MFA not required for this account")
    if is_locked(account, now):
        audit.record(session, now, actor=account.name, action="mfa.login", subject=account.name,
                     outcome="rejected", ctx=ctx, detail={"reason": "locked"})
        return Step(Outcome.REJECT, MSG_LOCKED)
    factors = read.factors
    methods = _methods(factors, now)
    may_enroll = enforcement == "enroll_at_login" or (
        account.must_enroll_until is not None and account.must_enroll_until > now)
    # Bypass codes alone do not make an enrollment: the user still gets the QR, and the
    # enrollment step accepts a bypass code too.
    if methods and not (may_enroll and not _has_working(factors, now)):
        suggest = (policy.mode == "unified" and account.kind == "user"
                   and not unified_in(factors))
        return _Asking(account, factors, methods, suggest)
    if not may_enroll:
        audit.record(session, now, actor=account.name, action="mfa.login", subject=account.name,
                     outcome="rejected", ctx=ctx, detail={"reason": "no_factor"})
        return Step(Outcome.REJECT, MSG_NO_FACTOR)
    # Rare and writing: the ORM's objects, as every enrollment uses them.
    owner = session.get(Account, account.id)
    assert owner is not None
    enrollment = create_enrollment(
        session, env, owner, _resolve_kind(get_policy(session, now), owner, None),
        ttl=env.seconds(env.settings.dialogue.ttl),
    )
    token = _new_dialogue(session, env, username, account, ctx, "enroll",
                          enroll_factor=enrollment.factor_ids[-1])
    audit.record(session, now, actor=account.name, action="factor.enroll", subject=account.name,
                 outcome="pending", ctx=ctx, detail={"kind": enrollment.kind, "reason": "at_login"})
    return Step(Outcome.ENROLL, PROMPT_ENROLL, token, ("code",), enroll_uri=enrollment.uri)


def begin(session: Session, env: Env, username: str, ctx: RequestContext,
          kind: str = "user", directory_groups: tuple[str, ...] = ()) -> Step:
    """Start MFA for someone whose first factor has just succeeded.

    `directory_groups` are the groups the first factor's directory found for the user; they
    count like stored groups for enforcement, for accounts the store knows only. An unknown
    name gets the decoy even in an exempt directory group: directories mostly match names
    without case, the store exactly, so `ALICE` must not escape alice's own `required`.
    `kind="admin"` names an admin: a linked admin authenticates with the linked user's
    factors and enforcement, any other with their own TOTP-only account (R14).
    """
    opened = _opening(session, env, username, ctx, kind, directory_groups)
    if isinstance(opened, Step):
        return opened
    return opened.prompt(_new_dialogue(session, env, username, opened.account, ctx, "ask"))


def check_once(session: Session, env: Env, username: str, code: str, ctx: RequestContext,
               directory_groups: tuple[str, ...] = ()) -> Step:
    """`begin`, then `answer` with a code, as one decision: what `begin` and `answer` would
    return, with a dialogue stored only when the code is wrong and the user may try again
    (then its token answers the next try). An accepted code, the common case, writes no
    dialogue at all. A reply that asks for a push is not a code: use `begin` and `answer`.
    """
    opened = _opening(session, env, username, ctx, "user", directory_groups)
    if isinstance(opened, Step):
        return opened
    if opened.account is None:
        decoy_check(env, code)
        return _first_failure(session, env, username, opened, ctx)
    result = check_code(session, env, opened.account, code, ctx, factors=opened.factors)
    if result.accepted:
        return Step(Outcome.ACCEPT, "Access granted")
    if result.locked:
        return Step(Outcome.REJECT, MSG_LOCKED)
    return _first_failure(session, env, username, opened, ctx)


def _first_failure(session: Session, env: Env, username: str, opened: _Asking,
                   ctx: RequestContext) -> Step:
    """As `_after_failure` for a dialogue that had no attempt yet."""
    if env.settings.dialogue.max_attempts <= 1:
        return Step(Outcome.REJECT, MSG_DENIED)
    token = _new_dialogue(session, env, username, opened.account, ctx, "ask", attempts=1)
    return _retry(token, opened.methods)


def _claim(session: Session, env: Env, token: str, ctx: RequestContext,
           rotate: bool) -> tuple[LiveDialogue | None, str | None]:
    """Find the live dialogue for a token and, when answering, swap in a new single-use token.

    Answering claims the dialogue with one conditional UPDATE … RETURNING: of two answers
    racing with the same token only one matches, and a login pays one statement, not two.
    """
    live = {"b_token_hash": token_hash(token), "b_adapter": ctx.adapter,
            "b_client": ctx.client, "b_now": env.clock()}
    if not rotate:
        dialogue = _LIVE.first(session, live)
        return (dialogue, token) if dialogue is not None else (None, None)
    new_token = secrets.token_urlsafe(TOKEN_BYTES)
    claimed = _ROTATE.first(session, {**live, "b_new_hash": token_hash(new_token)})
    return (claimed, new_token) if claimed is not None else (None, None)


def asks_for_push(reply: str) -> bool:
    """Nothing, or the word `push`: the user asks for a push instead of typing a code."""
    return reply.strip().lower() in ("", "push")


def _same_user(dialogue: LiveDialogue, user: str | None) -> bool:
    return user is None or secrets.compare_digest(user.encode(), dialogue.username.encode())


def answer(session: Session, env: Env, token: str, reply: str, ctx: RequestContext,
           user: str | None = None) -> Step:
    """Take the user's reply: a code, a bypass code, or `push` / nothing to ask for a push.

    `user`, when the adapter's request names one (a RADIUS User-Name), must be the user the
    dialogue began for: a token lifted from another user's login is spent, and refused.
    """
    dialogue, new_token = _claim(session, env, token, ctx, rotate=True)
    if dialogue is None or new_token is None:
        return Step(Outcome.REJECT, MSG_EXPIRED)
    if not _same_user(dialogue, user):
        return _finish(session, env, dialogue, Step(Outcome.REJECT, MSG_EXPIRED))
    account = account_row(session, dialogue.account_id) if dialogue.account_id else None
    wants_push = asks_for_push(reply)
    if account is None:
        # A decoy push that nobody can approve keeps unknown users looking like real ones (S06).
        if wants_push and dialogue.state == "ask":
            return start_push(session, env, dialogue, None, new_token, ctx)
        decoy_check(env, reply)
        return _after_failure(session, env, dialogue, new_token, DECOY_METHODS)
    factors = login_factors(session, account.id)
    if wants_push and dialogue.state == "ask" and "push" in _methods(factors, env.clock()):
        return start_push(session, env, dialogue, account, new_token, ctx)
    result = check_code(session, env, account, reply, ctx, factors=factors)
    if result.accepted:
        return _finish(session, env, dialogue, Step(Outcome.ACCEPT, "Access granted"))
    if result.locked:
        return _finish(session, env, dialogue, Step(Outcome.REJECT, MSG_LOCKED))
    methods = _methods(factors, env.clock())
    return _after_failure(session, env, dialogue, new_token, methods or ("code",))


def _after_failure(session: Session, env: Env, dialogue: LiveDialogue, token: str,
                   methods: tuple[str, ...]) -> Step:
    if dialogue.attempts + 1 >= env.settings.dialogue.max_attempts:
        return _finish(session, env, dialogue, Step(Outcome.REJECT, MSG_DENIED))
    _COUNT_ATTEMPT.run(session, {"b_id": dialogue.id})
    return _retry(token, ("code",) if dialogue.state == "enroll" else methods)


def _retry(token: str, methods: tuple[str, ...]) -> Step:
    """The prompt after a wrong answer, with the dialogue's next token."""
    return Step(Outcome.PROMPT, f"{MSG_WRONG}. {_prompt_text(methods)}", token, methods)


def start_push(session: Session, env: Env, dialogue: LiveDialogue, account: AccountRow | None,
               token: str, ctx: RequestContext) -> Step:
    """Send a push and wait: the login screen shows the number to pick on the device (S03).

    A refused push (rate limit or "not me" block, S04) leaves the dialogue asking for a code.
    An unknown user gets a decoy push that nobody can approve (S06).
    """
    now = env.clock()
    if account is not None:
        challenge = push.start(session, env, account, dialogue.id, ctx)
        if isinstance(challenge, str):
            return Step(Outcome.PROMPT, challenge, token, ("code",))
        number, deadline = challenge.number, challenge.expires_at
    else:
        number = f"{secrets.randbelow(90) + 10}"
        deadline = now + env.seconds(env.settings.push.timeout)
    _PUSH_SENT.run(session, {"b_id": dialogue.id, "b_number": number, "b_deadline": deadline,
                             "b_expires": max(dialogue.expires_at, deadline)})
    return Step(Outcome.PUSH_PENDING,
                f"Approve the push on your device by choosing the number {number}",
                token, ("code",), push_number=number, deadline=deadline, wait_key=dialogue.id)


_PUSH_ENDINGS = {
    "denied": "The push was denied",
    "denied_not_me": "The push was denied",
    "wrong_number": "The wrong number was chosen on the device",
}


def poll(session: Session, env: Env, token: str, ctx: RequestContext,
         user: str | None = None) -> Step:
    """Follow a pending push without spending the token; it ends at the decision or deadline.

    `user`, as for `answer`: a token of another user's login ends that login, refused.
    """
    dialogue, _ = _claim(session, env, token, ctx, rotate=False)
    if dialogue is None:
        return Step(Outcome.REJECT, MSG_EXPIRED)
    if not _same_user(dialogue, user):
        return _finish(session, env, dialogue, Step(Outcome.REJECT, MSG_EXPIRED))
    now = env.clock()
    if dialogue.state != "push" or dialogue.push_deadline is None:
        return Step(Outcome.PROMPT, _prompt_text(("code",)), token, ("code",))
    challenge = push.status_for_dialogue(session, dialogue.id) if dialogue.account_id else None
    if challenge is not None and challenge.status == "approved":
        account = account_row(session, dialogue.account_id) if dialogue.account_id else None
        if account is not None:
            record_success(session, account)
        audit.record(session, now, actor=dialogue.username, action="mfa.login",
                     subject=dialogue.username, outcome="accepted", ctx=ctx,
                     detail={"method": "push", "factor": challenge.factor_id})
        return _finish(session, env, dialogue, Step(Outcome.ACCEPT, "Access granted"))
    if challenge is not None and challenge.status in _PUSH_ENDINGS:
        ending = Step(Outcome.REJECT, _PUSH_ENDINGS[challenge.status])
        return _finish(session, env, dialogue, ending)
    if dialogue.push_deadline <= now:
        if dialogue.account_id:
            push.expire(session, dialogue.id, now)
            audit.record(session, now, actor=dialogue.username, action="mfa.push",
                         subject=dialogue.username, outcome="expired", ctx=ctx)
        return _finish(session, env, dialogue, Step(Outcome.REJECT, "The push request expired"))
    return Step(Outcome.PUSH_PENDING,
                f"Waiting for approval: choose the number {dialogue.push_number} on your device",
                token, ("code",), push_number=dialogue.push_number,
                deadline=dialogue.push_deadline, wait_key=dialogue.id)
