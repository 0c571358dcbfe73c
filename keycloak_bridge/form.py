"""The one mapping of the bridge: a core `Step` to what the Keycloak login form needs.

The Keycloak authenticator renders this and decides nothing: which factors a user may use,
whether a code is right, whether an outage lets the user in (S07) — all of it arrives here
already decided by the core. The mapping only narrows the `Step` to the form's fields, so that
the browser-facing side never sees more than it shows (no methods list, no deadline, and the
enrollment URI, which carries the TOTP secret, only inside the QR image).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pam_unified_mfa.core import Outcome, Step
from pam_unified_mfa.enrollment_uri import PNG_DATA_URI, png_data_uri

__all__ = ["PNG_DATA_URI", "KeycloakForm", "form_of", "message_of", "qr_data_uri"]


class KeycloakForm(BaseModel):
    """What the Keycloak form shows next (docs/keycloak.md, "The form")."""

    status: Literal["prompt", "enroll", "push_pending", "accept", "reject", "unavailable"]
    message: str = Field(description="What to show the user")
    token: str | None = Field(description="Send it with the next answer or poll; null once "
                              "the login is decided")
    can_push: bool = Field(description="Offer a push button: the user may answer `push`")
    push_number: str | None = Field(description="The number the user picks on the device "
                                    "(S03), with `push_pending`")
    enroll_qr: str | None = Field(description="With `enroll`: the enrollment QR code as a "
                                  "`data:image/png;base64,` URI (R13)")
    allowed: bool = Field(description="With `unavailable`: the core's fail-mode verdict (S07)")


def qr_data_uri(uri: str) -> str:
    """The enrollment QR as an inline PNG (the same as the portals show)."""
    return png_data_uri(uri)


def message_of(step: Step) -> str:
    """The core's message, followed by its hint to move to the unified enrollment when it gives
    one (R13: encouraged, not forced); the form has one text field, so the hint joins it."""
    hint = step.extra.get("hint", "") if step.suggest_unified else ""
    return f"{step.message}. {hint}." if hint else step.message


def form_of(step: Step) -> KeycloakForm:
    """Narrow a `Step` to the form's fields; nothing here is a decision."""
    qr = step.enroll_uri if step.outcome is Outcome.ENROLL else None
    return KeycloakForm(
        status=step.outcome.value, message=message_of(step), token=step.token,
        can_push="push" in step.methods, push_number=step.push_number,
        enroll_qr=qr_data_uri(qr) if qr else None,
        allowed=step.allowed)
