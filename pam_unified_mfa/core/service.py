"""`MFA`: the core's whole public surface, one transaction per call.

Adapters, the CLI, the HTTP service and the portals all call these methods and nothing below
them, so every surface applies the same rules and sees the same state (R15).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from pam_unified_mfa.core import (
    accounts,
    audit,
    credentials,
    dialogue,
    factors,
    housekeeping,
    passwords,
    push,
)
from pam_unified_mfa.core import policy as org_policy
from pam_unified_mfa.core.context import CLI, RequestContext
from pam_unified_mfa.core.dialogue import MSG_UNAVAILABLE, Outcome, Step
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.events import Events, NoEvents
from pam_unified_mfa.core.orgpolicy import get_policy
from pam_unified_mfa.core.verification import check_code, is_locked
from pam_unified_mfa.crypto import Keyring
from pam_unified_mfa.errors import DecryptError, InvalidCode, StoreUnavailable
from pam_unified_mfa.settings import KEY_FILE, Settings, default_home, load_settings, store_url
from pam_unified_mfa.store import Store
from pam_unified_mfa.store.models import Account, DeviceMessage, Factor

log = logging.getLogger("unified_mfa.core")


@dataclass(frozen=True)
class UserView:
    """A user's MFA state as every surface shows it (R15): never a secret."""

    name: str
    kind: str
    enforcement: str
    groups: tuple[str, ...]
    locked: bool
    must_enroll: bool
    on_unified: bool
    suggest_unified: bool
    factors: tuple[factors.FactorView, ...]


class MFA:
    """The one core. Construct with `MFA.open(home)`; close with `close()`."""

    def __init__(self, env: Env, store: Store, home: Path | None = None) -> None:
        self.env = env
        self.store = store
        self.home = home
        """The home it was opened from: relative paths in the settings are inside it."""
        self._verified_secrets = credentials.VerifiedSecrets()

    @classmethod
    def open(
        cls, home: Path | None = None, *, store: str | None = None,
        clock: Callable[[], float] = time.time, migrate: bool = True,
        events: Events | None = None,
    ) -> MFA:
        home = home or default_home()
        settings = load_settings(home)
        keyring = Keyring.load(home / KEY_FILE)
        env = Env(settings, keyring, clock, events or NoEvents())
        instance = cls(env, Store(store_url(home, settings, store)), home)
        if migrate:
            instance.store.migrate()
        return instance

    def close(self) -> None:
        self.store.dispose()

    @property
    def settings(self) -> Settings:
        return self.env.settings

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self.store.session() as session:
            yield session

    # -- the dialogue (what adapters drive) -------------------------------------------------

    def _guarded(self, ctx: RequestContext, run: Callable[[Session], Step]) -> Step:
        """Run one dialogue step; an unreachable store yields the fail-mode verdict (S07)."""
        try:
            with self._tx() as session:
                return run(session)
        except DecryptError:
            # A secret that does not decrypt is a broken key file or tampering, not an outage:
            # never a reason to let anyone in, whatever the fail mode.
            log.error("a stored secret could not be decrypted: adapter=%s client=%s",
                      ctx.adapter, ctx.client or "-")
            return Step(Outcome.UNAVAILABLE, MSG_UNAVAILABLE, allowed=False)
        except StoreUnavailable:
            mode = ctx.fail_mode or self.settings.fail_mode
            allowed = mode == "safe"
            log.warning("store unavailable: adapter=%s client=%s fail_mode=%s verdict=%s",
                        ctx.adapter, ctx.client or "-", mode, "allow" if allowed else "deny")
            return Step(Outcome.UNAVAILABLE, MSG_UNAVAILABLE, allowed=allowed)

    def begin(self, username: str, ctx: RequestContext, kind: str = "user", *,
              directory_groups: tuple[str, ...] = ()) -> Step:
        """Start MFA after the first factor; `directory_groups`, the groups the first factor's
        directory found for the user, count like stored groups for enforcement."""
        return self._guarded(ctx, lambda s: dialogue.begin(s, self.env, username, ctx, kind,
                                                           directory_groups))

    def answer(self, token: str, reply: str, ctx: RequestContext,
               user: str | None = None) -> Step:
        return self._guarded(ctx, lambda s: dialogue.answer(s, self.env, token, reply, ctx, user))

    def poll(self, token: str, ctx: RequestContext, user: str | None = None) -> Step:
        return self._guarded(ctx, lambda s: dialogue.poll(s, self.env, token, ctx, user))

    def authenticate_code(self, username: str, code: str, ctx: RequestContext, *,
                          directory_groups: tuple[str, ...] = ()) -> Step:
        """One complete check of a code, as an adapter that got it with the password would:
        what `begin` and then `answer` would return, in one transaction (`check_once`). When
        `begin` asks for anything but a code (an enrollment, a refusal), that step is returned
        and the code is not used; an empty reply or `push` asks for a push, as in `answer`."""
        def begin_and_answer(s: Session) -> Step:
            step = dialogue.begin(s, self.env, username, ctx, directory_groups=directory_groups)
            if step.outcome is not Outcome.PROMPT or step.token is None:
                return step
            return dialogue.answer(s, self.env, step.token, code, ctx)

        if dialogue.asks_for_push(code):
            return self._guarded(ctx, begin_and_answer)
        return self._guarded(ctx, lambda s: dialogue.check_once(
            s, self.env, username, code, ctx, directory_groups))

    # -- users, groups, admins ----------------------------------------------------------------

    def add_user(self, name: str, groups: tuple[str, ...] = (), actor: str = "cli",
                 ctx: RequestContext = CLI) -> UserView:
        with self._tx() as s:
            now = self.env.clock()
            account = accounts.add_user(s, name, now, groups)
            audit.record(s, now, actor=actor, action="user.add", subject=name, outcome="created",
                         ctx=ctx)
            return self._view(s, account)

    def list_users(self) -> list[UserView]:
        with self._tx() as s:
            return [self._view(s, a) for a in accounts.list_users(s)]

    def show_user(self, name: str) -> UserView:
        with self._tx() as s:
            return self._view(s, accounts.get_user(s, name))

    def show_admin_account(self, admin_name: str) -> UserView:
        with self._tx() as s:
            return self._view(s, accounts.admin_account(s, accounts.find_admin(s, admin_name)))

    def _view(self, s: Session, account: Account) -> UserView:
        now = self.env.clock()
        org = get_policy(s, now)
        unified = factors.on_unified(s, account)
        return UserView(
            name=account.name, kind=account.kind,
            enforcement=accounts.effective_enforcement(s, account, org),
            groups=tuple(accounts.group_names(s, account)),
            locked=is_locked(account, now),
            must_enroll=account.must_enroll_until is not None and account.must_enroll_until > now,
            on_unified=unified,
            suggest_unified=org.mode == "unified" and account.kind == "user" and not unified,
            factors=tuple(factors.visible_factors(s, account, now)),
        )

    def set_enforcement(self, name: str, enforcement: str | None, actor: str = "cli",
                        ctx: RequestContext = CLI, group: bool = False) -> None:
        """Per user or per group: required, enroll_at_login, exempt; None inherits."""
        with self._tx() as s:
            accounts.check_enforcement(enforcement)
            if group:
                accounts.get_or_create_group(s, name).enforcement = enforcement
            else:
                accounts.get_user(s, name).enforcement = enforcement
            audit.record(s, self.env.clock(), actor=actor, action="enforcement.set",
                         subject=name, outcome="changed", ctx=ctx,
                         detail={"enforcement": enforcement or "inherit", "group": group})

    def join_group(self, name: str, group: str, actor: str = "cli",
                   ctx: RequestContext = CLI) -> None:
        with self._tx() as s:
            accounts.join_group(s, accounts.get_user(s, name), group)
            audit.record(s, self.env.clock(), actor=actor, action="group.join",
                         subject=f"{name} in {group}", outcome="joined", ctx=ctx)

    def add_admin(self, name: str, roles: tuple[str, ...] = (), linked_user: str | None = None,
                  actor: str = "cli", ctx: RequestContext = CLI) -> accounts.AdminView:
        with self._tx() as s:
            now = self.env.clock()
            admin = accounts.add_admin(s, name, now, roles, linked_user)
            audit.record(s, now, actor=actor, action="admin.add", subject=name,
                         outcome="created", ctx=ctx,
                         detail={"role": ",".join(accounts.admin_roles(admin)),
                                 "linked": linked_user is not None})
            return accounts.view_admin(s, admin)

    def list_admins(self) -> list[accounts.AdminView]:
        with self._tx() as s:
            return [accounts.view_admin(s, a) for a in accounts.list_admins(s)]

    def show_admin(self, name: str) -> accounts.AdminView:
        with self._tx() as s:
            return accounts.view_admin(s, accounts.find_admin(s, name))

    # -- local passwords (the portals' first factor on sites without a directory) -------------

    def set_password(self, kind: str, name: str, password: str, actor: str = "cli",
                     ctx: RequestContext = CLI) -> None:
        """`kind` "user" or "admin"; stored as an argon2 hash, audited without the text."""
        with self._tx() as s:
            passwords.set_password(s, self.env, kind, name, password, ctx, actor)

    def check_password(self, kind: str, name: str, password: str, ctx: RequestContext) -> bool:
        """The same answer and cost for an unknown name and a wrong password (S06); a wrong
        password of a known account counts toward its throttle (S02)."""
        with self._tx() as s:
            return passwords.check_password(s, self.env, kind, name, password, ctx)

    # -- factors --------------------------------------------------------------------------------

    def _account(self, s: Session, name: str, admin: bool) -> Account:
        if admin:
            return accounts.admin_account(s, accounts.find_admin(s, name))
        return accounts.get_user(s, name)

    def enroll(self, name: str, kind: str | None = None, *, admin: bool = False,
               actor: str = "cli", ctx: RequestContext = CLI) -> factors.EnrollResult:
        with self._tx() as s:
            return factors.enroll(s, self.env, self._account(s, name, admin), kind, ctx, actor)

    def enroll_options(self, name: str, *, admin: bool = False) -> tuple[str, ...]:
        """The kinds `enroll` accepts for this account now: what a portal may offer."""
        with self._tx() as s:
            return factors.enroll_options(s, self.env, self._account(s, name, admin))

    def confirm_enrollment(self, name: str, code: str, *, admin: bool = False,
                           ctx: RequestContext = CLI) -> bool:
        """Prove a pending enrollment with its first code, outside a login (R12's swap takes
        effect here). Only pending factors are tried; a wrong code counts (S01, S02)."""
        with self._tx() as s:
            account = self._account(s, name, admin)
            return check_code(s, self.env, account, code, ctx, pending=True).accepted

    def delete_factor(self, name: str, factor_id: str, *, actor: str = "cli",
                      ctx: RequestContext = CLI) -> list[str]:
        with self._tx() as s:
            return factors.delete_factor(s, self.env, accounts.get_user(s, name), factor_id,
                                         ctx, actor)

    def reset_by_admin(self, name: str, admin_name: str, factor_id: str | None = None, *,
                       admin: bool = False, ctx: RequestContext = CLI) -> list[str]:
        """`admin=True` resets the own account of an admin not linked to a user."""
        with self._tx() as s:
            accounts.find_admin(s, admin_name)
            return factors.admin_reset(s, self.env, self._account(s, name, admin), factor_id,
                                       ctx, admin_name)

    def reset_by_user(self, name: str, code: str, factor_id: str | None = None, *,
                      admin: bool = False, ctx: RequestContext = CLI) -> factors.EnrollResult:
        """R07: a current Protect TOTP code proves possession; then the swap starts (R12).

        A wrong code counts toward the throttle (S02) and is committed as such, so the error is
        raised only after the transaction that recorded it.
        """
        with self._tx() as s:
            account = self._account(s, name, admin)
            proof = check_code(s, self.env, account, code, ctx, only=(factors.PROTECT_TOTP,))
            if proof.accepted:
                return factors.user_reset(s, self.env, account, factor_id, ctx)
        raise InvalidCode("reset refused: a current code from the Protect authenticator is "
                          "required (R07)")

    def issue_bypass(self, name: str, admin_name: str, count: int = 1, ttl: float | None = None,
                     ctx: RequestContext = CLI) -> list[str]:
        with self._tx() as s:
            accounts.find_admin(s, admin_name)
            seconds = ttl if ttl is not None else self.env.seconds(self.settings.bypass.ttl)
            return factors.issue_bypass(s, self.env, accounts.get_user(s, name), count, seconds,
                                        ctx, admin_name)

    # -- push devices ---------------------------------------------------------------------------

    def register_device(self, token: str, public_key_pem: str,
                        ctx: RequestContext = CLI) -> push.Registration:
        """The Protect app's scan: binds its key to the enrollment's push factor (R05)."""
        with self._tx() as s:
            return push.register_device(s, self.env, token, public_key_pem, ctx)

    def authenticate_device(self, bearer: str) -> str:
        with self._tx() as s:
            return push.authenticate_device(s, self.env, bearer)

    def account_of_device(self, device_id: str) -> str:
        with self._tx() as s:
            return push.account_of_device(s, device_id)

    def pending_pushes(self, device_id: str) -> list[push.PushView]:
        with self._tx() as s:
            return push.pending_for_device(s, self.env, device_id)

    def answer_push(self, signed: str, ctx: RequestContext = CLI) -> str:
        """A device's signed approve/deny (S03); returns the challenge's new status."""
        with self._tx() as s:
            result = push.answer(s, self.env, signed, ctx)
        if isinstance(result, push.PushError):
            raise result  # after the commit: the refusal's audit record is kept
        return result

    def record_backup(self, action: str, rows: int, key_id: str) -> None:
        """The audit trail says when the whole store was copied out (`export`) or loaded
        (`import`): how many rows under which key, never what they hold."""
        with self._tx() as s:
            audit.record(s, self.env.clock(), actor="cli", action=f"store.{action}",
                         subject="store", outcome="done", ctx=CLI,
                         detail={"count": rows, "key_id": key_id})

    def purge_expired(self) -> dict[str, int]:
        """Delete expired dialogues, push requests, tokens, sessions (core/housekeeping.py)."""
        with self._tx() as s:
            return housekeeping.purge(s, self.env)

    def push_changes_since(self, since: float) -> set[str]:
        """Dialogue and account ids whose pushes changed since `since`, on any node."""
        with self.store.reading() as s:
            return push.changes_since(s, since)

    def device_messages(self, device_id: str) -> list[dict[str, str]]:
        """Undelivered messages for a push device (the TOTP a merge gave it, R10), decrypted."""
        with self._tx() as s:
            return push.messages(s, self.env, device_id)

    def ack_device_message(self, device_id: str, message_id: str) -> None:
        with self._tx() as s:
            push.ack_message(s, self.env, device_id, message_id)

    def set_push_endpoint(self, device_id: str, url: str | None,
                          ctx: RequestContext = CLI) -> None:
        with self._tx() as s:
            push.set_endpoint(s, self.env, device_id, url, ctx)

    def push_endpoints(self, account_id: str) -> list[str]:
        with self._tx() as s:
            return push.endpoints(s, account_id)

    # -- API clients and admin tokens ---------------------------------------------------------

    def add_client(self, name: str, public_key_pem: str | None = None, actor: str = "cli",
                   ctx: RequestContext = CLI) -> str | None:
        with self._tx() as s:
            return credentials.add_client(s, self.env, name, public_key_pem, ctx, actor)

    def authenticate_client(self, authorization: str) -> str:
        """The API client's name; a Basic secret verified moments ago is not checked again
        (`credentials.VerifiedSecrets`)."""
        now = self.env.clock()
        name = self._verified_secrets.get(authorization, now)
        if name is None:
            with self._tx() as s:
                name = credentials.authenticate_client(s, self.env, authorization)
            self._verified_secrets.remember(authorization, name, now)
        return name

    def issue_admin_token(self, admin_name: str, ttl_seconds: float | None = None,
                          actor: str = "cli", ctx: RequestContext = CLI) -> str:
        ttl = ttl_seconds or self.env.seconds(self.settings.service.admin_token_ttl)
        with self._tx() as s:
            return credentials.issue_admin_token(s, self.env, admin_name, ttl, ctx, actor)

    def authenticate_admin(self, bearer: str) -> str:
        with self._tx() as s:
            return credentials.authenticate_admin(s, self.env, bearer)

    # -- organisation policy ------------------------------------------------------------------

    def policy(self) -> org_policy.PolicyView:
        with self._tx() as s:
            return org_policy.show(s, self.env)

    def admin_may(self, admin_name: str, action: str) -> bool:
        """Whether the admin holds the role `action` needs (R02); `preview` checks again."""
        with self._tx() as s:
            return org_policy.allowed(s, admin_name, action)

    def preview(self, admin_name: str, action: str, argument: str = "",
                ctx: RequestContext = CLI) -> org_policy.Preview:
        with self._tx() as s:
            return org_policy.preview(s, self.env, admin_name, action, argument, ctx)

    def confirm(self, admin_name: str, confirmation: str,
                ctx: RequestContext = CLI) -> dict[str, int]:
        with self._tx() as s:
            return org_policy.apply(s, self.env, admin_name, confirmation, ctx)

    def set_method(self, admin_name: str, method: str, enabled: bool,
                   ctx: RequestContext = CLI) -> org_policy.PolicyView:
        with self._tx() as s:
            return org_policy.set_method(s, self.env, admin_name, method, enabled, ctx)

    def set_default_enforcement(self, admin_name: str, enforcement: str,
                                ctx: RequestContext = CLI) -> org_policy.PolicyView:
        with self._tx() as s:
            return org_policy.set_default_enforcement(s, self.env, admin_name, enforcement, ctx)

    # -- audit and keys -----------------------------------------------------------------------

    def audit_tail(self, count: int = 20) -> list[audit.AuditEntry]:
        with self._tx() as s:
            return audit.tail(s, count)

    def rotate_key(self, actor: str = "cli", ctx: RequestContext = CLI) -> tuple[str, int]:
        """Add a new active key and re-encrypt every stored secret under it."""
        keyring = self.env.keyring
        new_kid = keyring.rotate()
        count = 0
        with self._tx() as s:
            for factor in s.scalars(select(Factor).where(Factor.secret.is_not(None))):
                assert factor.secret is not None
                context = factors.secret_context(factor.id)
                factor.secret = keyring.encrypt(keyring.decrypt(factor.secret, context), context)
                count += 1
            for message in s.scalars(select(DeviceMessage)):
                context = f"device_message:{message.id}"
                message.payload = keyring.encrypt(keyring.decrypt(message.payload, context),
                                                  context)
                count += 1
            audit.record(s, self.env.clock(), actor=actor, action="key.rotate", subject="store",
                         outcome="rotated", ctx=ctx, detail={"key_id": new_kid, "count": count})
        return new_kid, count

