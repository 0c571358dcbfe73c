"""Secrets at rest: AES-256-GCM tokens under a rotatable 0600 key file (rule S05)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from pam_unified_mfa.crypto import DecryptError, KeyFileError, Keyring
from pam_unified_mfa.errors import ConfigError, UnifiedMFAError

SEED = b"JBSWY3DPEHPK3PXP-very-secret-seed"
CONTEXT = "factor:abc:secret"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def ring(key_path: Path) -> Keyring:
    return Keyring.create(key_path)


def _flip_last_data_char(token: str) -> str:
    version, kid, data = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    raw[-1] ^= 0x01
    new = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode("ascii")
    return f"{version}.{kid}.{new}"


# -- encryption --------------------------------------------------------------


def test_s05_encrypted_secret_roundtrips(ring: Keyring) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    assert ring.decrypt(token, CONTEXT) == SEED


def test_s05_roundtrip_after_reloading_key_file(ring: Keyring, key_path: Path) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    assert Keyring.load(key_path).decrypt(token, CONTEXT) == SEED


def test_s05_token_format_names_version_and_key_id(ring: Keyring) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    version, kid, data = token.split(".")
    assert version == "v1"
    assert kid == ring.active_key_id == ring.key_id_of(token)
    assert "=" not in data
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    assert len(raw) == 12 + len(SEED) + 16  # nonce || ciphertext || tag


def test_s05_same_plaintext_gets_a_fresh_nonce_each_time(ring: Keyring) -> None:
    assert ring.encrypt(SEED, CONTEXT) != ring.encrypt(SEED, CONTEXT)


def test_s05_ciphertext_is_bound_to_its_row_context(ring: Keyring) -> None:
    token = ring.encrypt(SEED, "factor:abc:secret")
    with pytest.raises(DecryptError):
        ring.decrypt(token, "factor:xyz:secret")


def test_s05_tampered_ciphertext_is_rejected(ring: Keyring) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    with pytest.raises(DecryptError):
        ring.decrypt(_flip_last_data_char(token), CONTEXT)


def test_s05_token_from_another_key_file_is_rejected(ring: Keyring, tmp_path: Path) -> None:
    other = Keyring.create(tmp_path / "other.json")
    with pytest.raises(DecryptError, match="unknown key id"):
        ring.decrypt(other.encrypt(SEED, CONTEXT), CONTEXT)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "v1.kdeadbeef",
        "v2.kdeadbeef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.k.dead.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1.kdeadbeef.not*base64!",
        "v1.kdeadbeef.AAAA",
        "v1..AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_s05_malformed_token_raises_decrypt_error(ring: Keyring, token: str) -> None:
    with pytest.raises(DecryptError):
        ring.decrypt(token, CONTEXT)


def test_s05_decrypt_error_does_not_reveal_plaintext_or_key(ring: Keyring, key_path: Path) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    with pytest.raises(DecryptError) as excinfo:
        ring.decrypt(token, "wrong-context")
    message = str(excinfo.value)
    key_b64 = json.loads(key_path.read_text())["keys"][0]["key"]
    assert SEED.decode() not in message
    assert key_b64 not in message
    assert excinfo.value.__cause__ is None


def test_s05_plaintext_never_appears_in_token(ring: Keyring) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    assert SEED.decode() not in token
    assert base64.urlsafe_b64encode(SEED).decode().rstrip("=") not in token


def test_s05_plaintext_never_appears_in_key_file(ring: Keyring, key_path: Path) -> None:
    ring.encrypt(SEED, CONTEXT)
    ring.rotate()
    assert SEED not in key_path.read_bytes()


def test_key_material_is_not_in_repr(ring: Keyring, key_path: Path) -> None:
    key_b64 = json.loads(key_path.read_text())["keys"][0]["key"]
    assert key_b64 not in repr(ring)
    assert ring.active_key_id in repr(ring)


# -- key file ----------------------------------------------------------------


def test_s05_created_key_file_has_mode_0600(ring: Keyring, key_path: Path) -> None:
    assert _mode(key_path) == 0o600


def test_created_key_file_has_documented_format(ring: Keyring, key_path: Path) -> None:
    doc = json.loads(key_path.read_text())
    assert doc["version"] == 1
    assert doc["active"] == ring.active_key_id
    [entry] = doc["keys"]
    assert entry["id"] == ring.active_key_id
    assert len(base64.b64decode(entry["key"], validate=True)) == 32
    assert entry["created"].endswith("Z")
    assert ring.key_ids == [ring.active_key_id]


def test_created_key_file_is_0600_even_with_permissive_umask(key_path: Path) -> None:
    old = os.umask(0)
    try:
        Keyring.create(key_path)
    finally:
        os.umask(old)
    assert _mode(key_path) == 0o600


def test_create_refuses_to_overwrite_existing_file(ring: Keyring, key_path: Path) -> None:
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        Keyring.create(key_path)
    assert key_path.read_bytes() == before


def test_create_refuses_to_overwrite_unrelated_file(key_path: Path) -> None:
    key_path.write_bytes(b"not a key file")
    with pytest.raises(KeyFileError):
        Keyring.create(key_path)
    assert key_path.read_bytes() == b"not a key file"


def test_create_in_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot be created"):
        Keyring.create(tmp_path / "no-such-dir" / "keys.json")


def test_crypto_errors_belong_to_the_project_error_tree() -> None:
    assert issubclass(KeyFileError, ConfigError)
    assert issubclass(DecryptError, UnifiedMFAError)


def test_load_missing_file_fails_with_clear_message(key_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        Keyring.load(key_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_load_refuses_file_accessible_by_group_or_others(
    ring: Keyring, key_path: Path, mode: int
) -> None:
    key_path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Keyring.load(key_path)


def test_load_accepts_owner_only_read_file(ring: Keyring, key_path: Path) -> None:
    key_path.chmod(0o400)
    assert Keyring.load(key_path).active_key_id == ring.active_key_id


def test_load_refuses_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys.d"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        Keyring.load(directory)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_load_unreadable_file_fails_with_clear_message(ring: Keyring, key_path: Path) -> None:
    key_path.chmod(0o000)
    try:
        with pytest.raises(KeyFileError, match="cannot be opened"):
            Keyring.load(key_path)
    finally:
        key_path.chmod(0o600)


def _valid_doc() -> dict[str, object]:
    return {
        "version": 1,
        "active": "k00000001",
        "keys": [
            {
                "id": "k00000001",
                "key": base64.b64encode(b"\x01" * 32).decode(),
                "created": "2024-01-01T00:00:00Z",
            }
        ],
    }


def _write_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def test_load_accepts_hand_written_valid_file(key_path: Path) -> None:
    _write_0600(key_path, json.dumps(_valid_doc()).encode())
    ring = Keyring.load(key_path)
    assert ring.active_key_id == "k00000001"
    assert ring.decrypt(ring.encrypt(SEED, CONTEXT), CONTEXT) == SEED


def _key0(doc: dict[str, object]) -> dict[str, object]:
    keys = doc["keys"]
    assert isinstance(keys, list)
    entry = keys[0]
    assert isinstance(entry, dict)
    return entry


def _bad_json(doc: dict[str, object]) -> bytes:
    return b"{not json"


def _not_utf8(doc: dict[str, object]) -> bytes:
    return b"\xff\xfe\x00"


def _not_object(doc: dict[str, object]) -> bytes:
    return b"[]"


def _wrong_version(doc: dict[str, object]) -> bytes:
    doc["version"] = 2
    return json.dumps(doc).encode()


def _active_missing(doc: dict[str, object]) -> bytes:
    doc["active"] = "k99999999"
    return json.dumps(doc).encode()


def _no_keys(doc: dict[str, object]) -> bytes:
    doc["keys"] = []
    return json.dumps(doc).encode()


def _short_key(doc: dict[str, object]) -> bytes:
    _key0(doc)["key"] = base64.b64encode(b"\x01" * 16).decode()
    return json.dumps(doc).encode()


def _key_not_base64(doc: dict[str, object]) -> bytes:
    _key0(doc)["key"] = "!!!not base64!!!"
    return json.dumps(doc).encode()


def _kid_with_dot(doc: dict[str, object]) -> bytes:
    _key0(doc)["id"] = "k.1"
    doc["active"] = "k.1"
    return json.dumps(doc).encode()


def _duplicate_kid(doc: dict[str, object]) -> bytes:
    keys = doc["keys"]
    assert isinstance(keys, list)
    keys.append(dict(keys[0]))
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "corrupt",
    [
        _bad_json,
        _not_utf8,
        _not_object,
        _wrong_version,
        _active_missing,
        _no_keys,
        _short_key,
        _key_not_base64,
        _kid_with_dot,
        _duplicate_kid,
    ],
)
def test_load_refuses_malformed_file(key_path: Path, corrupt: object) -> None:
    assert callable(corrupt)
    _write_0600(key_path, corrupt(_valid_doc()))
    with pytest.raises(KeyFileError, match="malformed") as excinfo:
        Keyring.load(key_path)
    assert "\n" not in str(excinfo.value)
    assert base64.b64encode(b"\x01" * 32).decode() not in str(excinfo.value)


def test_load_or_create_creates_when_missing(key_path: Path) -> None:
    ring, created = Keyring.load_or_create(key_path)
    assert created is True
    assert _mode(key_path) == 0o600
    assert ring.key_ids == [ring.active_key_id]


def test_load_or_create_loads_existing_file(ring: Keyring, key_path: Path) -> None:
    token = ring.encrypt(SEED, CONTEXT)
    again, created = Keyring.load_or_create(key_path)
    assert created is False
    assert again.active_key_id == ring.active_key_id
    assert again.decrypt(token, CONTEXT) == SEED


def test_load_or_create_still_refuses_unsafe_existing_file(ring: Keyring, key_path: Path) -> None:
    key_path.chmod(0o644)
    with pytest.raises(KeyFileError):
        Keyring.load_or_create(key_path)


# -- rotation ----------------------------------------------------------------


def test_s05_rotate_makes_new_tokens_use_new_key(ring: Keyring) -> None:
    old_kid = ring.active_key_id
    new_kid = ring.rotate()
    assert new_kid != old_kid
    assert ring.active_key_id == new_kid
    assert ring.key_id_of(ring.encrypt(SEED, CONTEXT)) == new_kid


def test_s05_rotate_keeps_old_tokens_decryptable(ring: Keyring, key_path: Path) -> None:
    old_token = ring.encrypt(SEED, CONTEXT)
    ring.rotate()
    assert ring.decrypt(old_token, CONTEXT) == SEED
    assert Keyring.load(key_path).decrypt(old_token, CONTEXT) == SEED


def test_rotate_persists_new_active_key(ring: Keyring, key_path: Path) -> None:
    old_kid = ring.active_key_id
    new_kid = ring.rotate()
    reloaded = Keyring.load(key_path)
    assert reloaded.active_key_id == new_kid
    assert reloaded.key_ids == [old_kid, new_kid]


def test_s05_key_file_is_still_0600_after_rotate(ring: Keyring, key_path: Path) -> None:
    ring.rotate()
    assert _mode(key_path) == 0o600


def test_rotate_leaves_no_temporary_files(ring: Keyring, key_path: Path) -> None:
    ring.rotate()
    assert sorted(p.name for p in key_path.parent.iterdir()) == [key_path.name]


def test_failed_rotate_leaves_keyring_and_file_unchanged(
    ring: Keyring, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key_path.read_bytes()
    old_kid = ring.active_key_id

    def fail_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(KeyFileError):
        ring.rotate()
    assert ring.active_key_id == old_kid
    assert ring.key_ids == [old_kid]
    assert key_path.read_bytes() == before
    assert sorted(p.name for p in key_path.parent.iterdir()) == [key_path.name]


def test_key_id_of_rejects_malformed_token(ring: Keyring) -> None:
    with pytest.raises(DecryptError):
        ring.key_id_of("not-a-token")


# -- keyed hashes ------------------------------------------------------------


def test_mac_roundtrip(ring: Keyring) -> None:
    stored = ring.mac(b"12345678", "bypass-code")
    assert stored.startswith(ring.active_key_id + ".")
    assert ring.verify_mac(b"12345678", "bypass-code", stored)


def test_mac_rejects_wrong_data(ring: Keyring) -> None:
    stored = ring.mac(b"12345678", "bypass-code")
    assert not ring.verify_mac(b"12345679", "bypass-code", stored)


def test_mac_is_separated_by_purpose(ring: Keyring) -> None:
    stored = ring.mac(b"12345678", "bypass-code")
    assert not ring.verify_mac(b"12345678", "recovery-code", stored)


def test_mac_depends_on_the_key(ring: Keyring, tmp_path: Path) -> None:
    other = Keyring.create(tmp_path / "other.json")
    _, digest = ring.mac(b"12345678", "bypass-code").split(".")
    _, other_digest = other.mac(b"12345678", "bypass-code").split(".")
    assert digest != other_digest


def test_mac_survives_rotation(ring: Keyring, key_path: Path) -> None:
    stored = ring.mac(b"12345678", "bypass-code")
    ring.rotate()
    assert ring.verify_mac(b"12345678", "bypass-code", stored)
    assert Keyring.load(key_path).verify_mac(b"12345678", "bypass-code", stored)
    assert ring.mac(b"12345678", "bypass-code").startswith(ring.active_key_id + ".")


@pytest.mark.parametrize(
    "stored",
    ["", "garbage", "kdeadbeef.", "kdeadbeef." + "0" * 64, "{kid}.zz", "{kid}." + "0" * 63],
)
def test_verify_mac_is_false_for_unknown_kid_or_malformed(ring: Keyring, stored: str) -> None:
    assert (
        ring.verify_mac(b"12345678", "bypass-code", stored.format(kid=ring.active_key_id)) is False
    )
