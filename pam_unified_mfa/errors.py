"""One exception tree for the whole project.

Adapters and the CLI catch `UnifiedMFAError` at their edge and turn it into one line for the
operator; anything else is a bug. Messages never carry a secret, a code or a key.
"""

from __future__ import annotations


class UnifiedMFAError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(UnifiedMFAError):
    """Settings are missing, malformed or contradictory."""


class KeyFileError(ConfigError):
    """The encryption key file is missing, unreadable, malformed or too open."""


class DecryptError(UnifiedMFAError):
    """A stored secret could not be decrypted (wrong key, tampering, wrong row)."""


class StoreUnavailable(UnifiedMFAError):
    """The database cannot be reached; adapters map this to their fail mode (S07)."""


class BackupError(UnifiedMFAError):
    """An export file cannot be written or imported (malformed, altered, wrong store or key)."""


class NotFound(UnifiedMFAError):
    """A named user, admin, factor or confirmation does not exist."""


class AlreadyExists(UnifiedMFAError):
    """A name is already taken."""


class PermissionDenied(UnifiedMFAError):
    """The acting admin lacks the role the operation needs (R02)."""


class PolicyViolation(UnifiedMFAError):
    """The organisation policy forbids the operation (R01, R08, R14)."""


class LockoutRefused(UnifiedMFAError):
    """A change would leave a user or the organisation without a working method (R01, R11, R12)."""


class InvalidCode(UnifiedMFAError):
    """A code offered as proof (e.g. for a reset, R07) was not accepted."""


class ConfirmationError(UnifiedMFAError):
    """A two-step change's confirmation is unknown, expired, used or stale (R03)."""


class DialogueError(UnifiedMFAError):
    """A dialogue token is unknown, expired or already used."""


class AuthenticationFailed(UnifiedMFAError):
    """A device, API client or admin token did not prove who it is."""
