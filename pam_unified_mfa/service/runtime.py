"""What every endpoint needs, kept on the application: the core and the service's helpers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from pam_unified_mfa.core import MFA
from pam_unified_mfa.loop_calls import Call
from pam_unified_mfa.service.metrics import Metrics
from pam_unified_mfa.service.notifier import Notifier
from pam_unified_mfa.service.ratelimit import RateLimiter
from pam_unified_mfa.service.waiter import Waiter


@dataclass(frozen=True)
class Runtime:
    mfa: MFA
    waiter: Waiter
    metrics: Metrics
    notifier: Notifier
    limiter: RateLimiter
    call: Call
    """How the adapters' endpoints (the auth API, the Keycloak bridge, client authentication)
    make their core calls (`loop_calls`). The portals and the admin and device APIs keep worker
    threads: the portals hash passwords (argon2id, tens of milliseconds), which must not hold
    up the loop, and none of them is on a login's path."""


async def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the running service's `Runtime`. A coroutine because FastAPI runs a
    plain function dependency in a worker thread, a hand-off per request for one attribute."""
    value: Runtime = request.app.state.runtime
    return value


def peer(request: Request) -> str:
    """The HTTP peer address, for the audit trail."""
    return request.client.host if request.client else ""
