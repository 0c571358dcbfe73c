"""The audit trail: every decision and every admin change, in the store and in the log.

Detail values are restricted to a fixed set of keys holding identifiers, counts and flags, so a
code or a secret cannot be written here by mistake (S05).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from pam_unified_mfa.core.context import RequestContext
from pam_unified_mfa.core.events import after_commit
from pam_unified_mfa.store.models import AuditRecord, table_of
from pam_unified_mfa.store.prepared import Prepared

log = logging.getLogger("unified_mfa.audit")
_LINE = "action=%s outcome=%s actor=%s subject=%s adapter=%s client=%s detail=%s"

DETAIL_KEYS = frozenset({
    "factor", "factors", "kind", "mode", "from", "to", "reason", "users", "count", "key_id",
    "enrollment", "method", "attempts", "locked_for", "confirmation", "role", "state", "ttl",
    "migrated", "retired", "service", "fail_mode", "enforcement", "group", "admin", "linked",
})
_SAFE_TEXT = re.compile(r"^[a-z_][a-z0-9_.,:@/ -]{0,255}$")

Detail = Mapping[str, str | int | bool | float | None]
_ENCODE = json.JSONEncoder(sort_keys=True).encode  # json.dumps builds one per call otherwise


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    subject: str
    outcome: str
    adapter: str
    client: str
    detail: dict[str, object]


def _check_detail(detail: Detail) -> str:
    for key, value in detail.items():
        if key not in DETAIL_KEYS:
            raise ValueError(f"audit detail key {key!r} is not allowed")
        # Identifiers only: lower case and starting with a letter, so neither a code (digits)
        # nor a seed (upper-case base32) can pass.
        if isinstance(value, str) and value and not _SAFE_TEXT.match(value):
            raise ValueError(f"audit detail {key!r} holds text that is not an identifier")
    return _ENCODE(dict(detail))


_COLUMNS = ("at", "actor", "action", "subject", "outcome", "adapter", "client", "detail")
# Every login writes one: run as a prepared statement (store/prepared.py).
_INSERT = Prepared(insert(table_of(AuditRecord)).values({name: bindparam(name)
                                                        for name in _COLUMNS}))


def record(
    session: Session,
    now: float,
    *,
    actor: str,
    action: str,
    subject: str,
    outcome: str,
    ctx: RequestContext,
    detail: Detail | None = None,
) -> None:
    """Add one audit record to the current transaction, and the same line to the log once the
    transaction has committed.

    After the commit, the log says what the audit table says: a record whose transaction is
    rolled back is in neither. And the line is not written while the transaction holds the
    store's write lock, which on SQLite every other process's login waits for.
    """
    text = _check_detail(detail or {})
    _INSERT.run(session, {"at": now, "actor": actor, "action": action, "subject": subject,
                          "outcome": outcome, "adapter": ctx.adapter, "client": ctx.client,
                          "detail": text})
    after_commit(session, partial(log.info, _LINE, action, outcome, actor, subject, ctx.adapter,
                                  ctx.client or "-", text))


def tail(session: Session, count: int) -> list[AuditEntry]:
    """The newest `count` records, oldest first, as `audit tail` prints them."""
    rows = session.scalars(
        select(AuditRecord).order_by(AuditRecord.id.desc()).limit(count)
    ).all()
    return [
        AuditEntry(r.at, r.actor, r.action, r.subject, r.outcome, r.adapter, r.client,
                   json.loads(r.detail or "{}"))
        for r in reversed(rows)
    ]
