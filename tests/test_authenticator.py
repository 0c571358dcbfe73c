"""`unified-mfa-authenticator`, the reference Protect app, as its users run it.

Every test runs the installed console script in a subprocess with its own state directory.
The first part needs no service: TOTP-only enrollments (any otpauth key), codes checked
against the stock `oathtool`, QR images decoded by the app itself, the private state file and
the refusals (one line on stderr, exit 2). The second part (`e2e`) runs a real
`unified-mfa serve` on a free loopback port with a fresh server home and drives real logins
with `unified-mfa auth`: one scan of the unified QR registers push and TOTP (R05), a push is
approved only with the number from the login screen (S03), "deny — not me" blocks further
pushes (S04), and a merge delivers the TOTP to an already registered push device (R10).

Time is real, so nothing here moves a clock; the only waiting is for the service process to
start listening and for the app's own long-poll.
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from PIL import Image

from pam_unified_mfa.enrollment_uri import render
from tests.helpers import free_port, stop_process

APP = Path(sys.executable).with_name("unified-mfa-authenticator")
SERVER = Path(sys.executable).with_name("unified-mfa")

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
TOTP_URI = f"otpauth://totp/Acme:bob?secret={SECRET}&issuer=Acme"
OTHER_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
OTHER_URI = f"otpauth://totp/Initech:bob?secret={OTHER_SECRET}&issuer=Initech"


# -- helpers ----------------------------------------------------------------------------------


def oathtool_at(secret: str, when: float) -> str:
    """The code the stock `oathtool` shows at Unix time `when`."""
    out = subprocess.run(["oathtool", "--totp", "-b", secret, "-N", f"@{int(when)}"],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int,
                          *words: str) -> str:
    """Exit code as given, exactly one line on stderr naming `words`, no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("unified-mfa-authenticator"), lines[0]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@dataclass
class App:
    """The authenticator with its own state directory, run without a terminal on stdin."""

    home: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("UNIFIED_MFA_AUTHENTICATOR_HOME", None)
        return env

    def __call__(self, *args: str, home_option: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(APP), *args, *(["--home", str(self.home)] if home_option else [])]
        return subprocess.run(command, env=self.env(), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def code_matches(self, secret: str, *account: str) -> None:
        """`code` shows what oathtool shows for `secret` (at the start or end of the call)."""
        before = time.time()
        shown = self.ok("code", *account).stdout.strip()
        after = time.time()
        assert shown in {oathtool_at(secret, before), oathtool_at(secret, after)}


@pytest.fixture
def app(tmp_path: Path) -> App:
    """A state directory that does not exist yet, as on a fresh install."""
    return App(tmp_path / "authenticator")


# -- without a service ------------------------------------------------------------------------


def test_enroll_totp_only_uri_then_code_is_what_oathtool_shows(app: App) -> None:
    enrolled = app.ok("enroll", TOTP_URI)
    assert "Acme:bob" in enrolled.stdout
    assert "TOTP" in enrolled.stdout and "push" not in enrolled.stdout
    app.code_matches(SECRET)


def test_enroll_json_reports_account_issuer_and_kind(app: App) -> None:
    data = app.json("enroll", TOTP_URI)
    assert data["account"] == "Acme:bob"
    assert data["issuer"] == "Acme" and data["user"] == "bob"
    assert data["enrolled"] == "TOTP" and data["device_id"] is None


def test_state_file_is_private_mode_0600_in_a_0700_home(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    assert stat.S_IMODE(app.home.stat().st_mode) == 0o700
    files = [p for p in app.home.iterdir() if p.is_file()]
    assert files, "no state written"
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_state_file_made_readable_by_others_is_set_back_to_0600(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    state = app.home / "accounts.json"
    state.chmod(0o644)
    app.ok("list")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_list_shows_totp_parameters_but_never_the_secret(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    text = app.ok("list")
    data = app.json("list")
    assert SECRET not in text.stdout + text.stderr
    assert SECRET not in json.dumps(data)
    assert data == [{
        "account": "Acme:bob", "issuer": "Acme", "user": "bob", "kind": "TOTP", "push": None,
        "totp": {"algorithm": "SHA1", "digits": 6, "period": 30},
    }]


def test_r05_enroll_from_a_png_qr_code_stores_the_same_key_as_the_uri(
    app: App, tmp_path: Path,
) -> None:
    uri = f"otpauth://totp/Acme:carol?secret={OTHER_SECRET}&issuer=Acme&algorithm=SHA1" \
          "&digits=6&period=30"
    png = tmp_path / "qr.png"
    png.write_bytes(render(uri, "png"))
    assert "Acme:carol" in app.ok("enroll", "--qr", str(png)).stdout
    app.code_matches(OTHER_SECRET, "Acme:carol")


def test_an_image_without_a_qr_code_is_a_one_line_error_and_stores_nothing(
    app: App, tmp_path: Path,
) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), color=255).save(blank)
    assert_one_line_error(app("enroll", "--qr", str(blank)), 2, "no QR code")
    assert_one_line_error(app("code"), 2, "no accounts")


def test_malformed_uri_is_refused_in_one_line_without_echoing_it(app: App) -> None:
    bad = f"otpauth://totp/Acme:bob?secret={SECRET}&issuer=Other"
    line = assert_one_line_error(app("enroll", bad), 2, "not an enrollment URI")
    assert SECRET not in line
    assert_one_line_error(app("enroll", "https://example.com/"), 2, "not an enrollment URI")
    assert not (app.home / "accounts.json").exists()


def test_code_takes_a_bare_user_only_when_it_is_unambiguous(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    app.code_matches(SECRET, "bob")
    app.ok("enroll", OTHER_URI)
    assert_one_line_error(app("code"), 2, "several accounts")
    assert_one_line_error(app("code", "bob"), 2, "issuer:user")
    app.code_matches(OTHER_SECRET, "Initech:bob")
    app.code_matches(SECRET, "Acme:bob")


def test_delete_without_yes_and_without_a_terminal_refuses_and_keeps_the_account(
    app: App,
) -> None:
    app.ok("enroll", TOTP_URI)
    assert_one_line_error(app("delete", "Acme:bob"), 2, "lock you out", "--yes")
    app.code_matches(SECRET, "Acme:bob")


def _delete_on_a_terminal(app: App, account: str, typed: str) -> subprocess.CompletedProcess[str]:
    """Run `delete` with a pseudo-terminal on stdin on which the user types `typed`."""
    master, slave = pty.openpty()
    try:
        os.write(master, typed.encode() + b"\n")
        return subprocess.run([str(APP), "delete", account, "--home", str(app.home)],
                              env=app.env(), stdin=slave, capture_output=True, text=True,
                              timeout=60)
    finally:
        os.close(slave)
        os.close(master)


def test_delete_on_a_terminal_warns_and_deletes_only_after_typed_confirmation(
    app: App,
) -> None:
    app.ok("enroll", TOTP_URI)
    declined = _delete_on_a_terminal(app, "Acme:bob", "no")
    assert declined.returncode == 2 and "lock you out" in declined.stderr
    app.code_matches(SECRET, "Acme:bob")
    confirmed = _delete_on_a_terminal(app, "Acme:bob", "delete")
    assert confirmed.returncode == 0, confirmed.stderr
    assert app.json("list") == []


def test_delete_with_yes_removes_only_that_account_and_warns(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    app.ok("enroll", OTHER_URI)
    deleted = app.ok("delete", "Acme:bob", "--yes")
    assert "Acme:bob" in deleted.stdout and "admin" in deleted.stdout
    assert [a["account"] for a in app.json("list")] == ["Initech:bob"]
    app.code_matches(OTHER_SECRET)


def test_state_directory_comes_from_the_environment_without_home_option(
    app: App, tmp_path: Path,
) -> None:
    env = {**app.env(), "UNIFIED_MFA_AUTHENTICATOR_HOME": str(app.home)}
    subprocess.run([str(APP), "enroll", TOTP_URI], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    assert (app.home / "accounts.json").exists()
    app.code_matches(SECRET)


def test_push_enrollment_with_the_service_unreachable_stores_nothing(app: App) -> None:
    uri = (f"otpauth://totp/Acme:dave?secret={SECRET}&issuer=Acme"
           f"&enroll_url=http%3A%2F%2F127.0.0.1%3A{free_port()}&enroll_token=tok123")
    assert_one_line_error(app("enroll", uri), 2, "push registration failed", "nothing")
    assert_one_line_error(app("code"), 2, "no accounts")


def test_pending_without_a_push_account_is_a_one_line_error(app: App) -> None:
    app.ok("enroll", TOTP_URI)
    assert_one_line_error(app("pending"), 2, "no push accounts")
    assert_one_line_error(app("approve", "p1", "--number", "12"), 2, "no push accounts")


def test_approve_refuses_a_number_that_is_not_digits(app: App) -> None:
    result = app("approve", "p1", "--number", "twelve")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


# -- against a real service -------------------------------------------------------------------


@dataclass
class Service:
    """A running `unified-mfa serve` and the admin CLI on the same home."""

    home: Path
    url: str
    process: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {**os.environ, "UNIFIED_MFA_HOME": str(self.home)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVER), *args], env=self.env(), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=120)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def merge(self) -> None:
        self.ok("admin", "add", "boss", "--role", "billing")
        self.ok("policy", "merge", "--as", "boss", "--yes")

    def enroll(self, app: App, user: str, tmp_path: Path, kind: str | None = None) -> Any:
        """Add `user`, render their enrollment QR as a PNG and scan it with the app."""
        self.ok("user", "add", user)
        png = tmp_path / f"{user}.png"
        self.ok("enroll", user, *(["--kind", kind] if kind else []), "--format", "png",
                "--output", str(png))
        return app.json("enroll", "--qr", str(png))

    def push_login(self, user: str) -> PushLogin:
        process = subprocess.Popen([str(SERVER), "auth", user, "--push", "--json"],
                                   env=self.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        return PushLogin(process)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class PushLogin:
    """`unified-mfa auth USER --push --json`: the login screen showing the number."""

    process: subprocess.Popen[str]

    def number(self) -> str:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        first = stdout.readline()
        assert first, self.process.stderr.read() if self.process.stderr else ""
        return str(json.loads(first)["number"])

    def result(self) -> tuple[int, dict[str, Any]]:
        out, _ = self.process.communicate(timeout=90)
        lines = [line for line in out.splitlines() if line.strip()]
        return self.process.returncode, json.loads(lines[-1])


def _wait_until_healthy(service: Service, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"unified-mfa serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if requests.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        # Waiting for a real process to bind its port, not for a time-based rule.
        time.sleep(0.1)
    pytest.fail(f"unified-mfa serve did not answer /healthz: {log.read_text()[-2000:]}")


@pytest.fixture
def service_settings() -> str:
    """TOML appended to the service's settings; a test parametrizes it to change one rule."""
    return ""


@pytest.fixture
def service(tmp_path: Path, service_settings: str) -> Iterator[Service]:
    home = tmp_path / "server"
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "UNIFIED_MFA_HOME": str(home)}
    subprocess.run([str(SERVER), "init", "--public-url", url], env=env, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    if service_settings:
        with (home / "unified-mfa.toml").open("a", encoding="utf-8") as settings:
            settings.write("\n" + service_settings + "\n")
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SERVER), "serve"], env=env, stdout=sink, stderr=sink,
                                   stdin=subprocess.DEVNULL)
    running = Service(home, url, process)
    try:
        _wait_until_healthy(running, log)
        yield running
    finally:
        running.stop()


def _pending_push(app: App, number: str) -> dict[str, Any]:
    pushes = app.json("pending", "--wait", "10")
    assert len(pushes) == 1, pushes
    push: dict[str, Any] = pushes[0]
    assert number in push["choices"] and len(push["choices"]) == 3
    return push


@pytest.mark.e2e
def test_r05_one_scan_of_the_unified_qr_registers_push_and_its_totp_logs_in(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    enrolled = service.enroll(app, "alice", tmp_path)
    assert enrolled["enrolled"] == "push + TOTP" and enrolled["device_id"]
    [account] = app.json("list")
    assert account["push"] == {"device_id": enrolled["device_id"], "service_url": service.url}
    assert account["totp"] == {"algorithm": "SHA1", "digits": 6, "period": 30}
    code = app.ok("code", "alice").stdout.strip()
    assert service.cli("auth", "alice", "--code", code).returncode == 0


@pytest.mark.e2e
def test_s03_approving_with_the_number_on_the_login_screen_accepts_the_login(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    number = login.number()
    push = _pending_push(app, number)
    assert push["user"] == "alice" and push["account"].endswith(":alice")
    assert push["expires_at"] > push["created_at"]
    shown = app.ok("pending").stdout
    assert push["id"] in shown and all(choice in shown for choice in push["choices"])
    approved = app.ok("approve", push["id"], "--number", number)
    assert approved.stdout.split()[0] == "approved"
    code, result = login.result()
    assert code == 0 and result["accepted"] is True


@pytest.mark.e2e
def test_s03_approving_with_a_wrong_number_exits_1_and_the_login_is_rejected(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    number = login.number()
    push = _pending_push(app, number)
    decoy = next(c for c in push["choices"] if c != number)
    wrong = app("approve", push["id"], "--number", decoy)
    assert wrong.returncode == 1, (wrong.stdout, wrong.stderr)
    assert wrong.stdout.startswith("wrong_number")
    code, result = login.result()
    assert code == 1 and result["accepted"] is False


@pytest.mark.e2e
def test_s03_an_answer_to_an_already_decided_push_is_a_one_line_error(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    number = login.number()
    push = _pending_push(app, number)
    app.ok("approve", push["id"], "--number", number)
    assert login.result()[0] == 0
    assert_one_line_error(app("approve", push["id"], "--number", number), 2, "HTTP 4")


@pytest.mark.e2e
@pytest.mark.parametrize("service_settings", ['[push]\ntimeout = "2s"'])
def test_s03_an_unanswered_push_exits_1_at_its_deadline(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    login.number()
    code, result = login.result()
    assert code == 1 and result["accepted"] is False and "expired" in result["message"]


@pytest.mark.e2e
@pytest.mark.parametrize("service_settings", ["[push]\nmax_per_window = 1"])
def test_s04_the_push_rate_limit_trips_for_the_second_push(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    first = service.push_login("alice")
    push = _pending_push(app, first.number())
    app.ok("deny", push["id"])
    assert first.result()[0] == 1
    second = service.cli("auth", "alice", "--push", "--json")
    assert second.returncode == 1
    assert "Too many push requests" in second.stderr


@pytest.mark.e2e
def test_deny_rejects_the_login(service: Service, app: App, tmp_path: Path) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    push = _pending_push(app, login.number())
    assert app.ok("deny", push["id"]).stdout.split()[0] == "denied"
    code, result = login.result()
    assert code == 1 and result["accepted"] is False


@pytest.mark.e2e
def test_s04_deny_not_me_rejects_the_login_and_blocks_the_next_push(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    login = service.push_login("alice")
    push = _pending_push(app, login.number())
    assert app.ok("deny", push["id"], "--not-me").stdout.split()[0] == "denied_not_me"
    assert login.result()[0] == 1
    blocked = service.cli("auth", "alice", "--push", "--json")
    assert blocked.returncode == 1
    assert app.json("pending") == []


@pytest.mark.e2e
def test_pending_wait_returns_as_soon_as_a_push_arrives(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    started = time.monotonic()
    waiting = subprocess.Popen([str(APP), "pending", "--wait", "50", "--json",
                                "--home", str(app.home)], env=app.env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    login = service.push_login("alice")
    number = login.number()
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err
    assert time.monotonic() - started < 40, "pending did not return before its wait was up"
    [push] = json.loads(out)
    assert number in push["choices"]
    app.ok("approve", push["id"], "--number", number)
    assert login.result()[0] == 0


@pytest.mark.e2e
def test_r10_list_stores_the_totp_a_merge_sends_to_a_push_device(
    service: Service, app: App, tmp_path: Path,
) -> None:
    enrolled = service.enroll(app, "alice", tmp_path, kind="push")
    assert enrolled["enrolled"] == "push"
    assert_one_line_error(app("code", "alice"), 2, "no TOTP")
    service.merge()
    first = app.ok("list")
    assert "migrated" in first.stdout
    [account] = app.json("list")
    assert account["kind"] == "push + TOTP" and account["totp"] is not None
    again = app.ok("list")
    assert "migrated" not in again.stdout  # acknowledged: delivered once
    code = app.ok("code", "alice").stdout.strip()
    assert service.cli("auth", "alice", "--code", code).returncode == 0


@pytest.mark.e2e
def test_list_with_the_service_down_shows_local_accounts_and_exits_0(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    service.stop()
    result = app("list", "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    [account] = json.loads(result.stdout)
    assert account["kind"] == "push + TOTP"


@pytest.mark.e2e
def test_separated_push_only_qr_registers_the_device_for_push(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.enroll(app, "alice", tmp_path, kind="push")
    login = service.push_login("alice")
    number = login.number()
    push = _pending_push(app, number)
    app.ok("approve", push["id"], "--number", number)
    assert login.result()[0] == 0


@pytest.mark.e2e
def test_a_used_enrollment_qr_cannot_register_a_second_device(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    second = App(tmp_path / "second-phone")
    refused = second("enroll", "--qr", str(tmp_path / "alice.png"))
    assert_one_line_error(refused, 2, "push registration failed", "HTTP 400")
    assert not (second.home / "accounts.json").exists()


@pytest.mark.e2e
def test_with_two_push_accounts_approve_finds_the_account_the_request_is_for(
    service: Service, app: App, tmp_path: Path,
) -> None:
    service.merge()
    service.enroll(app, "alice", tmp_path)
    service.enroll(app, "bob", tmp_path)
    login = service.push_login("bob")
    number = login.number()
    push = _pending_push(app, number)
    assert push["user"] == "bob" and push["account"].endswith(":bob")
    assert app.ok("approve", push["id"], "--number", number).stdout.split()[0] == "approved"
    code, result = login.result()
    assert code == 0 and result["user"] == "bob" and result["accepted"] is True
