"""How a process learns that another process or node decided a push it waits for.

On PostgreSQL a listening connection receives every change as it commits (LISTEN/NOTIFY): no
polling, and the login waiting on node B is released milliseconds after the approval reached
node A. When that connection is lost (the database restarts, a network blip), it reconnects
with a growing pause and, once listening again, asks the store once for what changed while it
was deaf, so no waiter sleeps through a decision. On SQLite, where several processes may share
one file, the waiter's sweep asks the store every few seconds instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pam_unified_mfa.errors import StoreUnavailable
from pam_unified_mfa.service.waiter import SWEEP_OVERLAP, Sweep, Waiter
from pam_unified_mfa.store.changes import listen, listen_dsn
from pam_unified_mfa.store.database import Store

log = logging.getLogger("unified_mfa.service")

RETRY_FIRST = 0.2  # seconds before the first reconnection attempt
RETRY_MAX = 5.0  # the pause between attempts doubles up to this


async def follow_changes(waiter: Waiter, store: Store, changes_since: Sweep,
                         clock: Callable[[], float]) -> None:
    """Wake `waiter`'s keys on changes made anywhere, for as long as the task runs."""
    dsn = listen_dsn(store)
    if dsn is None:
        await waiter.sweep_forever(changes_since, clock)
    else:
        await listen_forever(waiter, dsn, changes_since, clock)


async def listen_forever(waiter: Waiter, dsn: str, changes_since: Sweep,
                         clock: Callable[[], float]) -> None:
    import psycopg  # only a node on PostgreSQL listens: pamd on SQLite never loads it

    lost_at: float | None = None
    delay = RETRY_FIRST

    async def listening() -> None:
        nonlocal lost_at, delay
        if lost_at is not None:
            for key in await changes_since(lost_at - SWEEP_OVERLAP):
                waiter.wake(key)
            log.info("listening again for changes made on other nodes")
        lost_at, delay = None, RETRY_FIRST

    while True:
        try:
            await listen(dsn, waiter.wake, listening)
            reason = "the connection closed"
        except (psycopg.Error, OSError, StoreUnavailable) as exc:
            reason = type(exc).__name__
        if lost_at is None:
            lost_at = clock()
            log.warning("not listening for changes made on other nodes (%s): reconnecting",
                        reason)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)
