"""Encryption of secrets at rest (TOTP seeds, device data) under a rotatable key file.

Secrets are sealed with AES-256-GCM so that a copy of the database alone is
useless; the key lives in a separate 0600 file.  Every token names the id of
the key that sealed it, so keys can be rotated without re-encrypting rows in
the same step: old keys stay in the file for decryption only.

Tokens look like ``v1.<kid>.<urlsafe-b64(nonce || ciphertext+tag)>`` (no
padding).  The caller's ``context`` (for example ``"factor:abc:secret"``) is
the GCM associated data, which binds a ciphertext to the row it belongs to: a
token copied into another row does not decrypt.

Error messages may name the key file and key ids, never key material or
plaintext.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pam_unified_mfa.errors import DecryptError, KeyFileError

__all__ = ["DecryptError", "KeyFileError", "Keyring"]


FILE_VERSION = 1
FORMAT_V1 = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# A real key file is well under 1 KiB per key; the cap stops a wrong path
# (a log, a device) from being read into memory.
_MAX_FILE_BYTES = 1 << 20
# Ids are embedded in dot-separated tokens and MACs, so they must not contain dots.
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_HEX_MAC_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class _Key:
    kid: str
    material: bytes
    created: str
    # Made once per key: on a login's path, making it for every secret opened cost about
    # 6 µs, as much as the decryption (docs/performance.md). It holds no state between calls.
    cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cipher", AESGCM(self.material))

    def __repr__(self) -> str:
        # Keep key material out of tracebacks and debug logs.
        return f"_Key(kid={self.kid!r}, created={self.created!r})"


def _new_kid(taken: set[str] | frozenset[str] = frozenset()) -> str:
    while True:
        kid = "k" + secrets.token_hex(4)
        if kid not in taken:
            return kid


def _new_key(taken: set[str] | frozenset[str] = frozenset()) -> _Key:
    return _Key(
        kid=_new_kid(taken),
        material=secrets.token_bytes(KEY_BYTES),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Decode strictly so that each ciphertext has exactly one valid spelling."""
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url_encode(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def _serialise(active: str, keys: dict[str, _Key]) -> bytes:
    doc = {
        "version": FILE_VERSION,
        "active": active,
        "keys": [
            {
                "id": k.kid,
                "key": base64.b64encode(k.material).decode("ascii"),
                "created": k.created,
            }
            for k in keys.values()
        ],
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make a create/rename durable; best effort where directories can't be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)


class Keyring:
    """The set of data-encryption keys from one key file; one of them is active."""

    def __init__(self, path: Path, active: str, keys: dict[str, _Key]) -> None:
        if active not in keys:
            raise KeyFileError(f"key file {path}: active key {active!r} is not in the file")
        self._path = Path(path)
        self._active = active
        self._keys = dict(keys)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Keyring(path={str(self._path)!r}, active={self._active!r}, keys={self.key_ids})"

    # -- file handling -------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> Keyring:
        """Create a new key file; never overwrites, since losing a key loses every secret."""
        path = Path(path)
        key = _new_key()
        keys = {key.kid: key}
        try:
            cls._create_file(path, _serialise(key.kid, keys))
        except FileExistsError:
            raise KeyFileError(
                f"key file {path} already exists; refusing to overwrite it"
            ) from None
        return cls(path, key.kid, keys)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Read a key file, refusing one that other users could read or change."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise KeyFileError(f"key file {path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"key file {path} cannot be opened: {exc.strerror}") from None
        try:
            # fstat on the open descriptor: the checked file is the one we read.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be "
                    f"accessible by group or others (chmod 600 {path})"
                )
            chunks: list[bytes] = []
            total = 0
            while chunk := os.read(fd, 65536):
                total += len(chunk)
                if total > _MAX_FILE_BYTES:
                    raise KeyFileError(f"key file {path} is too large to be a key file")
                chunks.append(chunk)
        except OSError as exc:
            raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        active, keys = cls._parse(path, b"".join(chunks))
        return cls(path, active, keys)

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[Keyring, bool]:
        """First start creates the key; later starts (or a concurrent creator) load it."""
        path = Path(path)
        if os.path.lexists(path):
            return cls.load(path), False
        key = _new_key()
        keys = {key.kid: key}
        try:
            cls._create_file(path, _serialise(key.kid, keys))
        except FileExistsError:
            # Another process won the race; use its key, not ours.
            return cls.load(path), False
        return cls(path, key.kid, keys), True

    @staticmethod
    def _create_file(path: Path, data: bytes) -> None:
        """Write ``data`` to a new 0600 file; raises FileExistsError if ``path`` exists."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise
        except OSError as exc:
            raise KeyFileError(f"key file {path} cannot be created: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # a restrictive umask must not leave it unreadable to us
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            # A half-written key file would block every later start; remove it.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise KeyFileError(f"key file {path} cannot be written: {exc.strerror}") from None
        os.close(fd)
        _fsync_dir(path.parent)

    @staticmethod
    def _parse(path: Path, raw: bytes) -> tuple[str, dict[str, _Key]]:
        def bad(why: str) -> KeyFileError:
            return KeyFileError(f"key file {path} is malformed: {why}")

        try:
            doc: Any = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise bad("not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            # exc.msg/lineno describe the position only, never the content.
            raise bad(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict):
            raise bad("top level is not an object")
        if doc.get("version") != FILE_VERSION:
            raise bad(f"unsupported version (expected {FILE_VERSION})")
        active = doc.get("active")
        entries = doc.get("keys")
        if not isinstance(active, str):
            raise bad('"active" is missing or not a string')
        if not isinstance(entries, list) or not entries:
            raise bad('"keys" is missing or empty')
        keys: dict[str, _Key] = {}
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise bad(f"keys[{n}] is not an object")
            kid, material, created = entry.get("id"), entry.get("key"), entry.get("created")
            if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
                raise bad(f"keys[{n}] has a missing or invalid id")
            if kid in keys:
                raise bad(f"key id {kid!r} appears twice")
            if not isinstance(created, str):
                raise bad(f'key {kid!r} has a missing or invalid "created"')
            if not isinstance(material, str):
                raise bad(f'key {kid!r} has a missing "key"')
            try:
                key_bytes = base64.b64decode(material, validate=True)
            except (binascii.Error, ValueError):
                raise bad(f'key {kid!r}: "key" is not valid base64') from None
            if len(key_bytes) != KEY_BYTES:
                raise bad(f"key {kid!r} is not {KEY_BYTES * 8} bits")
            keys[kid] = _Key(kid, key_bytes, created)
        if active not in keys:
            raise bad(f"active key {active!r} is not among the keys")
        return active, keys

    def _persist(self, active: str, keys: dict[str, _Key]) -> None:
        """Replace the key file atomically so a crash leaves the old or new file, never half."""
        directory = self._path.parent
        data = _serialise(active, keys)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = directory / f".{self._path.name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(tmp, flags, 0o600)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise KeyFileError(
                    f"cannot write a new key file in {directory}: {exc.strerror}"
                ) from None
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise KeyFileError(
                f"key file {self._path} cannot be replaced: {exc.strerror}"
            ) from None
        _fsync_dir(directory)

    # -- keys ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> list[str]:
        """Oldest first, as stored in the file."""
        return list(self._keys)

    def rotate(self) -> str:
        """Make a fresh key active; old keys stay so existing tokens still decrypt.

        The file is written before the in-memory state changes, so a failed write
        leaves this keyring and the file in agreement.
        """
        with self._lock:
            # Keep keys another process added meanwhile: dropping one would lose its secrets.
            with contextlib.suppress(KeyFileError):
                self._keys = {**Keyring.load(self._path)._keys, **self._keys}
            key = _new_key(set(self._keys))
            keys = {**self._keys, key.kid: key}
            self._persist(key.kid, keys)
            self._keys = keys
            self._active = key.kid
            return key.kid

    def _pick_up_new_keys(self) -> None:
        """Merge keys another process added to the file (a `key rotate` while a server runs).

        The file's active key becomes this keyring's too. An unreadable file changes nothing:
        the caller then reports the key id as unknown, as before.
        """
        try:
            fresh = Keyring.load(self._path)
        except KeyFileError:
            return
        with self._lock:
            self._keys = {**fresh._keys, **self._keys}
            self._active = fresh._active

    # -- encryption ----------------------------------------------------------

    def encrypt(self, plaintext: bytes, context: str) -> str:
        """Seal ``plaintext`` for the row named by ``context`` under the active key."""
        key = self._keys[self._active]
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = key.cipher.encrypt(nonce, plaintext, context.encode("utf-8"))
        return f"{FORMAT_V1}.{key.kid}.{_b64url_encode(nonce + sealed)}"

    def decrypt(self, token: str, context: str) -> bytes:
        """Open a token; any failure is a DecryptError, never partial or unauthenticated data."""
        kid, blob = self._split(token)
        if kid not in self._keys:
            self._pick_up_new_keys()
        key = self._keys.get(kid)
        if key is None:
            raise DecryptError(f"token was sealed with unknown key id {kid!r}")
        try:
            return key.cipher.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode("utf-8")
            )
        except InvalidTag:
            raise DecryptError(
                f"token under key {kid!r} failed authentication "
                "(tampered, or stored for a different context)"
            ) from None

    def key_id_of(self, token: str) -> str:
        """Which key sealed a token, e.g. to find rows still under a retired key.

        The id need not be in this keyring; malformed tokens raise DecryptError.
        """
        return self._split(token)[0]

    @staticmethod
    def _split(token: str) -> tuple[str, bytes]:
        parts = token.split(".")
        if len(parts) != 3:
            raise DecryptError("token is malformed (expected v1.<kid>.<data>)")
        version, kid, data = parts
        if version != FORMAT_V1:
            raise DecryptError("token has an unsupported version")
        if not _KID_RE.fullmatch(kid):
            raise DecryptError("token has a malformed key id")
        try:
            blob = _b64url_decode(data)
        except (binascii.Error, ValueError):
            raise DecryptError("token data is not valid base64url") from None
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptError("token data is too short")
        return kid, blob

    # -- keyed hashes --------------------------------------------------------

    def _mac_hex(self, kid: str, data: bytes, purpose: str) -> str:
        # A derived subkey per purpose keeps the MAC key distinct from the AES
        # key and makes a hash stored for one purpose useless for another.
        subkey = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=purpose.encode("utf-8"),
        ).derive(self._keys[kid].material)
        return hmac.new(subkey, data, hashlib.sha256).hexdigest()

    def mac(self, data: bytes, purpose: str) -> str:
        """Keyed hash for values stored only as hashes, so a database dump can't be brute-forced."""
        kid = self._active
        return f"{kid}.{self._mac_hex(kid, data, purpose)}"

    def verify_mac(self, data: bytes, purpose: str, stored: str) -> bool:
        """Check ``data`` against a stored MAC in constant time; unusable input is just False."""
        kid, sep, digest = stored.partition(".")
        if sep and kid not in self._keys and _KID_RE.fullmatch(kid):
            self._pick_up_new_keys()
        if not sep or kid not in self._keys or not _HEX_MAC_RE.fullmatch(digest):
            return False
        return hmac.compare_digest(self._mac_hex(kid, data, purpose), digest)
