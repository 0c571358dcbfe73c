"""Security rules S01-S03 and S05-S07, proven through the `MFA` facade (and the CLI for S05).

S01 accepts a TOTP time step at most once per user, across adapters, nodes and concurrent
submissions; S02 counts failures per user across adapters and locks with a doubling back-off;
S03 (as far as the dialogue goes today) gives a pending push a number to match and a deadline;
S05 keeps seeds and bypass codes out of the store in clear, out of logs, audit records, views
and error messages, and survives key rotation; S06 makes an unknown user indistinguishable in
the dialogue from a user with push and code; S07 turns an unreachable store into the explicit
fail-mode verdict: deny (`secure`, the default) or allow (`safe`), logged.

S04 (push rate limit, "deny - not me" block) is specified with the push service, not here.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select

from pam_unified_mfa import totp
from pam_unified_mfa.cli.main import main as cli_main
from pam_unified_mfa.core import MFA, Outcome, RequestContext, Step
from pam_unified_mfa.core.audit import AuditEntry
from pam_unified_mfa.core.dialogue import MSG_EXPIRED, MSG_LOCKED, MSG_UNAVAILABLE
from pam_unified_mfa.errors import UnifiedMFAError
from pam_unified_mfa.home import init_home
from pam_unified_mfa.settings import SETTINGS_FILE, SQLITE_FILE
from pam_unified_mfa.store.models import Base, Factor
from tests.conftest import FakeClock
from tests.helpers import Device, code_for, enroll_confirmed, login, secret_of, wrong_code

PUBLIC_URL = "https://mfa.example.test"
PAM = RequestContext(adapter="pam", client="10.0.0.5", service="sshd")
RADIUS = RequestContext(adapter="radius", client="10.0.0.9")
KEYCLOAK = RequestContext(adapter="keycloak", client="10.0.0.7")
UNREACHABLE_PG = "postgresql://x:y@127.0.0.1:1/db"


# -- helpers ---------------------------------------------------------------------------------


def fail(mfa: MFA, user: str, uri: str, times: int, ctx: RequestContext | None = None) -> None:
    """`times` separate logins with a wrong code, as a guessing attacker would make them."""
    for _ in range(times):
        assert not login(mfa, user, wrong_code(mfa, uri), ctx)


def lock(mfa: MFA, user: str, uri: str) -> None:
    fail(mfa, user, uri, mfa.settings.throttle.max_failures)
    assert mfa.show_user(user).locked


def lockout_seconds(mfa: MFA) -> float:
    return mfa.env.seconds(mfa.settings.throttle.lockout)


def audit_of(mfa: MFA, action: str) -> list[AuditEntry]:
    return [e for e in mfa.audit_tail(1000) if e.action == action]


def give_push_device(mfa: MFA, user: str) -> str:
    """Enroll push and register a device for it; returns the push factor's id."""
    return Device(mfa, mfa.enroll(user, "push").uri).factor_id


def stored_rows(mfa: MFA) -> str:
    """Every row of every table, as text: what a copy of the database would reveal."""
    parts: list[str] = []
    with mfa.store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in connection.execute(table.select()))
    return "\n".join(parts)


def seed_forms(seed: str) -> list[str]:
    """The ways a base32 seed could leak as text."""
    return [seed, seed.lower(), base64.b32decode(seed + "=" * (-len(seed) % 8)).hex()]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


def without_token(step: Step) -> Step:
    return dataclasses.replace(step, token=None)


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Path:
    """A home with the default store: SQLite inside the home directory."""
    path = tmp_path / "sqlite-home"
    init_home(path, PUBLIC_URL)
    return path


@pytest.fixture
def sqlite_mfa(sqlite_home: Path, clock: FakeClock) -> Iterator[MFA]:
    core = MFA.open(sqlite_home, clock=clock)
    yield core
    core.close()


def open_unreachable(home: Path, store: str, clock: FakeClock) -> MFA:
    return MFA.open(home, store=store, clock=clock, migrate=False)


def set_fail_mode(home: Path, mode: str) -> None:
    path = home / SETTINGS_FILE
    text = path.read_text(encoding="utf-8")
    assert 'fail_mode = "secure"' in text
    path.write_text(text.replace('fail_mode = "secure"', f'fail_mode = "{mode}"'),
                    encoding="utf-8")


# -- S01: a time step is accepted at most once ------------------------------------------------


def test_s01_code_accepted_once_is_rejected_the_second_time(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    code = code_for(mfa, uri)
    assert login(mfa, "alice", code)
    assert not login(mfa, "alice", code)


def test_s01_code_accepted_through_pam_is_rejected_through_radius(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    code = code_for(mfa, uri)
    assert login(mfa, "alice", code, RequestContext(adapter="pam"))
    assert not login(mfa, "alice", code, RequestContext(adapter="radius"))


def test_s01_code_accepted_on_one_node_is_rejected_on_another(
    mfa: MFA, home: Path, store_url: str, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    code = code_for(mfa, uri)
    other_node = MFA.open(home, store=store_url, clock=clock)
    try:
        assert login(mfa, "alice", code)
        assert not login(other_node, "alice", code)
    finally:
        other_node.close()


def test_s01_older_step_code_is_rejected_after_a_newer_one(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    clock.advance(30)
    older = code_for(mfa, uri, offset_steps=-1)  # still inside the accepted window
    assert login(mfa, "alice", code_for(mfa, uri))
    assert not login(mfa, "alice", older)


def test_s01_two_concurrent_submissions_of_one_code_accept_exactly_once(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    code = code_for(mfa, uri)
    barrier = threading.Barrier(2)
    results: list[Step] = []
    errors: list[BaseException] = []

    def submit(client: str) -> None:
        try:
            ctx = RequestContext(adapter="radius", client=client)
            started = mfa.begin("alice", ctx)
            assert started.token is not None
            barrier.wait(timeout=30)
            results.append(mfa.answer(started.token, code, ctx))
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=submit, args=(f"10.0.0.{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 2
    assert sum(step.granted for step in results) == 1
    # The loser is refused as a replay (asked again), not failed as an unavailable store.
    assert sorted(step.outcome for step in results) == [Outcome.ACCEPT, Outcome.PROMPT]


# -- S02: failures counted per user, lock with back-off, audited -------------------------------


def test_s02_user_is_locked_after_max_failures_and_a_correct_code_is_refused(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    fail(mfa, "alice", uri, mfa.settings.throttle.max_failures - 1)
    assert not mfa.show_user("alice").locked
    fail(mfa, "alice", uri, 1)
    assert mfa.show_user("alice").locked
    assert not login(mfa, "alice", code_for(mfa, uri))


def test_s02_lock_is_audited_as_user_locked(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    lock(mfa, "alice", uri)
    records = audit_of(mfa, "user.locked")
    assert [(r.subject, r.outcome) for r in records] == [("alice", "locked")]
    assert records[0].detail["locked_for"] == int(lockout_seconds(mfa))


def test_s02_correct_code_in_a_dialogue_begun_before_the_lock_is_refused(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    started = mfa.begin("alice", PAM)
    assert started.token is not None
    lock(mfa, "alice", uri)
    step = mfa.answer(started.token, code_for(mfa, uri), PAM)
    assert step.outcome is Outcome.REJECT
    assert step.message == MSG_LOCKED


def test_s02_failures_from_different_adapters_count_together(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    limit = mfa.settings.throttle.max_failures
    for attempt in range(limit):
        assert not mfa.show_user("alice").locked
        fail(mfa, "alice", uri, 1, PAM if attempt % 2 else RADIUS)
    assert mfa.show_user("alice").locked
    assert not login(mfa, "alice", code_for(mfa, uri), KEYCLOAK)


def test_s02_correct_code_works_again_after_the_lockout(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    lock(mfa, "alice", uri)
    clock.advance(lockout_seconds(mfa) - 30)
    assert not login(mfa, "alice", code_for(mfa, uri))
    clock.advance(31)
    assert not mfa.show_user("alice").locked
    assert login(mfa, "alice", code_for(mfa, uri))


def test_s02_back_off_doubles_on_the_second_lock(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    first = lockout_seconds(mfa)
    lock(mfa, "alice", uri)
    clock.advance(first + 1)
    lock(mfa, "alice", uri)
    assert [r.detail["locked_for"] for r in audit_of(mfa, "user.locked")] == [
        int(first), int(2 * first)]
    clock.advance(first + 1)
    assert not login(mfa, "alice", code_for(mfa, uri))
    clock.advance(first)
    assert login(mfa, "alice", code_for(mfa, uri))


def test_s02_success_resets_the_failure_counter(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    almost = mfa.settings.throttle.max_failures - 1
    fail(mfa, "alice", uri, almost)
    assert login(mfa, "alice", code_for(mfa, uri))
    clock.advance(30)
    fail(mfa, "alice", uri, almost)
    assert not mfa.show_user("alice").locked
    assert login(mfa, "alice", code_for(mfa, uri))


def test_s02_success_after_a_lockout_resets_the_back_off(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    first = lockout_seconds(mfa)
    lock(mfa, "alice", uri)
    clock.advance(first + 1)
    assert login(mfa, "alice", code_for(mfa, uri))
    clock.advance(30)
    lock(mfa, "alice", uri)
    assert [r.detail["locked_for"] for r in audit_of(mfa, "user.locked")] == [
        int(first), int(first)]


# -- S03: the pending push (number and deadline; signed approval comes with push delivery) -----


def test_s03_push_request_has_a_number_to_match_and_a_deadline(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    give_push_device(mfa, "alice")
    started = mfa.begin("alice", PAM)
    assert started.token is not None and "push" in started.methods
    pending = mfa.answer(started.token, "push", PAM)
    assert pending.outcome is Outcome.PUSH_PENDING
    assert pending.push_number is not None and re.fullmatch(r"\d{2}", pending.push_number)
    assert pending.push_number in pending.message
    assert pending.deadline == clock.now + mfa.env.seconds(mfa.settings.push.timeout)
    assert pending.token is not None
    waiting = mfa.poll(pending.token, PAM)
    assert waiting.outcome is Outcome.PUSH_PENDING
    assert (waiting.push_number, waiting.deadline) == (pending.push_number, pending.deadline)


def test_s03_poll_after_the_push_deadline_rejects(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    give_push_device(mfa, "alice")
    started = mfa.begin("alice", PAM)
    assert started.token is not None
    pending = mfa.answer(started.token, "push", PAM)
    assert pending.token is not None and pending.deadline is not None
    clock.advance(pending.deadline - clock.now)
    step = mfa.poll(pending.token, PAM)
    assert step.outcome is Outcome.REJECT
    assert "expired" in [r.outcome for r in audit_of(mfa, "mfa.push")]
    assert mfa.poll(pending.token, PAM).message == MSG_EXPIRED


# -- S05: secrets at rest and out of every output ----------------------------------------------


def test_s05_seed_is_not_in_the_sqlite_database_files(sqlite_mfa: MFA, sqlite_home: Path) -> None:
    sqlite_mfa.add_user("alice")
    uri = enroll_confirmed(sqlite_mfa, "alice").uri
    assert login(sqlite_mfa, "alice", code_for(sqlite_mfa, uri))
    with sqlite_mfa.store.session() as s:
        ciphertext = s.scalars(select(Factor.secret).where(Factor.secret.is_not(None))).one()
    assert ciphertext is not None
    files = [sqlite_home / SQLITE_FILE, sqlite_home / f"{SQLITE_FILE}-wal"]
    data = b"".join(path.read_bytes() for path in files if path.exists())
    # The right files were read: the sealed seed is in them, the seed itself is not.
    assert ciphertext.encode() in data
    seed = secret_of(uri)
    assert seed.encode() not in data
    assert base64.b32decode(seed + "=" * (-len(seed) % 8)) not in data


def test_s05_seed_is_stored_only_as_ciphertext(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    with mfa.store.session() as s:
        sealed = list(s.scalars(select(Factor.secret).where(Factor.secret.is_not(None))))
    assert len(sealed) == 1 and sealed[0] is not None
    assert sealed[0].startswith(f"v1.{mfa.env.keyring.active_key_id}.")
    assert_no_secret(stored_rows(mfa), seed_forms(secret_of(uri)))


def test_s05_bypass_codes_are_not_stored_in_clear(mfa: MFA) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.add_admin("boss")
    codes = mfa.issue_bypass("alice", "boss", count=3)
    rows = stored_rows(mfa)
    assert_no_secret(rows, codes)
    assert login(mfa, "alice", codes[0])


def test_s05_seed_and_bypass_codes_never_appear_in_logs(
    mfa: MFA, home: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    clock.now = time.time()  # the CLI runs on the real clock: start the test's clock there

    def cli(*args: str) -> int:
        return cli_main([*args, "--home", str(home)])

    assert cli("user", "add", "carol") == 0
    capsys.readouterr()
    assert cli("enroll", "carol") == 0
    uri = capsys.readouterr().out.strip()
    seed = secret_of(uri)
    params = mfa.settings.totp.params()
    assert cli("auth", "carol", "--code", totp.code_at(seed, params, time.time())) == 0
    assert cli("user", "show", "carol", "--json") == 0
    assert cli("user", "list") == 0
    assert cli("admin", "add", "boss") == 0
    capsys.readouterr()
    assert cli("bypass", "issue", "carol", "--as", "boss", "--json") == 0
    codes = re.findall(r"\b\d{10}\b", capsys.readouterr().out)
    assert len(codes) == 1
    assert cli("enroll", "carol") == 2  # refused: already enrolled
    assert cli("key", "rotate") == 0
    assert cli("audit", "tail", "-n", "50") == 0
    # Then the facade, on the test's clock moved ahead: wrong codes, a lock, a bypass code,
    # a reset.
    fail(mfa, "carol", uri, mfa.settings.throttle.max_failures)
    clock.advance(lockout_seconds(mfa) + 1)
    assert login(mfa, "carol", codes[0])
    clock.advance(30)
    mfa.reset_by_user("carol", code_for(mfa, uri))
    assert any("action=mfa.code" in r.getMessage() for r in caplog.records)
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert_no_secret(logged, seed_forms(seed) + codes)


def test_s05_seed_never_appears_in_audit_records(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    mfa.add_admin("boss")
    codes = mfa.issue_bypass("alice", "boss")
    fail(mfa, "alice", uri, 2)
    assert login(mfa, "alice", codes[0])
    mfa.rotate_key()
    mfa.reset_by_user("alice", code_for(mfa, uri))
    text = repr(mfa.audit_tail(1000))
    assert "factor.confirm" in text
    assert_no_secret(text, seed_forms(secret_of(uri)) + codes)


def test_s05_user_views_never_show_seeds_or_bypass_codes(mfa: MFA) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    mfa.add_admin("boss")
    codes = mfa.issue_bypass("alice", "boss")
    shown = repr(mfa.show_user("alice")) + repr(mfa.list_users())
    assert "protect_totp" in shown and "bypass" in shown
    assert_no_secret(shown, seed_forms(secret_of(uri)) + codes)


def test_s05_cli_show_and_list_never_print_the_seed(
    mfa: MFA, home: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    for args in (["user", "show", "alice"], ["user", "show", "alice", "--json"],
                 ["user", "list"], ["user", "list", "--json"]):
        assert cli_main([*args, "--home", str(home)]) == 0
    output = capsys.readouterr()
    assert "alice" in output.out
    assert_no_secret(output.out + output.err, seed_forms(secret_of(uri)))


def test_s05_error_messages_never_carry_the_seed(mfa: MFA, clock: FakeClock) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    factor_id = mfa.show_user("alice").factors[0].id
    attempts: list[Callable[[], object]] = [
        lambda: mfa.enroll("alice", "totp"),  # already enrolled
        lambda: mfa.delete_factor("alice", factor_id),  # the last working factor
        lambda: mfa.reset_by_user("alice", wrong_code(mfa, uri)),  # wrong proof
        lambda: mfa.delete_factor("alice", "fnothere"),
        lambda: mfa.enroll("alice", "third_party_totp"),  # R08
    ]
    messages: list[str] = []
    for attempt in attempts:
        with pytest.raises(UnifiedMFAError) as caught:
            attempt()
        messages.append(str(caught.value))
    started = mfa.begin("alice", PAM)
    assert started.token is not None
    messages.append(mfa.answer(started.token, wrong_code(mfa, uri), PAM).message)
    assert_no_secret("\n".join(messages), seed_forms(secret_of(uri)))


def test_s05_key_rotation_re_encrypts_under_the_new_key_and_codes_keep_working(
    mfa: MFA, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    old_kid = mfa.env.keyring.active_key_id
    new_kid, count = mfa.rotate_key()
    assert new_kid != old_kid and count == 1
    with mfa.store.session() as s:
        sealed = list(s.scalars(select(Factor.secret).where(Factor.secret.is_not(None))))
    assert sealed and all(v is not None and v.startswith(f"v1.{new_kid}.") for v in sealed)
    assert login(mfa, "alice", code_for(mfa, uri))
    rotations = audit_of(mfa, "key.rotate")
    assert [r.detail["key_id"] for r in rotations] == [new_kid]


def test_s05_rotated_key_survives_a_restart(
    mfa: MFA, home: Path, store_url: str, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    mfa.rotate_key()
    restarted = MFA.open(home, store=store_url, clock=clock)
    try:
        assert login(restarted, "alice", code_for(restarted, uri))
    finally:
        restarted.close()


def test_s05_key_rotated_by_another_process_keeps_codes_working_in_a_running_core(
    mfa: MFA, home: Path, store_url: str, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    uri = enroll_confirmed(mfa, "alice").uri
    rotating = MFA.open(home, store=store_url, clock=clock)  # e.g. `unified-mfa key rotate`
    try:
        new_kid, _ = rotating.rotate_key()
    finally:
        rotating.close()
    assert login(mfa, "alice", code_for(mfa, uri))
    assert mfa.env.keyring.active_key_id == new_kid


def test_s05_bypass_code_issued_after_a_rotation_elsewhere_works_in_a_running_core(
    mfa: MFA, home: Path, store_url: str, clock: FakeClock,
) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.add_admin("boss")
    other = MFA.open(home, store=store_url, clock=clock)
    try:
        other.rotate_key()
        codes = other.issue_bypass("alice", "boss")
    finally:
        other.close()
    assert login(mfa, "alice", codes[0])


def test_s05_bypass_code_issued_before_key_rotation_still_works(mfa: MFA) -> None:
    mfa.add_user("alice")
    enroll_confirmed(mfa, "alice")
    mfa.add_admin("boss")
    codes = mfa.issue_bypass("alice", "boss")
    mfa.rotate_key()
    assert login(mfa, "alice", codes[0])


# -- S06: an unknown user looks like a user with push and code ---------------------------------


def real_user_with_push_and_code(mfa: MFA, name: str = "alice") -> str:
    mfa.add_user(name)
    uri = enroll_confirmed(mfa, name).uri
    give_push_device(mfa, name)
    return uri


def test_s06_begin_for_unknown_user_matches_a_user_with_push_and_code(mfa: MFA) -> None:
    real_user_with_push_and_code(mfa)
    real = mfa.begin("alice", PAM)
    unknown = mfa.begin("mallory", PAM)
    assert real.methods == ("code", "push")
    assert without_token(unknown) == without_token(real)
    assert unknown.token is not None and real.token is not None
    assert len(unknown.token) == len(real.token)


def test_s06_code_answers_for_unknown_user_are_rejected_like_wrong_codes(mfa: MFA) -> None:
    uri = real_user_with_push_and_code(mfa)
    real = mfa.begin("alice", PAM)
    unknown = mfa.begin("mallory", PAM)
    for _ in range(mfa.settings.dialogue.max_attempts):
        assert real.token is not None and unknown.token is not None
        code = wrong_code(mfa, uri)
        real = mfa.answer(real.token, code, PAM)
        unknown = mfa.answer(unknown.token, code, PAM)
        assert without_token(unknown) == without_token(real)
    assert unknown.outcome is Outcome.REJECT


def test_s06_a_current_looking_code_for_unknown_user_is_rejected_like_a_wrong_one(
    mfa: MFA,
) -> None:
    uri = real_user_with_push_and_code(mfa)
    real = mfa.begin("alice", PAM)
    unknown = mfa.begin("mallory", PAM)
    assert real.token is not None and unknown.token is not None
    wrong = mfa.answer(real.token, wrong_code(mfa, uri), PAM)
    guessed = mfa.answer(unknown.token, code_for(mfa, uri), PAM)
    assert guessed.outcome is Outcome.PROMPT
    assert without_token(guessed) == without_token(wrong)


def test_s06_push_for_unknown_user_looks_like_a_real_pending_push_until_it_expires(
    mfa: MFA, clock: FakeClock,
) -> None:
    real_user_with_push_and_code(mfa)
    real = mfa.begin("alice", PAM)
    unknown = mfa.begin("mallory", PAM)
    assert real.token is not None and unknown.token is not None
    real = mfa.answer(real.token, "push", PAM)
    unknown = mfa.answer(unknown.token, "push", PAM)

    def shape(step: Step) -> tuple[object, ...]:
        number = step.push_number or ""
        return (step.outcome, step.methods, step.deadline, len(number),
                step.message.replace(number, "N"))

    assert shape(unknown) == shape(real)
    assert real.outcome is Outcome.PUSH_PENDING
    assert real.deadline is not None and real.token is not None and unknown.token is not None
    clock.advance(real.deadline - clock.now)
    assert without_token(mfa.poll(unknown.token, PAM)) == without_token(
        mfa.poll(real.token, PAM))


def traced_statements(mfa: MFA) -> list[str]:
    """Every statement the core's SQLite store runs from now on, as SQLite traces it: with
    the values written in."""
    seen: list[str] = []
    mfa.store.dispose()  # the next connection is a new one, traced

    def trace(connection: sqlite3.Connection, _record: object) -> None:
        connection.set_trace_callback(seen.append)

    event.listen(mfa.store.engine, "connect", trace)
    return seen


def statement_shapes(statements: list[str]) -> list[str]:
    """The statements with their values (quoted text, numbers, NULL) masked."""
    return [re.sub(r"'[^']*'|\b\d+(\.\d+)?\b|\bNULL\b", "?", statement)
            for statement in statements]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_s06_begin_for_unknown_user_runs_the_statements_a_users_begin_runs(mfa: MFA) -> None:
    real_user_with_push_and_code(mfa)
    seen = traced_statements(mfa)
    mfa.begin("alice", PAM)
    known = statement_shapes(seen)
    seen.clear()
    mfa.begin("mallory", PAM)
    assert statement_shapes(seen) == known


def test_s06_dialogue_errors_do_not_reveal_whether_the_user_exists(
    mfa: MFA, clock: FakeClock,
) -> None:
    uri = real_user_with_push_and_code(mfa)
    messages: dict[str, list[str]] = {}
    for name in ("alice", "mallory"):
        seen = messages.setdefault(name, [])
        first = mfa.begin(name, PAM)
        assert first.token is not None
        second = mfa.answer(first.token, wrong_code(mfa, uri), PAM)
        seen.append(mfa.answer(first.token, wrong_code(mfa, uri), PAM).message)  # spent
        assert second.token is not None
        seen.append(mfa.answer(second.token, wrong_code(mfa, uri), RADIUS).message)  # bound
        clock.advance(mfa.env.seconds(mfa.settings.dialogue.ttl))
        seen.append(mfa.answer(second.token, wrong_code(mfa, uri), PAM).message)  # expired
        seen.append(mfa.answer("not-a-token", "push", PAM).message)
    assert messages["mallory"] == messages["alice"]
    assert set(messages["alice"]) == {MSG_EXPIRED}


# -- S07: explicit fail mode when the store is unreachable -------------------------------------


@pytest.mark.parametrize("store", [UNREACHABLE_PG, "sqlite:////nonexistent-dir/unified-mfa.db"],
                         ids=["postgresql-closed-port", "sqlite-missing-directory"])
def test_s07_unreachable_store_denies_by_default(
    sqlite_home: Path, clock: FakeClock, store: str,
) -> None:
    mfa = open_unreachable(sqlite_home, store, clock)
    try:
        step = mfa.begin("alice", PAM)
    finally:
        mfa.close()
    assert step.outcome is Outcome.UNAVAILABLE
    assert step.message == MSG_UNAVAILABLE
    assert step.allowed is False and not step.granted


def test_s07_adapter_fail_mode_safe_allows(sqlite_home: Path, clock: FakeClock) -> None:
    mfa = open_unreachable(sqlite_home, UNREACHABLE_PG, clock)
    try:
        step = mfa.begin("alice", RequestContext(adapter="radius", fail_mode="safe"))
    finally:
        mfa.close()
    assert step.outcome is Outcome.UNAVAILABLE
    assert step.allowed is True and step.granted


def test_s07_setting_fail_mode_safe_allows(sqlite_home: Path, clock: FakeClock) -> None:
    set_fail_mode(sqlite_home, "safe")
    mfa = open_unreachable(sqlite_home, UNREACHABLE_PG, clock)
    try:
        step = mfa.begin("alice", PAM)
    finally:
        mfa.close()
    assert step.outcome is Outcome.UNAVAILABLE
    assert step.allowed is True


def test_s07_adapter_fail_mode_secure_overrides_a_safe_setting(
    sqlite_home: Path, clock: FakeClock,
) -> None:
    set_fail_mode(sqlite_home, "safe")
    mfa = open_unreachable(sqlite_home, UNREACHABLE_PG, clock)
    try:
        step = mfa.begin("alice", RequestContext(adapter="pam", fail_mode="secure"))
    finally:
        mfa.close()
    assert step.outcome is Outcome.UNAVAILABLE
    assert step.allowed is False


def test_s07_answer_and_poll_on_an_unreachable_store_get_the_fail_mode_verdict(
    sqlite_home: Path, clock: FakeClock,
) -> None:
    mfa = open_unreachable(sqlite_home, UNREACHABLE_PG, clock)
    try:
        answered = mfa.answer("some-token", "123456", PAM)
        polled = mfa.poll("some-token", RequestContext(adapter="pam", fail_mode="safe"))
    finally:
        mfa.close()
    assert (answered.outcome, answered.allowed) == (Outcome.UNAVAILABLE, False)
    assert (polled.outcome, polled.allowed) == (Outcome.UNAVAILABLE, True)


def test_s07_fail_mode_verdict_is_logged(
    sqlite_home: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="unified_mfa.core")
    mfa = open_unreachable(sqlite_home, UNREACHABLE_PG, clock)
    try:
        mfa.begin("alice", PAM)
        mfa.begin("alice", RequestContext(adapter="radius", client="10.1.1.1", fail_mode="safe"))
    finally:
        mfa.close()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "unified_mfa.core" and r.levelno >= logging.WARNING]
    assert len(lines) == 2
    assert "adapter=pam" in lines[0] and "fail_mode=secure" in lines[0]
    assert "verdict=deny" in lines[0]
    assert "adapter=radius" in lines[1] and "client=10.1.1.1" in lines[1]
    assert "fail_mode=safe" in lines[1] and "verdict=allow" in lines[1]


def test_s07_a_secret_that_does_not_decrypt_is_denied_even_in_safe_mode(mfa: MFA) -> None:
    from sqlalchemy import update

    from pam_unified_mfa.store.models import Factor

    mfa.add_user("mallory")
    uri = enroll_confirmed(mfa, "mallory").uri
    with mfa.store.session() as session:
        session.execute(update(Factor).values(secret="v1.kdeadbeef.AAAA"))
    step = mfa.authenticate_code("mallory", code_for(mfa, uri),
                                 RequestContext(adapter="pam", fail_mode="safe"))
    assert step.outcome is Outcome.UNAVAILABLE and not step.allowed
