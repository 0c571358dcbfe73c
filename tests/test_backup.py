"""`unified-mfa export` / `import`: the whole store to one file and back, secrets still sealed.

Sources run on SQLite and PostgreSQL (the `mfa` and `core` fixtures); a restore goes into a new
home holding a copy of the source's key file, on SQLite or on a second PostgreSQL database that
a test creates in the test cluster and drops after it.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from pam_unified_mfa.core import MFA, Outcome, RequestContext
from pam_unified_mfa.errors import BackupError
from pam_unified_mfa.home import init_home
from pam_unified_mfa.settings import KEY_FILE
from pam_unified_mfa.store import backup
from pam_unified_mfa.store.database import SCHEMA_HEAD, normalise_url
from pam_unified_mfa.store.models import RadiusReply
from tests.conftest import FakeClock, fresh_postgres
from tests.helpers import Device, code_for, login, now_code, secret_of

EXE = Path(sys.executable).with_name("unified-mfa")
GATEWAY = RequestContext(adapter="radius", client="vpn-gw", service="vpn")
# Where only the restoring side's back end matters, the source is SQLite.
SQLITE_SOURCE = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
TARGETS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# -- stores to restore into ----------------------------------------------------------------------


def _test_cluster() -> str:
    """The test PostgreSQL's URL; without one, fails or skips as the rest of the suite does."""
    return os.environ.get("UNIFIED_MFA_TEST_PG_URL") or fresh_postgres()


@pytest.fixture
def second_postgres() -> Iterator[str]:
    """A new database in the test cluster (its role has CREATEDB), dropped afterwards."""
    url = make_url(normalise_url(_test_cluster()))
    name = f"umfa_restore_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=TARGETS)
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'restored.db'}"
    return str(request.getfixturevalue("second_postgres"))


def restored_home(source: MFA, tmp_path: Path, url: str, *, same_key: bool = True) -> Path:
    """A freshly initialised home on `url`, holding a copy of the source's key file."""
    home = tmp_path / "restored"
    home.mkdir(mode=0o700)
    if same_key:
        assert source.home is not None
        shutil.copy2(source.home / KEY_FILE, home / KEY_FILE)
    init_home(home, "https://mfa.example.test", url)
    return home


@pytest.fixture
def target(mfa: MFA, tmp_path: Path, target_url: str, clock: FakeClock) -> Iterator[MFA]:
    """The core on an empty store of a new home with the source's key, on the source's clock."""
    restored = MFA.open(restored_home(mfa, tmp_path, target_url), store=target_url, clock=clock)
    yield restored
    restored.close()


# -- content and files -------------------------------------------------------------------------


def populate(mfa: MFA) -> str:
    """A store with something in nearly every table; returns alice's TOTP seed.

    alice: a confirmed TOTP (its code used once, S01) in group staff, a bypass code and a local
    password. bob: a push device enrolled before the merge (so a device message, R10) and a
    push pending. boss: a billing admin with an API token and a pending confirmation. A client
    and a RADIUS reply (binary) complete it.
    """
    mfa.add_admin("boss", roles=("billing",))
    mfa.add_user("alice")
    mfa.join_group("alice", "staff")
    seed = secret_of(mfa.enroll("alice", "totp").uri)
    assert login(mfa, "alice", code_for(mfa, seed))
    mfa.add_user("bob")
    Device(mfa, mfa.enroll("bob", "push").uri)
    mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    step = mfa.begin("bob", GATEWAY)
    assert step.token is not None
    assert mfa.answer(step.token, "push", GATEWAY).outcome is Outcome.PUSH_PENDING
    mfa.preview("boss", "separate")
    mfa.issue_bypass("alice", "boss")
    mfa.add_client("vpn")
    mfa.issue_admin_token("boss")
    mfa.set_password("user", "alice", "correct horse battery")
    with mfa.store.session() as session:
        session.add(RadiusReply(key="r" * 64, done=True, reply=b"\x00\xff\x02reply",
                                expires_at=mfa.env.clock() + 30))
    return seed


def export(mfa: MFA, path: Path) -> Path:
    backup.export_to_file(mfa.store, mfa.env.keyring, path)
    return path


def rows_of(mfa: MFA) -> list[str]:
    """Every row of the store as exported, sorted (PostgreSQL and SQLite order text apart)."""
    out = io.BytesIO()
    backup.export_store(mfa.store, mfa.env.keyring, out)
    lines = out.getvalue().decode().splitlines()
    return sorted(lines[1:-1])


def restore(target: MFA, path: Path) -> backup.BackupSummary:
    return backup.import_file(target.store, target.env.keyring, path)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, change: Any) -> None:
    """Apply `change` to the file's lines (a list of str, newline-terminated)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))


def cli(home: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args, "--store", store], capture_output=True, text=True,
                          env={**os.environ, "UNIFIED_MFA_HOME": str(home)},
                          stdin=subprocess.DEVNULL, timeout=120, check=False)


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_carries_every_row_unchanged(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    populate(mfa)

    summary = restore(target, export(mfa, tmp_path / "store.export"))

    assert rows_of(target) == rows_of(mfa)
    assert summary.rows == len(rows_of(mfa))


def test_export_header_names_format_schema_key_and_row_counts(mfa: MFA, tmp_path: Path) -> None:
    populate(mfa)

    lines = records(export(mfa, tmp_path / "store.export"))

    header, rows, end = lines[0], lines[1:-1], lines[-1]
    assert (header["format"], header["version"]) == ("unified-mfa-export", 1)
    assert header["schema"] == SCHEMA_HEAD
    assert header["key_id"] == mfa.env.keyring.active_key_id
    counted = {name: sum(r["table"] == name for r in rows) for name in header["tables"]}
    assert header["tables"] == counted
    assert end["end"]["rows"] == len(rows)


def test_binary_column_travels_as_base64(mfa: MFA, tmp_path: Path) -> None:
    populate(mfa)

    lines = records(export(mfa, tmp_path / "store.export"))

    [reply] = [r["row"] for r in lines if r.get("table") == "radius_replies"]
    assert reply["reply"] == "AP8CcmVwbHk="  # base64 of b"\x00\xff\x02reply"


def test_export_is_one_snapshot_while_the_store_changes(mfa: MFA) -> None:
    populate(mfa)

    class WriterDuringExport(io.BytesIO):
        """Adds a user through the core while the export has begun writing."""

        def write(self, data: Any) -> int:
            if not self.tell():
                mfa.add_user("late")
            return super().write(data)

    out = WriterDuringExport()
    backup.export_store(mfa.store, mfa.env.keyring, out)

    lines = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    names = [r["row"]["name"] for r in lines if r.get("table") == "accounts"]
    assert "late" not in names
    assert lines[0]["tables"]["accounts"] == len(names)
    assert any(u.name == "late" for u in mfa.list_users())


# -- the restored installation works -------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_restore_into_a_fresh_postgresql_lets_the_user_log_in_with_the_next_code(
    core: MFA, tmp_path: Path, second_postgres: str
) -> None:
    """The acceptance path on the command line: export, restore beside the same key, log in."""
    core.add_user("alice")
    seed = secret_of(core.enroll("alice", "totp").uri)
    assert login(core, "alice", now_code(core, seed))
    exported = tmp_path / "store.export"
    assert core.home is not None
    assert cli(core.home, core.store.url, "export", "--output", str(exported)).returncode == 0
    home = restored_home(core, tmp_path, second_postgres)
    imported = cli(home, second_postgres, "import", str(exported))
    assert imported.returncode == 0, imported.stderr

    result = cli(home, second_postgres, "auth", "alice", "--code", now_code(core, seed, 1))

    assert result.returncode == 0, result.stderr


@SQLITE_SOURCE
def test_export_and_import_are_each_audited_with_the_row_count(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    populate(mfa)
    exported = tmp_path / "store.export"
    assert mfa.home is not None and target.home is not None
    assert cli(mfa.home, mfa.store.url, "export", "--output", str(exported)).returncode == 0
    imported = cli(target.home, target.store.url, "import", str(exported))
    assert imported.returncode == 0, imported.stderr
    rows = records(exported)[-1]["end"]["rows"]
    for core, action in ((mfa, "store.export"), (target, "store.import")):
        entry = next(e for e in core.audit_tail(10_000) if e.action == action)
        assert entry.detail["count"] == rows


@SQLITE_SOURCE
def test_s01_a_code_used_before_export_is_refused_after_import(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    seed = populate(mfa)  # alice's current code was used once
    restore(target, export(mfa, tmp_path / "store.export"))

    replay = login(target, "alice", code_for(target, seed))

    assert not replay
    assert login(target, "alice", code_for(target, seed, 1))


@SQLITE_SOURCE
def test_s03_a_push_device_enrolled_before_export_approves_after_import(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    mfa.add_user("bob")
    device = Device(mfa, mfa.enroll("bob", "push").uri)
    restore(target, export(mfa, tmp_path / "store.export"))
    device.mfa = target
    step = target.begin("bob", GATEWAY)
    assert step.token is not None
    pending = target.answer(step.token, "push", GATEWAY)
    assert pending.token is not None and pending.push_number is not None

    device.approve(pending.push_number)

    assert target.poll(pending.token, GATEWAY).outcome is Outcome.ACCEPT


@pytest.mark.postgres
@SQLITE_SOURCE
def test_import_into_postgresql_moves_id_sequences_past_the_imported_rows(
    mfa: MFA, tmp_path: Path, second_postgres: str, clock: FakeClock
) -> None:
    populate(mfa)
    target = MFA.open(restored_home(mfa, tmp_path, second_postgres), store=second_postgres,
                      clock=clock)
    try:
        restore(target, export(mfa, tmp_path / "store.export"))

        target.add_user("dave")  # writes an audit record with the next id

        assert target.audit_tail(1)[0].subject == "dave"
    finally:
        target.close()


# -- what the file holds -------------------------------------------------------------------------


def test_s05_the_export_holds_no_totp_seed_in_clear(mfa: MFA, tmp_path: Path) -> None:
    seed = populate(mfa)

    content = export(mfa, tmp_path / "store.export").read_text()

    assert seed not in content
    assert seed.rstrip("=").lower() not in content.lower()


@SQLITE_SOURCE
def test_export_file_has_mode_0600_even_replacing_a_readable_file(
    mfa: MFA, tmp_path: Path
) -> None:
    path = tmp_path / "store.export"
    path.write_text("an older export\n")
    path.chmod(0o644)

    export(mfa, path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert records(path)[0]["format"] == "unified-mfa-export"


# -- refusals: nothing is written ---------------------------------------------------------------


@SQLITE_SOURCE
def test_import_into_a_store_holding_data_is_refused_and_changes_nothing(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    populate(mfa)
    exported = export(mfa, tmp_path / "store.export")
    target.add_user("carol")
    before = rows_of(target)

    with pytest.raises(BackupError, match="already holds data"):
        restore(target, exported)

    assert rows_of(target) == before


@SQLITE_SOURCE
@pytest.mark.parametrize("cut", ["mid_line", "end_record"])
def test_a_truncated_file_is_refused_with_nothing_written(
    mfa: MFA, target: MFA, tmp_path: Path, cut: str
) -> None:
    populate(mfa)
    exported = export(mfa, tmp_path / "store.export")
    if cut == "mid_line":
        exported.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    else:
        rewrite(exported, lambda lines: lines[:-1])
    before = rows_of(target)

    with pytest.raises(BackupError, match="truncated"):
        restore(target, exported)

    assert rows_of(target) == before


@SQLITE_SOURCE
def test_an_altered_file_is_refused_with_nothing_written(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    populate(mfa)
    exported = export(mfa, tmp_path / "store.export")
    # Reset alice's replay state: a well-formed row that would reopen a used code (S01).
    rewrite(exported, lambda lines: [re.sub(r'"last_step":\d+', '"last_step":0', line)
                                     for line in lines])
    before = rows_of(target)

    with pytest.raises(BackupError, match="altered"):
        restore(target, exported)

    assert rows_of(target) == before


@SQLITE_SOURCE
def test_a_file_of_another_schema_revision_is_refused(
    mfa: MFA, target: MFA, tmp_path: Path
) -> None:
    exported = export(mfa, tmp_path / "store.export")
    rewrite(exported, lambda lines: [
        lines[0].replace(f'"schema":"{SCHEMA_HEAD}"', '"schema":"0001"'), *lines[1:]])

    with pytest.raises(BackupError, match="schema revision 0001"):
        restore(target, exported)


@SQLITE_SOURCE
def test_import_under_another_key_file_is_refused(
    mfa: MFA, tmp_path: Path, clock: FakeClock
) -> None:
    populate(mfa)
    exported = export(mfa, tmp_path / "store.export")
    url = f"sqlite:///{tmp_path / 'restored.db'}"
    other = MFA.open(restored_home(mfa, tmp_path, url, same_key=False), store=url, clock=clock)
    try:
        with pytest.raises(BackupError, match=mfa.env.keyring.active_key_id):
            restore(other, exported)

        assert other.list_users() == []
    finally:
        other.close()


@SQLITE_SOURCE
def test_cli_refusal_is_one_line_on_stderr_and_exit_2(mfa: MFA, tmp_path: Path) -> None:
    populate(mfa)
    exported = export(mfa, tmp_path / "store.export")
    assert mfa.home is not None

    result = cli(mfa.home, mfa.store.url, "import", str(exported))  # the source is not empty

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("unified-mfa: the target store already holds data")
