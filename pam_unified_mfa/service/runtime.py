"""What every endpoint needs, kept on the application: the core and the service's helpers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from pam_unified_mfa.core import MFA
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


def runtime(request: Request) -> Runtime:
    """FastAPI dependency: the running service's `Runtime`."""
    value: Runtime = request.app.state.runtime
    return value


def peer(request: Request) -> str:
    """The HTTP peer address, for the audit trail."""
    return request.client.host if request.client else ""
