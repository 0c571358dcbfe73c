"""The authenticator's local accounts: one JSON file, private to its owner.

The file holds what the phone app would keep in its secure storage: TOTP keys and the device's
private signing key. Like an ssh key, its protection is the file mode (0600, in a 0700
directory), so every write goes through a new 0600 file that atomically replaces the old one:
a crash or a full disk never leaves a half-written file that would lose the user's factors.
Read-modify-write cycles hold an exclusive lock, so a `pending --wait` running in one terminal
and a `list` storing a migrated TOTP in another do not overwrite each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.totp import TotpParams, validate_secret

ENV_HOME = "UNIFIED_MFA_AUTHENTICATOR_HOME"
STATE_FILE = "accounts.json"
_LOCK_FILE = ".lock"
_VERSION = 1


class StateError(UnifiedMFAError):
    """The local state is missing, unreadable or does not name what was asked for."""


@dataclass
class PushPart:
    """A registered push device: where the service is and the key that signs for it."""

    device_id: str
    service_url: str
    private_key: str  # PEM (PKCS#8); never printed


@dataclass
class TotpPart:
    """A TOTP key with its parameters, as the otpauth URI gave them."""

    secret: str  # never printed
    algorithm: str
    digits: int
    period: int

    def params(self) -> TotpParams:
        return TotpParams(self.algorithm, self.digits, self.period)


@dataclass
class Account:
    """One enrolled account: push, TOTP or both (a unified scan gives both, R05)."""

    issuer: str
    user: str
    push: PushPart | None = None
    totp: TotpPart | None = None
    added_at: float = 0.0

    @property
    def name(self) -> str:
        """`issuer:user`: the otpauth label, unique per account on this device."""
        return f"{self.issuer}:{self.user}"

    @property
    def kind(self) -> str:
        if self.push and self.totp:
            return "push + TOTP"
        return "push" if self.push else "TOTP"


@dataclass
class State:
    accounts: list[Account] = field(default_factory=list)

    def get(self, issuer: str, user: str) -> Account | None:
        for account in self.accounts:
            if account.issuer == issuer and account.user == user:
                return account
        return None

    def find(self, name: str | None) -> Account:
        """Resolve an account name: `issuer:user`, a bare user if unambiguous, or none if one."""
        if name is None:
            if len(self.accounts) == 1:
                return self.accounts[0]
            if not self.accounts:
                raise StateError("no accounts: enroll one first")
            raise StateError("several accounts: name one (see 'list')")
        exact = [a for a in self.accounts if a.name == name]
        if exact:
            return exact[0]
        by_user = [a for a in self.accounts if a.user == name]
        if len(by_user) == 1:
            return by_user[0]
        if by_user:
            raise StateError(f"several accounts for user {name!r}: use issuer:user")
        raise StateError(f"no account {name!r} (see 'list')")

    def remove(self, account: Account) -> None:
        self.accounts = [a for a in self.accounts if a is not account]


def resolve_home(home: Path | None) -> Path:
    """`--home`, else `$UNIFIED_MFA_AUTHENTICATOR_HOME`, else the per-user data directory."""
    if home is not None:
        return home
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "unified-mfa-authenticator"


def _ensure_home(home: Path) -> None:
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        # mkdir's mode is filtered by the umask; the directory must be private regardless.
        home.chmod(0o700)


def _account_from(data: dict[str, Any]) -> Account:
    push = data.get("push")
    totp = data.get("totp")
    return Account(
        issuer=str(data["issuer"]),
        user=str(data["user"]),
        push=PushPart(**push) if push else None,
        totp=TotpPart(**totp) if totp else None,
        added_at=float(data.get("added_at", 0.0)),
    )


def _check(account: Account) -> None:
    """Refuse a state file whose keys or parameters would only fail later, at a login."""
    if account.totp is not None:
        validate_secret(account.totp.secret)
        account.totp.params()
    if account.push is None and account.totp is None:
        raise ValueError("an account without push or TOTP")


def load(home: Path) -> State:
    """Read the state; a missing file is an empty device, a damaged one an error."""
    path = home / STATE_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return State()
    if stat.S_IMODE(mode) & 0o077:
        # Like ssh with a private key: a file others can read is fixed, and the user told.
        path.chmod(0o600)
        print(f"unified-mfa-authenticator: {path} was readable by others; set its mode to 0600",
              file=sys.stderr)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") != _VERSION:
            raise ValueError("unknown version")
        accounts = [_account_from(item) for item in raw["accounts"]]
        for account in accounts:
            _check(account)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # The message must not quote the content: it holds keys.
        raise StateError(f"{path} is unreadable or damaged; restore it from a backup") from None
    return State(accounts)


def save(home: Path, state: State) -> None:
    """Write the whole state to a new 0600 file and atomically put it in place."""
    _ensure_home(home)
    body = json.dumps({"version": _VERSION, "accounts": [asdict(a) for a in state.accounts]},
                      indent=2, sort_keys=True) + "\n"
    tmp = home / f".{STATE_FILE}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, home / STATE_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _sync_dir(home)


def _sync_dir(home: Path) -> None:
    """Make the rename durable, so a power cut does not bring back the old file."""
    fd = os.open(home, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold the home's lock for one read-modify-write of the state."""
    _ensure_home(home)
    fd = os.open(home / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def editing(home: Path) -> Iterator[State]:
    """Load under the lock, let the caller change the state, save it if nothing failed."""
    with locked(home):
        state = load(home)
        yield state
        save(home, state)
