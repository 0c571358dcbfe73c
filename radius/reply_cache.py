"""Retransmissions (RFC 5080 §2.2.2): the same request gets the same reply, and is worked once.

A gateway resends an Access-Request, unchanged, when its reply is late or lost — typically
every few seconds while a user looks for the push on the phone. A request is known by who sent
it and its identity: (client, source address and port, Identifier, Request Authenticator). The
first copy is worked; copies that arrive while it is being worked wait for its reply, and
copies that arrive later get the reply again. No copy ever starts a second push.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

Key = tuple[str, str, int, int, bytes]
Reply = bytes | None
"""The encoded reply, or None when the request is dropped without one."""

MAX_ENTRIES = 200_000  # ~100 bytes of key and up to 4 KB of reply each, at worst ~1 GB: bounded


class ReplyCache:
    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        # Finished entries in the order they finished, so the oldest expire from the front.
        self._done: OrderedDict[Key, tuple[float, Reply]] = OrderedDict()
        self._working: dict[Key, asyncio.Future[Reply]] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._done) + len(self._working)

    async def reply(self, key: Key, work: Callable[[], Awaitable[Reply]]) -> tuple[Reply, bool]:
        """The reply for this request, and whether it is a copy of one already seen."""
        self._expire()
        if key in self._done:
            self.duplicates += 1
            return self._done[key][1], True
        working = self._working.get(key)
        if working is not None:
            self.duplicates += 1
            return await asyncio.shield(working), True
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._working[key] = future
        try:
            result = await work()
        except BaseException:
            future.set_result(None)  # waiting copies are dropped too; the gateway retries
            raise
        finally:
            del self._working[key]
        if not future.done():
            future.set_result(result)
        self._done[key] = (self._clock() + self._ttl, result)
        while len(self._done) > MAX_ENTRIES:
            self._done.popitem(last=False)
        return result, False

    def _expire(self) -> None:
        now = self._clock()
        while self._done:
            key, (until, _) = next(iter(self._done.items()))
            if until > now:
                break
            del self._done[key]
