"""A user's factors as the Security page lists them: names and grouping, nothing decided.

Built only from the core's `UserView` (the same the CLI prints, R15): a unified Protect
enrollment is one card with its two entries, "Protect Push" and "Authenticator App" (R05); any
other factor is an entry of its own, managed on its own (R11). Bypass codes are counted, never
listed one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pam_unified_mfa.core import UserView
from pam_unified_mfa.core.factors import FactorView

LABELS = {
    "protect_push": "Protect Push",
    "protect_totp": "Authenticator App",
    "third_party_totp": "Authenticator App (other vendor)",
}
ENROLL_LABELS = {
    "unified": "Set up the Protect app (push and codes, one scan)",
    "push": "Set up Protect Push",
    "totp": "Set up the Protect Authenticator App",
    "third_party_totp": "Set up an authenticator app of your choice",
}
STATE_LABELS = {"active": "Active", "pending": "Waiting for setup"}


@dataclass(frozen=True)
class Entry:
    id: str
    kind: str
    label: str
    state: str
    state_label: str


@dataclass(frozen=True)
class Card:
    """One enrollment: the unified Protect enrollment, or a factor on its own."""

    id: str  # the factor id to act on (deleting one factor of a unified card deletes the card)
    title: str
    unified: bool
    state: str
    state_label: str
    entries: tuple[Entry, ...]

    @property
    def resettable(self) -> bool:
        """A Protect card: reset with a Protect code (R07)."""
        return any(e.kind in ("protect_push", "protect_totp") for e in self.entries)


@dataclass(frozen=True)
class SecurityView:
    cards: tuple[Card, ...]
    bypass_left: int
    pending: bool  # some factor waits for its first code
    has_protect_code: bool  # an active Protect TOTP can prove possession for a reset (R07)


def _entry(factor: FactorView) -> Entry:
    return Entry(factor.id, factor.kind, LABELS.get(factor.kind, factor.kind), factor.state,
                 STATE_LABELS.get(factor.state, factor.state))


def security_view(view: UserView) -> SecurityView:
    cards: list[Card] = []
    unified: dict[str, list[FactorView]] = {}
    for factor in view.factors:
        if factor.kind == "bypass":
            continue
        if factor.unified:
            unified.setdefault(factor.enrollment, []).append(factor)
            continue
        entry = _entry(factor)
        cards.append(Card(factor.id, entry.label, False, entry.state, entry.state_label,
                          (entry,)))
    for members in unified.values():
        members.sort(key=lambda f: 0 if f.kind == "protect_push" else 1)
        state = "active" if any(f.state == "active" for f in members) else "pending"
        cards.insert(0, Card(members[0].id, "Protect", True, state, STATE_LABELS[state],
                             tuple(_entry(f) for f in members)))
    return SecurityView(
        cards=tuple(cards),
        bypass_left=sum(1 for f in view.factors
                        if f.kind == "bypass" and f.state == "active" and not f.used),
        pending=any(f.state == "pending" and f.kind != "bypass" for f in view.factors),
        has_protect_code=any(f.kind == "protect_totp" and f.state == "active"
                             for f in view.factors),
    )


def factor_summary(view: UserView) -> str:
    """One line for the admin's user list: the active kinds, as `user list` prints them."""
    kinds = sorted({f.kind for f in view.factors if f.state == "active"})
    return ", ".join(kinds) or "-"
