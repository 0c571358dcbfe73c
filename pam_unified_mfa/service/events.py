"""The core's after-commit events, handed over to the service's event loop.

The core calls these from whichever worker thread ran the transaction; the handlers (wake a
waiter, start a webhook) must run on the loop, so each call is posted there thread-safely.
Before the service has started, or after it stopped, events are dropped: a waiter re-checks the
store on its own anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("unified_mfa.service")


class ServiceEvents:
    """Implements `pam_unified_mfa.core.events.Events` for the running service."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._created: Callable[[str, str], None] | None = None
        self._decided: Callable[[str], None] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, push_created: Callable[[str, str], None],
               push_decided: Callable[[str], None]) -> None:
        self._created, self._decided = push_created, push_decided
        self._loop = loop

    def detach(self) -> None:
        self._loop = None
        self._created = self._decided = None

    def push_created(self, account_id: str, push_id: str) -> None:
        if self._created is not None:
            self._post(self._created, account_id, push_id)

    def push_decided(self, dialogue_id: str) -> None:
        if self._decided is not None:
            self._post(self._decided, dialogue_id)

    def _post(self, handler: Callable[..., None], *args: str) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(handler, *args)
        except RuntimeError:  # the loop closed meanwhile: the service is stopping
            log.debug("event dropped: the service is stopping")
