"""Waiting without a thread: wake-ups keyed by account id (new push) or dialogue id (decided).

A waiter subscribes to a key, re-checks the store, and sleeps on an `asyncio.Event` until an
event for that key arrives, the time is up, or the fallback interval passes (a change made by
another node, or an expiry, is then found by the periodic re-check). Everything here runs on
the event loop; events from worker threads arrive through `ServiceEvents`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

T = TypeVar("T")

FALLBACK_SECONDS = 2.0  # re-check the store at least this often while waiting


class Waiter:
    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._count = 0

    @property
    def pending(self) -> int:
        """How many requests are waiting right now (the metrics gauge)."""
        return self._count

    @contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._listeners.setdefault(key, set()).add(event)
        self._count += 1
        try:
            yield event
        finally:
            self._count -= 1
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(event)
                if not listeners:
                    del self._listeners[key]

    def wake(self, key: str) -> None:
        for event in self._listeners.get(key, ()):
            event.set()

    async def follow(self, key: str, check: Callable[[], Awaitable[T]],
                     finished: Callable[[T], bool], timeout: float,
                     fallback: float = FALLBACK_SECONDS) -> T:
        """`check()` until `finished(result)` or `timeout` seconds; sleeps between checks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.subscribe(key) as event:
            while True:
                event.clear()  # before the check: a wake-up during the check is not lost
                result = await check()
                remaining = deadline - loop.time()
                if finished(result) or remaining <= 0:
                    return result
                with suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, fallback))
