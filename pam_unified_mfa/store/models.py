"""The store's tables.

Times are UNIX seconds (float) so SQLite and PostgreSQL agree without time-zone handling. Ids are
random text so they can be bound into ciphertexts (AAD) before the row exists. Secrets are stored
only as ciphertext (`Keyring.encrypt`) or keyed hashes (`Keyring.mac`).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The mapped class's table, for plain statements on hot paths (no ORM layer)."""
    return cast(Table, model.__table__)


class OrgPolicy(Base):
    """The single organisation policy row (id 1); `version` makes two-step confirms detect races."""

    __tablename__ = "org_policy"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    totp_source: Mapped[str] = mapped_column(String(16))
    push_enabled: Mapped[bool] = mapped_column(Boolean)
    totp_enabled: Mapped[bool] = mapped_column(Boolean)
    default_enforcement: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Float)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    enforcement: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Account(Base):
    """Someone who authenticates with MFA: a user, or an admin not linked to a user (R14)."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_accounts_kind_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))
    enforcement: Mapped[str | None] = mapped_column(String(16), nullable=True)
    must_enroll_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lock_count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    push_blocked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Membership(Base):
    __tablename__ = "memberships"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class Admin(Base):
    """An admin; `account_id` is the linked user's account or the admin's own TOTP-only one."""

    __tablename__ = "admins"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    roles: Mapped[str] = mapped_column(String(255), default="")
    linked: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    created_at: Mapped[float] = mapped_column(Float)


class Factor(Base):
    """One enrolled method. Protect push and TOTP of one scan share `enrollment_id`."""

    __tablename__ = "factors"
    __table_args__ = (Index("ix_factors_account", "account_id", "state"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(24))
    state: Mapped[str] = mapped_column(String(12))
    enrollment_id: Mapped[str] = mapped_column(String(32))
    unified: Mapped[bool] = mapped_column(Boolean, default=False)
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    algorithm: Mapped[str | None] = mapped_column(String(8), nullable=True)
    digits: Mapped[int | None] = mapped_column(Integer, nullable=True)
    period: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    push_endpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    retires: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    confirmed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class EnrollmentToken(Base):
    """Single-use, expiring token a Protect device presents to register for push."""

    __tablename__ = "enrollment_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    factor_id: Mapped[str] = mapped_column(ForeignKey("factors.id", ondelete="CASCADE"))
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DeviceMessage(Base):
    """Something the device channel must deliver to a push device (e.g. TOTP after a merge, R10)."""

    __tablename__ = "device_messages"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    factor_id: Mapped[str] = mapped_column(ForeignKey("factors.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Dialogue(Base):
    """A resumable MFA dialogue; only the hash of its current single-use token is kept."""

    __tablename__ = "dialogues"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True
    )
    username: Mapped[str] = mapped_column(String(255))
    adapter: Mapped[str] = mapped_column(String(32))
    client: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enroll_factor_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    push_number: Mapped[str | None] = mapped_column(String(8), nullable=True)
    push_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class Confirmation(Base):
    """The pending second step of a two-step admin change (R03)."""

    __tablename__ = "confirmations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(32))
    argument: Mapped[str] = mapped_column(String(64), default="")
    admin_id: Mapped[str] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"))
    policy_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRecord(Base):
    """Who did what, when, through which adapter, from where — never a secret or a code."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(32))
    adapter: Mapped[str] = mapped_column(String(32))
    client: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text, default="")


class PushChallenge(Base):
    """One push request: shown on the device, answered once with the device's signature (S03)."""

    __tablename__ = "push_challenges"
    __table_args__ = (Index("ix_push_account_created", "account_id", "created_at"),
                      Index("ix_push_created", "created_at"),
                      Index("ix_push_decided", "decided_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    dialogue_id: Mapped[str] = mapped_column(String(32), index=True)
    number: Mapped[str] = mapped_column(String(8))
    choices: Mapped[str] = mapped_column(String(32))
    service: Mapped[str] = mapped_column(String(255))
    adapter: Mapped[str] = mapped_column(String(32))
    client: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    factor_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ApiClient(Base):
    """A remote adapter allowed to drive dialogues over the auth API."""

    __tablename__ = "api_clients"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class UsedAssertion(Base):
    """`jti`s of client assertions already accepted: each is good once, on every node."""

    __tablename__ = "used_assertions"
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class AdminToken(Base):
    """Bearer tokens of the admin API; only their hash is kept."""

    __tablename__ = "admin_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_id: Mapped[str] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class LocalPassword(Base):
    """A portal password of a small site without a directory: an argon2 hash, never the text.

    `kind` is "user" or "admin", `name` the user's or the admin's name.
    """

    __tablename__ = "local_passwords"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    hash: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class PortalSession(Base):
    """A browser's portal session, shared by every node; only the hash of its cookie is kept.

    `stage` is "mfa" while the sign-in dialogue runs (its state sealed in `pending`) and "ok"
    once password and MFA both succeeded, at `authenticated_at`.
    """

    __tablename__ = "portal_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    portal: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(8))
    step: Mapped[str] = mapped_column(Text, default="")
    pending: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_path: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    authenticated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class RadiusReply(Base):
    """RADIUS requests being answered or answered lately, shared by every responder process and
    node: a gateway that resends a request to another node gets the first node's reply, and
    never a second push (RFC 5080). `key` is a hash of the request's identity, `reply` the
    encoded reply (None while it is worked, or when it was dropped)."""

    __tablename__ = "radius_replies"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    done: Mapped[bool] = mapped_column(Boolean)
    reply: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
