"""Users, groups and admin accounts, and how strictly MFA applies to each.

An admin not linked to a user gets an account of its own (kind "admin") that may hold TOTP only;
a linked admin authenticates as the linked user and so inherits that user's factors and
enforcement (R14).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from pam_unified_mfa.core.orgpolicy import PolicyRow
from pam_unified_mfa.errors import AlreadyExists, NotFound, PolicyViolation
from pam_unified_mfa.store.models import Account, Admin, Group, Membership, OrgPolicy, table_of
from pam_unified_mfa.store.prepared import PreparedQuery

ENFORCEMENTS = ("required", "enroll_at_login", "exempt")
# Strictest first: a user in several groups gets the strictest of their groups' settings.
_STRICTNESS = {name: rank for rank, name in enumerate(ENFORCEMENTS)}
ROLES = ("admin", "billing")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,254}$")


def new_id(prefix: str = "i") -> str:
    """Random, unguessable row id; known before insert so it can bind ciphertexts (AAD).

    The letter prefix tells the kind of object in logs and CLI output ("f…" is a factor).
    """
    return prefix + secrets.token_hex(8)


def check_name(name: str) -> str:
    """Names travel through PAM, RADIUS and LDAP: keep them to a conservative alphabet."""
    if not _NAME.match(name):
        raise PolicyViolation(
            f"invalid name {name!r}: use letters, digits and . _ @ + - (at most 255)"
        )
    return name


class AccountRow(NamedTuple):
    """What a login reads of an account, as a plain row (store/prepared.py says why)."""

    id: str
    kind: str
    name: str
    enforcement: str | None
    must_enroll_until: float | None
    locked_until: float | None
    push_blocked_until: float | None
    failures: int  # with lock_count: whether a success has a count to clear (S02)
    lock_count: int


# Every login runs these: prepared once (store/prepared.py).
_ACCOUNTS = table_of(Account)
ACCOUNT_ROW_COLUMNS = [_ACCOUNTS.c[name] for name in AccountRow._fields]
_ROW_BY_ID = PreparedQuery(
    select(*ACCOUNT_ROW_COLUMNS).where(_ACCOUNTS.c.id == bindparam("id")), AccountRow._make)
_GROUP_ENFORCEMENTS = PreparedQuery(
    select(Group.enforcement).join(Membership, Membership.group_id == Group.id)
    .where(Membership.account_id == bindparam("account_id")), lambda row: str(row[0] or ""))
# Groups with an enforcement are few; reading them all keeps the statement fixed (an expanding
# IN over the directory's names would be compiled again at every login).
_ENFORCED_GROUPS = PreparedQuery(
    select(Group.name, Group.enforcement).where(Group.enforcement.is_not(None)),
    lambda row: (str(row[0]), str(row[1])))
_BY_NAME = select(Account).where(Account.kind == bindparam("kind"),
                                 Account.name == bindparam("name"))


def find_account(session: Session, name: str, kind: str = "user") -> Account | None:
    return session.scalars(_BY_NAME, {"kind": kind, "name": name}).one_or_none()


def account_row(session: Session, account_id: str) -> AccountRow | None:
    """An account as a login reads it, again (its lock may have changed since `begin`)."""
    return _ROW_BY_ID.first(session, {"id": account_id})


def get_user(session: Session, name: str) -> Account:
    account = find_account(session, name)
    if account is None:
        raise NotFound(f"no such user: {name}")
    return account


def add_user(session: Session, name: str, now: float, groups: tuple[str, ...] = ()) -> Account:
    check_name(name)
    if find_account(session, name) is not None:
        raise AlreadyExists(f"user {name} already exists")
    account = Account(id=new_id(), kind="user", name=name, failures=0, lock_count=0,
                      created_at=now)
    session.add(account)
    session.flush()
    for group in groups:
        join_group(session, account, group)
    return account


def list_users(session: Session) -> list[Account]:
    return list(session.scalars(
        select(Account).where(Account.kind == "user").order_by(Account.name)
    ))


def get_or_create_group(session: Session, name: str) -> Group:
    check_name(name)
    group = session.scalars(select(Group).where(Group.name == name)).one_or_none()
    if group is None:
        group = Group(id=new_id(), name=name, enforcement=None)
        session.add(group)
        session.flush()
    return group


def join_group(session: Session, account: Account, group_name: str) -> None:
    group = get_or_create_group(session, group_name)
    exists = session.get(Membership, (account.id, group.id))
    if exists is None:
        session.add(Membership(account_id=account.id, group_id=group.id))
        session.flush()


def group_names(session: Session, account: Account) -> list[str]:
    return list(session.scalars(
        select(Group.name).join(Membership, Membership.group_id == Group.id)
        .where(Membership.account_id == account.id).order_by(Group.name)
    ))


def check_enforcement(value: str | None) -> str | None:
    if value is not None and value not in ENFORCEMENTS:
        raise PolicyViolation(f"enforcement must be one of {', '.join(ENFORCEMENTS)}")
    return value


def _strictest(values: list[str]) -> str | None:
    return min(values, key=_STRICTNESS.__getitem__) if values else None


def _directory_enforcement(session: Session, names: tuple[str, ...]) -> str | None:
    """The strictest enforcement set on any of these group names, or None.

    Directory groups are the groups an external directory (the first factor's) says the
    account is in. They are matched by name against the stored groups, read only: a name no
    stored group has, or a group that inherits, adds nothing, and nothing is written.
    """
    if not names:
        return None
    wanted = set(names)
    return _strictest([enforcement for name, enforcement in _ENFORCED_GROUPS.rows(session, {})
                       if name in wanted and enforcement])


def effective_enforcement(session: Session, account: Account | AccountRow,
                          policy: OrgPolicy | PolicyRow,
                          directory_groups: tuple[str, ...] = ()) -> str:
    """The account's own setting, else the strictest of its groups' (stored and directory
    groups alike), else the organisation's (`login_enforcement` says more)."""
    stored = _strictest([value for value in _GROUP_ENFORCEMENTS.rows(session,
                                                                     {"account_id": account.id})
                         if value])
    return login_enforcement(session, account, policy, stored, directory_groups)


def login_enforcement(session: Session, account: Account | AccountRow,
                      policy: OrgPolicy | PolicyRow, stored_groups: str | None,
                      directory_groups: tuple[str, ...] = ()) -> str:
    """`effective_enforcement` with the strictest stored group's setting already read (a
    login has it from its first read, core/login_read.py).

    Admin-only accounts are always `required`: an admin console without MFA is the one hole an
    attacker looks for first.
    """
    if account.kind == "admin":
        return "required"
    if account.enforcement:
        return account.enforcement
    strictest = _strictest([value for value in (stored_groups,
                                                _directory_enforcement(session, directory_groups))
                            if value])
    return strictest if strictest is not None else policy.default_enforcement


@dataclass(frozen=True)
class AdminView:
    name: str
    roles: tuple[str, ...]
    linked_user: str | None


def find_admin(session: Session, name: str) -> Admin:
    admin = session.scalars(select(Admin).where(Admin.name == name)).one_or_none()
    if admin is None:
        raise NotFound(f"no such admin: {name}")
    return admin


def admin_roles(admin: Admin) -> tuple[str, ...]:
    return tuple(role for role in admin.roles.split(",") if role)


def add_admin(
    session: Session, name: str, now: float, roles: tuple[str, ...] = (),
    linked_user: str | None = None,
) -> Admin:
    check_name(name)
    for role in roles:
        if role not in ROLES:
            raise PolicyViolation(f"unknown role {role!r}: roles are {', '.join(ROLES)}")
    if session.scalars(select(Admin).where(Admin.name == name)).one_or_none() is not None:
        raise AlreadyExists(f"admin {name} already exists")
    if linked_user is not None:
        account = get_user(session, linked_user)
    else:
        if find_account(session, name, kind="admin") is not None:
            raise AlreadyExists(f"admin account {name} already exists")
        account = Account(id=new_id(), kind="admin", name=name, failures=0, lock_count=0,
                          created_at=now)
        session.add(account)
        session.flush()
    all_roles = ("admin", *sorted(set(roles) - {"admin"}))
    admin = Admin(id=new_id(), name=name, roles=",".join(all_roles),
                  linked=linked_user is not None, account_id=account.id, created_at=now)
    session.add(admin)
    session.flush()
    return admin


def admin_account(session: Session, admin: Admin) -> Account:
    account = session.get(Account, admin.account_id)
    if account is None:  # pragma: no cover - foreign key guarantees it
        raise NotFound(f"admin {admin.name} has no account")
    return account


def view_admin(session: Session, admin: Admin) -> AdminView:
    linked = admin_account(session, admin).name if admin.linked else None
    return AdminView(admin.name, admin_roles(admin), linked)


def list_admins(session: Session) -> list[Admin]:
    return list(session.scalars(select(Admin).order_by(Admin.name)))
