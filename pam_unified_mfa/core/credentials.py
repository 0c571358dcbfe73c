"""Who may call the service: API clients (remote adapters) and admin API tokens.

Client secrets and admin tokens are stored only as keyed hashes or hashes. A client with a
registered public key proves itself with a short-lived signed assertion whose `jti` is accepted
once across every node, so nothing reusable has to live in the adapter's configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pam_unified_mfa.core import audit
from pam_unified_mfa.core.accounts import check_name, find_admin, new_id
from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.env import Env
from pam_unified_mfa.core.factors import token_hash
from pam_unified_mfa.errors import AlreadyExists, AuthenticationFailed, PolicyViolation
from pam_unified_mfa.store.models import Admin, AdminToken, ApiClient, UsedAssertion, table_of
from pam_unified_mfa.store.prepared import PreparedQuery

ASSERTION_ALGORITHMS = ["EdDSA", "ES256", "RS256"]
ASSERTION_MAX_LIFETIME = 300
SECRET_MEMORY_SECONDS = 10.0
_REFUSED = "client authentication failed"


def auth_audience(env: Env) -> str:
    return env.settings.public_url.rstrip("/") + "/v1/auth"


def add_client(
    session: Session, env: Env, name: str, public_key_pem: str | None, ctx: RequestContext,
    actor: str,
) -> str | None:
    """Register an API client; returns its secret (shown once) when it has no key."""
    check_name(name)
    if session.scalars(select(ApiClient).where(ApiClient.name == name)).one_or_none():
        raise AlreadyExists(f"client {name} already exists")
    now = env.clock()
    client = ApiClient(id=new_id("c"), name=name, created_at=now)
    secret: str | None = None
    if public_key_pem:
        try:
            load_pem_public_key(public_key_pem.encode())
        except ValueError:
            raise PolicyViolation("the client key is not a PEM public key") from None
        client.public_key = public_key_pem
    else:
        secret = secrets.token_urlsafe(32)
        client.secret_hash = env.keyring.mac(secret.encode(), f"client:{client.id}")
    session.add(client)
    audit.record(session, now, actor=actor, action="client.add", subject=name,
                 outcome="created", ctx=ctx, detail={"kind": "key" if public_key_pem else "secret"})
    return secret


class ClientRow(NamedTuple):
    """What a call of the auth API reads of its client (store/prepared.py says why a row)."""

    id: str
    name: str
    secret_hash: str | None
    public_key: str | None


_CLIENTS = table_of(ApiClient)
# Every call of the auth API reads its client: prepared once (store/prepared.py).
_CLIENT_BY_NAME = PreparedQuery(select(*[_CLIENTS.c[name] for name in ClientRow._fields])
                                .where(_CLIENTS.c.name == bindparam("name")), ClientRow._make)


def _client(session: Session, name: str) -> ClientRow | None:
    return _CLIENT_BY_NAME.first(session, {"name": name})


def _basic(session: Session, env: Env, encoded: str) -> str:
    try:
        name, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed(_REFUSED) from None
    client = _client(session, name)
    if client is None or client.secret_hash is None:
        # Same work for unknown names, so timing does not list the clients.
        env.keyring.mac(secret.encode(), "client:none")
        raise AuthenticationFailed(_REFUSED)
    if not env.keyring.verify_mac(secret.encode(), f"client:{client.id}", client.secret_hash):
        raise AuthenticationFailed(_REFUSED)
    return client.name


def _assertion(session: Session, env: Env, token: str) -> str:
    now = env.clock()
    try:
        unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthenticationFailed(_REFUSED) from None
    client = _client(session, str(unverified.get("iss", "")))
    if client is None or client.public_key is None:
        raise AuthenticationFailed(_REFUSED)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, load_pem_public_key(client.public_key.encode()),  # type: ignore[arg-type]
            algorithms=ASSERTION_ALGORITHMS, audience=auth_audience(env), issuer=client.name,
            options={"require": ["exp", "iat", "jti", "iss", "sub"], "verify_exp": False,
                     "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise AuthenticationFailed(_REFUSED) from None
    expires, issued = float(claims["exp"]), float(claims["iat"])
    if claims["sub"] != client.name or not issued - 30 <= now < expires \
            or expires - issued > ASSERTION_MAX_LIFETIME:
        raise AuthenticationFailed(_REFUSED)
    session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now))
    try:
        with session.begin_nested():
            session.add(UsedAssertion(jti=str(claims["jti"])[:128], client_id=client.id,
                                      expires_at=expires))
    except IntegrityError:
        raise AuthenticationFailed("client assertion already used") from None
    return client.name


def _scheme(authorization: str) -> tuple[str, str]:
    scheme, _, value = authorization.strip().partition(" ")
    return scheme.lower(), value.strip()


class VerifiedSecrets:
    """Basic client secrets this process verified in the last `SECRET_MEMORY_SECONDS`.

    A gateway sends the same header with every request; reading its client and checking the
    keyed hash was about a fifth of an auth API call's CPU. Only a success is remembered, under a
    SHA-256 of the header (never the secret itself), so a wrong secret is checked every time
    and costs what it did. The price, documented for admins (docs/api.md): a client whose
    secret was changed or removed in the store may keep working for up to that long on a
    process that verified it just before. Signed assertions are single-use and never remembered.
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._until: dict[bytes, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(authorization: str) -> bytes:
        return hashlib.sha256(authorization.encode("utf-8", "surrogatepass")).digest()

    def get(self, authorization: str, now: float) -> str | None:
        """The client name, if this header was verified recently; else None."""
        found = self._until.get(self._key(authorization))
        if found is None or found[0] <= now:
            return None
        return found[1]

    def remember(self, authorization: str, name: str, now: float) -> None:
        if _scheme(authorization)[0] != "basic":
            return
        with self._lock:
            if len(self._until) >= self.MAX_ENTRIES:
                self._until.clear()  # a flood of distinct valid headers: start over
            self._until[self._key(authorization)] = (now + SECRET_MEMORY_SECONDS, name)


def authenticate_client(session: Session, env: Env, authorization: str) -> str:
    """The client name for an `Authorization` header: Basic secret or Bearer assertion."""
    scheme, value = _scheme(authorization)
    if scheme == "basic" and value:
        return _basic(session, env, value)
    if scheme == "bearer" and value:
        return _assertion(session, env, value)
    raise AuthenticationFailed(_REFUSED)


def issue_admin_token(
    session: Session, env: Env, admin_name: str, ttl: float, ctx: RequestContext, actor: str,
) -> str:
    if ttl <= 0:
        raise PolicyViolation("ttl must be positive")
    admin = find_admin(session, admin_name)
    now = env.clock()
    token = "umfa_" + secrets.token_urlsafe(32)
    session.add(AdminToken(token_hash=token_hash(token), admin_id=admin.id, created_at=now,
                           expires_at=now + ttl))
    audit.record(session, now, actor=actor, action="admin.token", subject=admin_name,
                 outcome="issued", ctx=ctx, detail={"ttl": int(ttl)})
    return token


def authenticate_admin(session: Session, env: Env, bearer: str) -> str:
    row = session.get(AdminToken, token_hash(bearer.strip()))
    if row is None or row.expires_at <= env.clock():
        raise AuthenticationFailed("admin token unknown or expired")
    admin = session.get(Admin, row.admin_id)
    if admin is None:
        raise AuthenticationFailed("admin token unknown or expired")
    return admin.name
