"""Retransmissions that reach another responder process or node (RFC 5080 §2.2.2, shared).

A gateway that hears nothing resends its request, and may send it to its next server: another
node on the same store. The local `ReplyCache` knows only its own process, so the node that
gets the copy would work it again — a second push to the user's phone, or a Reject because the
code in it was just spent. Here the first process to see a request claims it in the store; a
copy that reaches any other process waits for the claimant's reply (woken at its commit) and
sends the same bytes. A claimant that dies mid-work never replies: its copies give up when the
claim runs out and send nothing, so the login fails closed and is never worked twice.

On by default when the store is PostgreSQL (`[radius] shared_replies`); a single process on
SQLite does not need it, and `SO_REUSEPORT` keeps a gateway's resends on one process as long
as the set of processes does not change.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pam_unified_mfa.errors import StoreUnavailable
from pam_unified_mfa.loop_calls import Call
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.store.changes import announce
from pam_unified_mfa.store.database import Store
from pam_unified_mfa.store.models import RadiusReply, table_of
from radius.reply_cache import Key, Reply

log = logging.getLogger("unified_mfa.radius")

TABLE = table_of(RadiusReply)

SQLITE_RECHECK = 0.5  # SQLite has no notifications: a waiting copy looks again this often


def digest(key: Key) -> str:
    """The request's identity as a fixed-size key (the authenticator is 16 random bytes)."""
    name, host, port, identifier, authenticator = key
    head = f"{name}\0{host}\0{port}\0{identifier}\0".encode()
    return hashlib.sha256(head + authenticator).hexdigest()


class SharedReplies:
    def __init__(self, store: Store, waiter: Waiter, call: Call, clock: Callable[[], float],
                 ttl: float, work_limit: float) -> None:
        """`ttl`: how long a reply is kept for copies; `work_limit`: how long a claim holds
        while its request is worked (a held push at most), after which copies give up."""
        self._store = store
        self._waiter = waiter
        self._call = call
        self._clock = clock
        self._ttl = ttl
        self._work_limit = work_limit
        self._insert = pg_insert if not store.is_sqlite else sqlite_insert
        self.copies = 0

    async def reply(self, key: Key, work: Callable[[], Awaitable[Reply]]) -> Reply:
        """`work()`'s reply if this process is the first to see the request anywhere, else
        the reply the first one sent (None when it dropped the request or died)."""
        name = digest(key)
        try:
            claimed = await self._call(self._claim, name)
        except StoreUnavailable:
            # The request itself meets the outage and gets the client's fail mode (S07).
            return await work()
        if not claimed:
            self.copies += 1
            return await self._copy(name)
        result: Reply = None
        try:
            result = await work()
        finally:
            try:
                await self._call(self._finish, name, result)
            except StoreUnavailable:
                log.warning("radius: could not share a reply (store unavailable); copies "
                            "sent to other nodes get none")
        return result

    def _claim(self, name: str) -> bool:
        """Insert the claim, or take over one that ran out; False when another holds it."""
        now = self._clock()
        claim = self._insert(TABLE).values(
            key=name, done=False, reply=None, expires_at=now + self._work_limit)
        statement = claim.on_conflict_do_update(
            index_elements=[TABLE.c.key],
            set_={"done": False, "reply": None, "expires_at": now + self._work_limit},
            where=TABLE.c.expires_at <= now).returning(TABLE.c.key)
        with self._store.session() as session:  # expired rows: core/housekeeping.py
            return session.execute(statement).first() is not None

    def _finish(self, name: str, reply: Reply) -> None:
        with self._store.session() as session:
            session.execute(update(TABLE).where(TABLE.c.key == name).values(
                done=True, reply=reply, expires_at=self._clock() + self._ttl))
            announce(session, wait_key(name))

    def _read(self, name: str) -> tuple[bool, Reply, float] | None:
        with self._store.reading() as session:
            row = session.execute(select(TABLE.c.done, TABLE.c.reply, TABLE.c.expires_at)
                                  .where(TABLE.c.key == name)).one_or_none()
        return None if row is None else (row.done, row.reply, row.expires_at)

    async def _copy(self, name: str) -> Reply:
        """Wait for the claimant's reply until its claim runs out."""
        def settled(found: tuple[bool, Reply, float] | None) -> bool:
            return found is None or found[0] or found[2] <= self._clock()

        async def check() -> tuple[bool, Reply, float] | None:
            return await self._call(self._read, name)

        slice_ = SQLITE_RECHECK if self._store.is_sqlite else self._work_limit
        deadline = self._clock() + self._work_limit
        while True:
            found = await self._waiter.follow(
                wait_key(name), check, settled, min(slice_, max(0.0, deadline - self._clock())))
            if settled(found) or self._clock() >= deadline:
                break
        return found[1] if found is not None and found[0] else None


def wait_key(name: str) -> str:
    """What a waiting copy sleeps on; distinct from account and dialogue ids."""
    return f"radius:{name}"
