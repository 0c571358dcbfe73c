"""Waiting without a thread: wake-ups keyed by account (new push) or dialogue (decided).

A waiter subscribes to a key, checks the store once, and sleeps on a future until the key is
woken or its time is up. Three things wake a key:

- the core's after-commit event, when this process made the change (the common case: the
  device's approval arrives at the same service that holds the login's wait);
- the sweep: one task per process that asks the store, every `SWEEP_SECONDS`, which pushes
  were created or decided since its previous round, and wakes the keys among them that are
  waited on here. It finds what another node or another process on the same store did. Its
  cost follows the logins of the interval, not the number of waits (a re-check per waiter
  kept one CPU busy at 10,000 waits; a query naming every waited key took 40 ms of CPU);
- the caller's own deadline (a push's expiry is a deadline too: auth waits are cut there).

A waiter costs one listener and one timer while it sleeps; nothing runs on its behalf.
Coroutines wait with `follow`; the waits socket, which may hold tens of thousands of waits,
registers plain callbacks with `listen` and keeps no task per wait.
Everything here runs on the event loop; events from worker threads arrive through
`ServiceEvents`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import TypeVar

from pam_unified_mfa.core import Outcome, Step

T = TypeVar("T")

log = logging.getLogger("unified_mfa.service")

SWEEP_SECONDS = 2.0  # how stale a change made elsewhere may be when a waiter learns of it

SWEEP_OVERLAP = 10.0  # seconds each round looks back past the previous one

DEADLINE_GRACE = 0.2  # seconds past a push's deadline before the last check finds it expired

Sweep = Callable[[float], Awaitable[set[str]]]


Listener = Callable[[], None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._count = 0

    @property
    def pending(self) -> int:
        """How many waits are registered right now (the metrics gauge)."""
        return self._count

    def listen(self, key: str, listener: Listener) -> None:
        """Call `listener()` (on the loop) when `key` is woken, until `unlisten`."""
        self._listeners.setdefault(key, set()).add(listener)
        self._count += 1

    def unlisten(self, key: str, listener: Listener) -> None:
        listeners = self._listeners.get(key)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        self._count -= 1
        if not listeners:
            del self._listeners[key]

    @contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved when `key` is woken, for a coroutine to await."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listener = partial(_resolve, future)
        self.listen(key, listener)
        try:
            yield future
        finally:
            self.unlisten(key, listener)

    def wake(self, key: str) -> None:
        for listener in list(self._listeners.get(key, ())):
            listener()

    async def follow(self, key: str, check: Callable[[], Awaitable[T]],
                     finished: Callable[[T], bool], timeout: float) -> T:
        """`check()` until `finished(result)` or `timeout` seconds; sleeps between checks.

        Subscribed before each check, so a wake-up that arrives during the check is not lost.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.subscribe(key) as woken:
                result = await check()
                remaining = deadline - loop.time()
                if finished(result) or remaining <= 0:
                    return result
                timer = loop.call_at(deadline, _resolve, woken)
                try:
                    await woken
                finally:
                    timer.cancel()

    async def sweep_forever(self, changes_since: Sweep, clock: Callable[[], float],
                            interval: float = SWEEP_SECONDS) -> None:
        """Every `interval` seconds, wake the waited keys that `changes_since(t)` reports.

        `t` is the start of the previous round, less SWEEP_OVERLAP, in the store's clock: a
        change is seen even when its node's clock is a little behind or it committed late.
        A key reported twice costs one more check of the store, nothing else. A waiter that
        starts later checks the store itself, so rounds with nothing waiting read nothing.
        """
        since = clock() - SWEEP_OVERLAP
        while True:
            await asyncio.sleep(interval)
            started = clock()
            if not self._listeners:
                since = started - SWEEP_OVERLAP
                continue
            try:
                changed = await changes_since(since)
            except Exception:  # a store outage: the next round covers this one too
                log.warning("could not check the store for changes made elsewhere",
                            exc_info=True)
                continue
            since = started - SWEEP_OVERLAP
            for key in changed.intersection(self._listeners):
                self.wake(key)

    @staticmethod
    async def stop(task: asyncio.Task[None]) -> None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def wait_limit(step: Step, now: float, ceiling: float) -> float:
    """Seconds to wait on a pending step: `ceiling`, cut at the push's deadline plus a grace,
    so that the check made then finds the push expired."""
    if step.deadline is None:
        return ceiling
    return min(ceiling, max(0.0, step.deadline - now) + DEADLINE_GRACE)


async def until_decided(waiter: Waiter, step: Step, check: Callable[[], Awaitable[Step]],
                        now: float, ceiling: float) -> Step:
    """Follow a login that waits on a push (`check` polls the core) until it no longer does,
    or for `ceiling` seconds; never past the push's deadline (then the core finds it expired).
    """
    if step.outcome is not Outcome.PUSH_PENDING or not step.wait_key or ceiling <= 0:
        return step
    return await waiter.follow(step.wait_key, check,
                               lambda s: s.outcome is not Outcome.PUSH_PENDING,
                               wait_limit(step, now, ceiling))
