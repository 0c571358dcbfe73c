"""The optional webhook wake-up (the UnifiedPush pattern).

When a push request is created, POST `{"type": "push", "id": "<push id>"}` to every endpoint the
account's devices registered: no user data, no number. The device then fetches its pending
pushes over the authenticated device API. Delivery runs in the background with a short timeout;
a failure is logged (host only: an endpoint URL can itself be a capability) and counted, and
never delays or fails a login. Long-poll keeps working without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool

from pam_unified_mfa.service.metrics import Metrics

log = logging.getLogger("unified_mfa.service")

TIMEOUT_SECONDS = 5.0


class Notifier:
    def __init__(self, endpoints: Callable[[str], list[str]], metrics: Metrics,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self._endpoints = endpoints
        self._metrics = metrics
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False,
                                         headers={"User-Agent": "unified-mfa"})

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def push_created(self, account_id: str, push_id: str) -> None:
        """Called on the event loop; returns at once, delivery runs as a task."""
        if self._client is None:
            return
        task = asyncio.create_task(self._deliver(account_id, push_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, account_id: str, push_id: str) -> None:
        try:
            urls = await run_in_threadpool(self._endpoints, account_id)
        except Exception as exc:  # the store is down: count it, the long-poll still works
            log.warning("webhook endpoints unavailable: %s", type(exc).__name__)
            self._metrics.webhook_failures.inc()
            return
        await asyncio.gather(*(self._post(url, push_id) for url in urls))

    async def _post(self, url: str, push_id: str) -> None:
        assert self._client is not None
        host = urlsplit(url).hostname or "?"
        try:
            response = await self._client.post(url, json={"type": "push", "id": push_id})
        except httpx.HTTPError as exc:
            log.warning("webhook to %s failed: %s", host, type(exc).__name__)
            self._metrics.webhook_failures.inc()
            return
        if response.status_code >= 300:
            log.warning("webhook to %s refused: HTTP %d", host, response.status_code)
            self._metrics.webhook_failures.inc()
