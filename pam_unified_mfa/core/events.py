"""Notifications the core gives whoever hosts it (the HTTP service), after the data is committed.

The core stays synchronous and protocol-free; a host that wants to wake a waiting long-poll or
send a webhook subscribes here. Callbacks run only after a successful commit, so a woken waiter
always finds the change in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session

AFTER_COMMIT = "after_commit"


class Events(Protocol):
    def push_created(self, account_id: str, push_id: str) -> None:
        """A push request now waits for the devices of this account."""

    def push_decided(self, dialogue_id: str) -> None:
        """The push of this dialogue was answered or expired."""


class NoEvents:
    """The default: nobody listens (the CLI, tests of the core)."""

    def push_created(self, account_id: str, push_id: str) -> None:
        return None

    def push_decided(self, dialogue_id: str) -> None:
        return None


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction has committed (dropped on rollback)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)
