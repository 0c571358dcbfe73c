"""What every core operation needs besides the transaction: settings, keys and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pam_unified_mfa.core.events import Events, NoEvents
from pam_unified_mfa.crypto import Keyring
from pam_unified_mfa.settings import Settings


@dataclass(frozen=True)
class Env:
    settings: Settings
    keyring: Keyring
    clock: Callable[[], float]
    events: Events = field(default_factory=NoEvents)

    def seconds(self, duration: str) -> float:
        return self.settings.seconds(duration)
