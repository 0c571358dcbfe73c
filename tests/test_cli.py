"""The `unified-mfa` command line, end to end.

Every test runs the installed console script in a subprocess against a fresh home
($UNIFIED_MFA_HOME), once on the embedded SQLite default and once on PostgreSQL (`--store`).
Time is real here, so codes come from the stock `oathtool` binary; a second login uses the next
time step (`-N "now + 30 seconds"`), which the accepted window of one step covers, so no test
sleeps. Set-up that is not the behaviour under test goes through the core (`MFA`) to keep the
number of subprocesses down; what a test asserts always comes from the command line.

Exit codes: 0 success, 1 rejected authentication, 2 anything refused or wrong; every failure
prints exactly one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pam_unified_mfa.core import MFA
from pam_unified_mfa.core.context import CLI
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.home import init_home
from pam_unified_mfa.settings import KEY_FILE, SETTINGS_FILE
from tests.conftest import BACKENDS, fresh_postgres

EXE = Path(sys.executable).with_name("unified-mfa")
MAX_FAILURES = 5  # the default [throttle] max_failures


# -- codes from a real authenticator ----------------------------------------------------------


def secret_of(uri: str) -> str:
    secret = parse_uri(uri).totp_secret
    assert secret is not None
    return secret


def oathtool(secret: str, offset: int = 0, window: int = 0) -> list[str]:
    """Codes `oathtool` shows `offset` seconds from now (and `window` further steps)."""
    when = f"now {'+' if offset >= 0 else '-'} {abs(offset)} seconds"
    out = subprocess.run(
        ["oathtool", "--totp", "-b", secret, "-N", when, "-w", str(window)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return out.split()


def code(uri: str, offset: int = 0) -> str:
    """The current code of an enrollment URI; offset=30 is the next step (a fresh login)."""
    return oathtool(secret_of(uri), offset)[0]


def wrong_code(uri: str) -> str:
    """A six-digit code that no step near now accepts."""
    valid = set(oathtool(secret_of(uri), -60, window=4))
    candidate = int(code(uri))
    while f"{candidate:06d}" in valid:
        candidate = (candidate + 111_111) % 1_000_000
    return f"{candidate:06d}"


# -- the command line under test ---------------------------------------------------------------


@dataclass
class Cli:
    home: Path
    store: str | None  # None: the embedded SQLite default inside the home

    def env(self) -> dict[str, str]:
        return {**os.environ, "UNIFIED_MFA_HOME": str(self.home)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `unified-mfa ARGS` with no terminal on stdin, as a script or a cron job would."""
        command = [str(EXE), *args]
        if self.store:
            command += ["--store", self.store]
        return subprocess.run(command, env=self.env(), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    @contextmanager
    def core(self) -> Iterator[MFA]:
        """The same home and store through the core, for set-up and for checking state."""
        mfa = MFA.open(self.home, store=self.store)
        try:
            yield mfa
        finally:
            mfa.close()


def assert_refused(result: subprocess.CompletedProcess[str], exit_code: int,
                   *words: str) -> str:
    """Exit code as given, exactly one line on stderr naming `words`, no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded SQLite default inside the home."""
    return None if request.param == "sqlite" else fresh_postgres()


@pytest.fixture
def cli(tmp_path: Path, store: str | None) -> Cli:
    """A home that does not exist yet."""
    return Cli(tmp_path / "home", store)


@pytest.fixture
def ready(cli: Cli) -> Cli:
    """An initialised home (what `unified-mfa init` makes)."""
    init_home(cli.home, None, cli.store)
    return cli


def add_enrolled(cli: Cli, user: str = "alice", confirm: bool = True) -> tuple[str, str]:
    """A user with a Protect TOTP factor; (uri, factor id). `confirm` proves the first code."""
    with cli.core() as mfa:
        mfa.add_user(user)
        result = mfa.enroll(user)
        if confirm:
            assert mfa.authenticate_code(user, code(result.uri), CLI).granted
    return result.uri, result.factor_ids[0]


def add_admin(cli: Cli, name: str, billing: bool) -> None:
    with cli.core() as mfa:
        mfa.add_admin(name, roles=("billing",) if billing else ())


# -- the acceptance path -----------------------------------------------------------------------


def test_s01_a_code_enrolled_on_the_command_line_logs_in_once(cli: Cli) -> None:
    cli.ok("init")
    cli.ok("user", "add", "alice")
    uri = cli.ok("enroll", "alice", "--format", "uri").stdout.strip()
    assert uri.startswith("otpauth://totp/")
    current = code(uri)

    assert cli("auth", "alice", "--code", current).returncode == 0
    replay = cli("auth", "alice", "--code", current)

    assert_refused(replay, 1, "rejected")


def test_s02_failures_past_the_limit_lock_the_user_and_refuse_a_correct_code(
    ready: Cli,
) -> None:
    uri, _ = add_enrolled(ready)
    bad = wrong_code(uri)
    for _ in range(MAX_FAILURES):
        assert_refused(ready("auth", "alice", "--code", bad), 1)

    locked_out = ready("auth", "alice", "--code", code(uri, 30))

    assert_refused(locked_out, 1, "Too many failed attempts")
    records = ready.json("audit", "tail", "-n", "50")
    assert any(r["action"] == "user.locked" and r["subject"] == "alice" for r in records)


def test_s06_unknown_user_is_rejected_exactly_like_a_wrong_code(ready: Cli) -> None:
    uri, _ = add_enrolled(ready)

    unknown = ready("auth", "nobody", "--code", "123456", "--json")
    wrong = ready("auth", "alice", "--code", wrong_code(uri), "--json")

    assert unknown.returncode == wrong.returncode == 1
    assert assert_refused(unknown, 1) == assert_refused(wrong, 1)
    shown = [json.loads(r.stdout) for r in (unknown, wrong)]
    for data in shown:
        del data["user"]
    assert shown[0] == shown[1]


# -- organisation policy -----------------------------------------------------------------------


def test_r02_merge_by_an_admin_without_billing_is_refused_and_changes_nothing(
    ready: Cli,
) -> None:
    add_admin(ready, "ops", billing=False)
    before = ready.json("policy", "show")

    refused = ready("policy", "merge", "--as", "ops", "--yes")

    assert_refused(refused, 2, "billing")
    assert ready.json("policy", "show") == before


def test_r03_merge_without_yes_and_without_a_terminal_changes_nothing(ready: Cli) -> None:
    add_admin(ready, "boss", billing=True)
    before = ready.json("policy", "show")

    unconfirmed = ready("policy", "merge", "--as", "boss")

    assert_refused(unconfirmed, 2, "--yes")
    assert "separated -> unified" in unconfirmed.stdout  # the first step shows the change
    assert ready.json("policy", "show") == before


def test_r04_merge_by_billing_admin_applies_and_the_old_factor_still_logs_in(
    ready: Cli,
) -> None:
    uri, _ = add_enrolled(ready)
    add_admin(ready, "boss", billing=True)

    merged = ready.json("policy", "merge", "--as", "boss", "--yes")

    assert merged["policy"]["mode"] == "unified"
    assert ready("auth", "alice", "--code", code(uri, 30)).returncode == 0


# -- home, key file and settings ---------------------------------------------------------------


def test_init_is_idempotent_and_never_replaces_the_key_file(cli: Cli) -> None:
    first = cli.json("init")
    key = cli.home / KEY_FILE
    key_bytes = key.read_bytes()
    with cli.core() as mfa:
        mfa.add_user("alice")

    second = cli.json("init")

    assert (first["created_key"], second["created_key"]) == (True, False)
    assert key.read_bytes() == key_bytes
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with cli.core() as mfa:
        assert [u.name for u in mfa.list_users()] == ["alice"]


def test_home_option_wins_over_the_environment(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other-home"

    cli.ok("init", "--home", str(other))

    assert (other / KEY_FILE).is_file()
    assert not cli.home.exists()


def test_an_unknown_settings_key_stops_every_command(ready: Cli) -> None:
    settings = ready.home / SETTINGS_FILE
    settings.write_text('fail_mood = "safe"\n' + settings.read_text())

    for args in (("init",), ("user", "list"), ("policy", "show"), ("enroll", "alice"),
                 ("auth", "alice", "--code", "123456"), ("audit", "tail"), ("key", "rotate")):
        assert_refused(ready(*args), 2, "fail_mood")


def test_a_settings_value_of_the_wrong_type_is_refused(ready: Cli) -> None:
    settings = ready.home / SETTINGS_FILE
    text = settings.read_text()
    assert "max_failures = 5" in text
    settings.write_text(text.replace("max_failures = 5", 'max_failures = "50"'))

    assert_refused(ready("user", "list"), 2, "throttle.max_failures")


def test_settings_that_would_break_enrollment_qr_codes_are_refused(ready: Cli) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")
    settings = ready.home / SETTINGS_FILE
    settings.write_text(settings.read_text().replace('issuer = "Unified MFA"',
                                                     'issuer = "Acme: VPN"'))

    assert_refused(ready("init", "--public-url", "https://ops:pw@mfa.example.test"), 2,
                   "public_url")
    assert_refused(ready("enroll", "alice"), 2, "issuer")


# -- enrollment output -------------------------------------------------------------------------


def test_r05_unified_png_decodes_to_the_printed_uri_and_its_key_logs_in(
    ready: Cli, tmp_path: Path,
) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")
        mfa.add_admin("boss", roles=("billing",))
        mfa.confirm("boss", mfa.preview("boss", "merge").confirmation)
    png = tmp_path / "alice.png"

    shown = ready.json("enroll", "alice", "--format", "png", "--output", str(png))

    scanned = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
    assert shown["kind"] == "unified"
    assert scanned == shown["uri"]
    enrollment = parse_uri(scanned)  # one QR: push registration and a standard TOTP key
    assert scanned.startswith("otpauth://totp/")
    assert enrollment.service_url is not None and enrollment.token is not None
    assert ready("auth", "alice", "--code", code(scanned)).returncode == 0


def test_enroll_svg_output_writes_an_svg_file(ready: Cli, tmp_path: Path) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")
    svg = tmp_path / "alice.svg"

    ready.ok("enroll", "alice", "--format", "svg", "--output", str(svg))

    assert "<svg" in svg.read_text()


def test_enroll_terminal_format_prints_a_text_qr_code_and_the_uri(ready: Cli) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")

    shown = ready.ok("enroll", "alice", "--format", "terminal").stdout

    lines = shown.splitlines()
    assert any("█" in line or "▀" in line for line in lines[:-1])
    assert lines[-1].startswith("otpauth://totp/")


def test_enroll_to_an_unwritable_output_is_one_line_error(ready: Cli, tmp_path: Path) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")

    refused = ready("enroll", "alice", "--format", "png", "--output",
                    str(tmp_path / "missing" / "alice.png"))

    assert_refused(refused, 2, "alice.png")


# -- users, factors, bypass codes --------------------------------------------------------------


def test_user_show_lists_factors_and_never_the_secret(ready: Cli) -> None:
    uri, factor_id = add_enrolled(ready)
    secret = secret_of(uri)

    shown = ready.ok("user", "show", "alice", "--json").stdout
    text = ready.ok("user", "show", "alice").stdout

    data = json.loads(shown)
    assert [(f["id"], f["kind"], f["state"]) for f in data["factors"]] == [
        (factor_id, "protect_totp", "active")]
    assert factor_id in text
    for output in (shown, text):
        assert secret not in output
        assert "secret" not in output.lower()


def test_bypass_codes_are_printed_and_each_logs_in_once(ready: Cli) -> None:
    with ready.core() as mfa:
        mfa.add_user("alice")
        mfa.add_admin("boss")

    issued = ready.ok("bypass", "issue", "alice", "--as", "boss", "--count", "2").stdout

    codes = [line for line in issued.splitlines() if re.fullmatch(r"\d{10}", line)]
    assert len(codes) == 2
    assert ready("auth", "alice", "--code", codes[0]).returncode == 0
    assert_refused(ready("auth", "alice", "--code", codes[0]), 1)
    assert ready("auth", "alice", "--code", codes[1]).returncode == 0


def test_r12_deleting_the_last_factor_is_refused_with_a_warning(ready: Cli) -> None:
    _, factor_id = add_enrolled(ready)

    refused = ready("factor", "delete", "alice", factor_id, "--yes")

    assert_refused(refused, 2, factor_id, "last working factor", "lock")
    with ready.core() as mfa:
        assert [(f.id, f.state) for f in mfa.show_user("alice").factors] == [
            (factor_id, "active")]


# -- resets --------------------------------------------------------------------------------------


def test_r07_reset_with_a_current_protect_code_prints_a_new_working_uri(ready: Cli) -> None:
    old_uri, _ = add_enrolled(ready)

    new_uri = ready.ok("reset", "alice", "--code", code(old_uri, 30)).stdout.strip()

    assert new_uri.startswith("otpauth://totp/")
    assert parse_uri(new_uri).account == "alice"
    assert secret_of(new_uri) != secret_of(old_uri)
    assert ready("auth", "alice", "--code", code(new_uri)).returncode == 0


def test_r07_admin_reset_leaves_the_user_to_enroll_at_next_login(ready: Cli) -> None:
    add_enrolled(ready)
    add_admin(ready, "boss", billing=False)

    reset = ready.ok("reset", "alice", "--as", "boss").stdout

    assert "next login" in reset
    with ready.core() as mfa:
        view = mfa.show_user("alice")
        trail = mfa.audit_tail(5)
    assert view.must_enroll
    assert view.factors == ()
    assert any(e.action == "factor.reset" and e.actor == "boss" and e.subject == "alice"
               for e in trail)


@pytest.mark.parametrize("how", [(), ("--as", "boss", "--code", "123456")],
                         ids=["neither", "both"])
def test_reset_needs_exactly_one_of_as_or_code(ready: Cli, how: tuple[str, ...]) -> None:
    assert_refused(ready("reset", "alice", *how), 2, "--as", "--code")


# -- keys and error paths ------------------------------------------------------------------------


def test_key_rotate_keeps_every_factor_working(ready: Cli) -> None:
    uri, _ = add_enrolled(ready)

    rotated = ready.json("key", "rotate")

    assert rotated["reencrypted"] >= 1
    assert json.loads((ready.home / KEY_FILE).read_text())["active"] == rotated["key_id"]
    assert ready("auth", "alice", "--code", code(uri, 30)).returncode == 0


def test_every_error_path_prints_one_line_and_exits_2(ready: Cli) -> None:
    refusals = {
        ("user", "show", "nobody"): "nobody",
        ("user", "add", "bad name"): "invalid name",
        ("enroll", "nobody"): "nobody",
        ("policy", "merge", "--as", "nobody", "--yes"): "nobody",
        ("bypass", "issue", "nobody", "--as", "nobody"): "nobody",
        ("auth", "alice"): "--code",
        ("audit", "tail", "-n", "-1"): "-n",
        ("no-such-command",): "no-such-command",
        ("user", "add"): "name",
    }
    for args, word in refusals.items():
        assert_refused(ready(*args), 2, word)


def test_an_uninitialised_home_is_one_line_error(cli: Cli) -> None:
    assert_refused(cli("user", "list"), 2, "unified-mfa init")


def test_an_unreachable_store_is_one_line_error_without_the_password(ready: Cli) -> None:
    result = subprocess.run(
        [str(EXE), "user", "list", "--store", "postgresql://u:hunter2@127.0.0.1:1/none"],
        env=ready.env(), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )

    line = assert_refused(result, 2, "store unavailable")
    assert "hunter2" not in line
