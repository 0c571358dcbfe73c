"""Prometheus metrics of one service instance, in a registry of its own (never the global one).

`unified_mfa_push_not_me_total` is the alert metric for S04: a user answered "deny — not me",
so somebody else probably knows their password. Each such answer is also a WARNING log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger("unified_mfa.service")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "unified_mfa_decisions", "Dialogue steps returned, by adapter and outcome",
            ["adapter", "outcome"], registry=self.registry)
        self.pushes_sent = Counter(
            "unified_mfa_pushes_sent", "Push requests created for a device",
            registry=self.registry)
        self.push_answers = Counter(
            "unified_mfa_push_answers", "Device answers to push requests, by resulting status",
            ["status"], registry=self.registry)
        self.not_me = Counter(
            "unified_mfa_push_not_me", "Push requests denied as 'not me' (S04 alert)",
            registry=self.registry)
        self.webhook_failures = Counter(
            "unified_mfa_webhook_failures", "Webhook wake-ups that could not be delivered",
            registry=self.registry)
        self.waiters = Gauge(
            "unified_mfa_pending_waiters", "Requests waiting for a push or a decision",
            registry=self.registry)
        # labels() looks its child up under a lock; each login's decision counts one.
        self._decision_counts: dict[tuple[str, str], Callable[[], None]] = {}

    def watch_waiters(self, count: Callable[[], int]) -> None:
        self.waiters.set_function(lambda: float(count()))

    def decision(self, adapter: str, outcome: str) -> None:
        count = self._decision_counts.get((adapter, outcome))
        if count is None:
            count = self._decision_counts[adapter, outcome] = self.decisions.labels(
                adapter=adapter, outcome=outcome).inc
        count()

    def push_answer(self, status: str, device_id: str) -> None:
        self.push_answers.labels(status=status).inc()
        if status == "denied_not_me":
            self.not_me.inc()
            log.warning("push denied as 'not me' on device %s: the password of its user may be "
                        "known to someone else", device_id)

    def render(self) -> bytes:
        return generate_latest(self.registry)
