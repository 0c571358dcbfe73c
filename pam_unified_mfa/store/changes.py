"""Telling every node of a change the moment it commits (PostgreSQL LISTEN/NOTIFY).

Several nodes share one PostgreSQL: a push approved through node A must release the login that
waits on node B. The transaction that creates or decides a push also queues a notification;
PostgreSQL delivers it to every listening connection when, and only if, that transaction
commits, so a woken waiter always finds the change in the store. The payload is the key a
waiter sleeps on (an account id for a device's long-poll, a dialogue id for a login), never
anything secret.

SQLite has no such channel: processes sharing one SQLite file learn of each other's changes
through the waiter's sweep (`pam_unified_mfa.service.changes`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pam_unified_mfa.store.database import Store

log = logging.getLogger("unified_mfa.store")

CHANNEL = "unified_mfa_changes"

MAX_KEY = 200  # PostgreSQL's payload limit is 8000 bytes; our keys are short ids


def announce(session: Session, key: str) -> None:
    """Queue a notification for `key`, sent by PostgreSQL at commit (nothing on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, key[:MAX_KEY])))


def listen_dsn(store: Store) -> str | None:
    """The libpq connection string of the store for a listening connection; None on SQLite."""
    if store.is_sqlite:
        return None
    url = store.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(dsn: str, on_key: Callable[[str], None],
                 on_listening: Callable[[], Awaitable[None]]) -> None:
    """Call `on_key(payload)` for every notification until the connection fails (raised).

    `on_listening` runs once LISTEN is in place, before the first notification is read: the
    caller catches up there on what it may have missed while it was not listening.
    """
    import psycopg  # only a node on PostgreSQL listens: SQLite-only commands never load it

    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=5)
    async with connection:
        await connection.execute(f"LISTEN {CHANNEL}")
        await on_listening()
        async for note in connection.notifies():
            on_key(note.payload)
