"""Who is asking, through which adapter, from where: carried into every decision and audit line."""

from __future__ import annotations

from dataclasses import dataclass

ADAPTERS = ("cli", "pam", "radius", "keycloak", "portal", "api", "device")
TEXT_MAX = 255
"""Characters the store keeps of a client, a service and a login name. Longer ones come from a
peer, not from a real host or service: they are cut, so they cannot fail the login."""


@dataclass(frozen=True)
class RequestContext:
    """The adapter fills this in; the core never looks at protocol details beyond it.

    `fail_mode` is the adapter's configured S07 mode; None means the organisation's setting.
    """

    adapter: str = "cli"
    client: str = ""
    service: str = ""
    fail_mode: str | None = None

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {self.adapter!r}")
        if self.fail_mode not in (None, "secure", "safe"):
            raise ValueError("fail_mode must be 'secure' or 'safe'")
        # Cut here, once, so that a token bound to a client still matches its next request.
        object.__setattr__(self, "client", self.client[:TEXT_MAX])
        object.__setattr__(self, "service", self.service[:TEXT_MAX])


CLI = RequestContext()
