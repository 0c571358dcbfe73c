"""Logins through the real PAM module and the real daemon: the whole chain a Linux host runs.

`pam_unified_mfa.so` is built with its Makefile into a temporary directory and stacked after
`pam_unix.so` in a throwaway /etc/pam.d service, for a throwaway Linux user with a password;
`unified-mfa pamd` runs as a subprocess on a temporary socket. Three PAM applications drive it:
pamtester, libpam through python-pam's bindings with a conversation that answers by prompt text,
and a real OpenSSH server (keyboard-interactive, driven by paramiko), which holds informational
messages back until the next prompt: the push number must reach the user inside the prompt.

Needs root, the Debian packages build-essential, libpam0g-dev, pamtester, openssh-server and
openssh-client, and the PyPI packages python-pam and paramiko; a missing one fails the test.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest

from pam_unified_mfa.core import MFA
from tests.helpers import (
    Device,
    LinuxUser,
    build_pam_module,
    free_port,
    now_code,
    require_tool,
    secret_of,
    stop_process,
    throwaway_linux_user,
    wrong_code,
)

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "pam_unified_mfa" / "pam"
PAM_D = Path("/etc/pam.d")
TIMEOUT = 30.0
PAM_SUCCESS, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL = 0, 7, 9
PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON = 1, 2
PUSH_PROMPT = re.compile(r"Approve the push on your device by choosing (\d+), then press Enter")

Answer = Callable[[str], str]


# -- the pieces: module, Linux user, daemon, PAM service --------------------------------------


@pytest.fixture(scope="module")
def module_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the login tests need root: they add a Linux user and /etc/pam.d services")
    return build_pam_module(tmp_path_factory.mktemp("pam-build"))


@pytest.fixture(scope="module")
def linux_user(module_so: Path) -> Iterator[LinuxUser]:
    with throwaway_linux_user() as user:
        yield user


class Output:
    """A subprocess's stderr, read by a thread; `wait_for` blocks until a line appears."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<closed>")
            self.changed.notify_all()

    def wait_for(self, text: str) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: any(text in line or line == "<closed>" for line in self.lines),
                TIMEOUT) and any(text in line for line in self.lines)

    @property
    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)


@dataclass
class Pamd:
    socket: Path
    log: Output
    process: subprocess.Popen[str]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short (a Unix socket path holds at most 107 bytes); root-owned and 0700, as the module
    # requires of the socket's directory.
    path = Path(tempfile.mkdtemp(prefix="umfa-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_pamd(home: Path, store_url: str, path: Path) -> Iterator[Pamd]:
    """`unified-mfa pamd` itself, as a subprocess of the CLI, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pam_unified_mfa.cli.main", "pamd", "--home", str(home),
         "--store", store_url, "--socket", str(path)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        log = Output(process)
        assert log.wait_for("pamd: listening on"), log.text
        yield Pamd(path, log, process)
    finally:
        stop_process(process)


@pytest.fixture
def pamd(home: Path, store_url: str, run_dir: Path) -> Iterator[Pamd]:
    with running_pamd(home, store_url, run_dir / "run" / "pamd.sock") as daemon:
        yield daemon


@pytest.fixture
def device(core: MFA, secret: str, linux_user: LinuxUser) -> Device:
    """A push device registered through the core, besides the TOTP."""
    return Device(core, core.enroll(linux_user.name, "push").uri)


@contextlib.contextmanager
def pam_service(name: str, module: Path, options: str) -> Iterator[str]:
    """/etc/pam.d/NAME: the password, then the second factor; removed afterwards."""
    path = PAM_D / name
    path.write_text(
        "# a throwaway service of the Unified MFA tests\n"
        "auth     required pam_unix.so\n"
        f"auth     required {module} {options}\n"
        "account  required pam_unix.so\n"
        "session  required pam_permit.so\n"
        "password required pam_deny.so\n", encoding="utf-8")
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


def options(pamd_socket: Path, failmode: str = "secure") -> str:
    return f"socket={pamd_socket} failmode={failmode} timeout={int(TIMEOUT)}"


@pytest.fixture
def service(module_so: Path, pamd: Pamd) -> Iterator[str]:
    with pam_service(f"umfa-test-{secrets.token_hex(4)}", module_so, options(pamd.socket)) as name:
        yield name


def by_prompt(user: LinuxUser, code: str | Callable[[], str], push: Answer | None = None,
              seen: list[str] | None = None) -> Answer:
    """Answers as a user would, by what the prompt says; anything else fails the test."""
    def answer(prompt: str) -> str:
        if seen is not None:
            seen.append(prompt)
        last_line = prompt.rstrip().splitlines()[-1] if prompt.strip() else ""
        if last_line.startswith("Password"):
            return user.password
        if PUSH_PROMPT.search(last_line) and push is not None:
            return push(last_line)
        if last_line.startswith(("Passcode", "Enter the code")):
            return code() if callable(code) else code
        raise AssertionError(f"unexpected prompt {prompt!r}")
    return answer


# -- pamtester ----------------------------------------------------------------------------------


def pamtester(service: str, user: LinuxUser, *answers: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("pamtester", "pamtester")
    return subprocess.run([tool, "-v", service, user.name, "authenticate"],
                          input="".join(a + "\n" for a in answers), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


@pytest.mark.e2e
def test_pamtester_password_and_totp_are_accepted(service: str, linux_user: LinuxUser,
                                                  core: MFA, secret: str) -> None:
    result = pamtester(service, linux_user, linux_user.password, now_code(core, secret, 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "successfully authenticated" in result.stderr + result.stdout
    assert "Passcode: " in result.stdout + result.stderr


@pytest.mark.e2e
def test_pamtester_wrong_code_is_rejected(service: str, linux_user: LinuxUser, core: MFA,
                                          secret: str) -> None:
    wrong = wrong_code(core, secret)
    tries = core.settings.dialogue.max_attempts
    result = pamtester(service, linux_user, linux_user.password, *[wrong] * tries)
    assert result.returncode != 0
    assert "Authentication failure" in result.stderr + result.stdout
    assert "Access denied" in result.stderr + result.stdout


# -- libpam through python-pam ------------------------------------------------------------------


def pam_authenticate(service: str, user: str, answer: Answer) -> int:
    """pam_start/pam_authenticate/pam_end with python-pam's libpam bindings and a conversation
    that answers each prompt by its text (python-pam's own one answers the password only)."""
    internals: Any = importlib.import_module("pam.__internals")
    pam = internals.PamAuthenticator()

    @internals.conv_func  # type: ignore[untyped-decorator]
    def conversation(count: int, messages: Any, p_response: Any, _app_data: Any) -> int:
        responses = ctypes.cast(pam.calloc(count, ctypes.sizeof(internals.PamResponse)),
                                ctypes.POINTER(internals.PamResponse))
        p_response[0] = responses
        for i in range(count):
            message = messages[i].contents
            if message.msg_style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
                reply = answer(message.msg.decode()).encode()
                buffer = pam.calloc(len(reply) + 1, 1)
                ctypes.memmove(buffer, reply, len(reply))
                responses[i].resp = buffer
            responses[i].resp_retcode = 0
        return PAM_SUCCESS

    handle = internals.PamHandle()
    conv = internals.PamConv(conversation, None)
    started = pam.pam_start(service.encode(), user.encode(), ctypes.byref(conv),
                            ctypes.byref(handle))
    assert started == PAM_SUCCESS
    result = int(pam.pam_authenticate(handle, 0))
    pam.pam_end(handle, result)
    return result


@pytest.mark.e2e
def test_python_pam_password_and_totp_are_accepted(service: str, linux_user: LinuxUser,
                                                   core: MFA, secret: str) -> None:
    seen: list[str] = []
    code = now_code(core, secret, 1)
    result = pam_authenticate(service, linux_user.name, by_prompt(linux_user, code, seen=seen))
    assert result == PAM_SUCCESS
    assert seen == ["Password: ", "Passcode: "]


@pytest.mark.e2e
def test_python_pam_push_approved(service: str, linux_user: LinuxUser, core: MFA,
                                  device: Device) -> None:
    approver = Approver(core, device, "approve")
    seen: list[str] = []
    result = pam_authenticate(service, linux_user.name,
                              by_prompt(linux_user, "", approver.on_prompt, seen))
    assert result == PAM_SUCCESS
    assert seen[1] == "Passcode, or press Enter for a push: "
    assert approver.done() == "approved"


@pytest.mark.e2e
def test_python_pam_daemon_down_with_failmode_secure_is_unavailable(
        module_so: Path, run_dir: Path, linux_user: LinuxUser) -> None:
    with pam_service(f"umfa-test-{secrets.token_hex(4)}", module_so,
                     options(run_dir / "pamd.sock", "secure")) as name:
        assert pam_authenticate(name, linux_user.name,
                                by_prompt(linux_user, "123456")) == PAM_AUTHINFO_UNAVAIL


@pytest.mark.e2e
def test_a_login_works_again_once_a_killed_daemon_is_started_again(
        module_so: Path, home: Path, store_url: str, run_dir: Path, linux_user: LinuxUser,
        core: MFA, secret: str) -> None:
    path = run_dir / "run" / "pamd.sock"
    with pam_service(f"umfa-test-{secrets.token_hex(4)}", module_so, options(path)) as name:
        with running_pamd(home, store_url, path) as daemon:
            wrong = by_prompt(linux_user, wrong_code(core, secret))
            assert pam_authenticate(name, linux_user.name, wrong) == PAM_AUTH_ERR
            daemon.process.send_signal(signal.SIGKILL)  # dies; its socket file stays behind
            daemon.process.wait(10)
            assert pam_authenticate(name, linux_user.name, wrong) == PAM_AUTHINFO_UNAVAIL
        with running_pamd(home, store_url, path):
            right = by_prompt(linux_user, now_code(core, secret, 1))
            assert pam_authenticate(name, linux_user.name, right) == PAM_SUCCESS


# -- a push approved or denied from a background thread ----------------------------------------


@dataclass
class Approver:
    """The Protect app: when the login shows the number, answers on the device from a thread."""

    mfa: MFA
    device: Device
    decision: str
    numbers: queue.Queue[str] = field(default_factory=queue.Queue)
    results: queue.Queue[str] = field(default_factory=queue.Queue)

    def on_prompt(self, prompt: str) -> str:
        match = PUSH_PROMPT.search(prompt)
        assert match is not None
        self.numbers.put(match.group(1))
        threading.Thread(target=self._answer, daemon=True).start()
        return ""  # Enter: wait for the decision

    def _answer(self) -> None:
        number = self.numbers.get(timeout=TIMEOUT)
        if self.decision == "ignore":
            self.results.put("ignored")
            return
        try:
            challenge = self.mfa.pending_pushes(self.device.factor_id)[0].id
            signed = (self.device.sign(challenge, "approve", number=number)
                      if self.decision == "approve" else self.device.sign(challenge, "deny"))
            self.results.put(self.mfa.answer_push(signed))
        except Exception as exc:
            self.results.put(f"error: {exc}")

    def done(self) -> str:
        return self.results.get(timeout=TIMEOUT)


# -- OpenSSH --------------------------------------------------------------------------------------


@dataclass
class Sshd:
    service: str
    port: int
    log: Output


@pytest.fixture(scope="module")
def sshd(module_so: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1, started as `sshd-umfa-<random>`: OpenSSH names its PAM
    service after the program name, so /etc/pam.d/<that name> is its stack."""
    binary = require_tool("/usr/sbin/sshd", "openssh-server")
    keygen = require_tool("ssh-keygen", "openssh-client")
    directory = tmp_path_factory.mktemp("sshd")
    name = f"sshd-umfa-{secrets.token_hex(4)}"
    program = directory / name
    program.symlink_to(binary)
    host_key = directory / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        "UsePAM yes",
        "KbdInteractiveAuthentication yes",
        "AuthenticationMethods keyboard-interactive",
        "PasswordAuthentication no",
        "PubkeyAuthentication no",
        "PermitRootLogin no",
        "UseDNS no",
        "MaxStartups 50",
        "LoginGraceTime 120",
        "LogLevel VERBOSE",
    ]) + "\n", encoding="utf-8")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # the privilege separation directory
    process = subprocess.Popen([str(program), "-D", "-e", "-f", str(config)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        log = Output(process)
        assert log.wait_for(f"Server listening on 127.0.0.1 port {port}"), log.text
        yield Sshd(name, port, log)
    finally:
        stop_process(process)


@dataclass
class SshLogin:
    accepted: bool
    prompts: list[str]


def ssh_login(sshd: Sshd, user: LinuxUser, answer: Answer) -> SshLogin:
    """keyboard-interactive with paramiko, answering each prompt by its text."""
    prompts: list[str] = []

    def handler(_title: str, instructions: str, asked: list[tuple[str, bool]]) -> list[str]:
        replies = []
        for text, _echo in asked:
            shown = f"{instructions}\n{text}" if instructions else text
            prompts.append(shown)
            replies.append(answer(shown))
        return replies

    sock = socket.create_connection(("127.0.0.1", sshd.port), timeout=TIMEOUT)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = TIMEOUT
    try:
        transport.start_client(timeout=TIMEOUT)
        with contextlib.suppress(paramiko.AuthenticationException):
            transport.auth_interactive(user.name, handler)
        return SshLogin(transport.is_authenticated(), prompts)
    finally:
        transport.close()


@pytest.fixture
def ssh_service(sshd: Sshd, module_so: Path, pamd: Pamd) -> Iterator[Sshd]:
    with pam_service(sshd.service, module_so, options(pamd.socket)):
        yield sshd


@pytest.mark.e2e
def test_ssh_password_and_totp_are_accepted(ssh_service: Sshd, linux_user: LinuxUser,
                                            core: MFA, secret: str) -> None:
    login = ssh_login(ssh_service, linux_user,
                      by_prompt(linux_user, now_code(core, secret, 1)))
    assert login.accepted
    assert [p.strip() for p in login.prompts] == ["Password:", "Passcode:"]


@pytest.mark.e2e
def test_ssh_wrong_code_is_rejected(ssh_service: Sshd, linux_user: LinuxUser, core: MFA,
                                    secret: str, pamd: Pamd) -> None:
    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, wrong_code(core, secret)))
    assert not login.accepted
    retries = [p for p in login.prompts if "Invalid passcode" in p]
    assert len(retries) == core.settings.dialogue.max_attempts - 1  # shown with the prompt
    assert pamd.log.wait_for(f"user={linux_user.name} service={ssh_service.service}")
    assert "reject" in pamd.log.text


@pytest.mark.e2e
def test_s01_ssh_replayed_code_is_rejected(ssh_service: Sshd, linux_user: LinuxUser, core: MFA,
                                           secret: str) -> None:
    code = now_code(core, secret, 1)
    assert ssh_login(ssh_service, linux_user, by_prompt(linux_user, code)).accepted
    assert not ssh_login(ssh_service, linux_user, by_prompt(linux_user, code)).accepted


@pytest.mark.e2e
def test_ssh_push_approved(ssh_service: Sshd, linux_user: LinuxUser, core: MFA,
                           device: Device) -> None:
    approver = Approver(core, device, "approve")
    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, "", approver.on_prompt))
    assert login.accepted
    assert approver.done() == "approved"
    # OpenSSH shows the number: it is part of the prompt, not a held-back message.
    assert PUSH_PROMPT.search(login.prompts[-1].splitlines()[-1])


@pytest.mark.e2e
def test_ssh_push_denied(ssh_service: Sshd, linux_user: LinuxUser, core: MFA,
                         device: Device) -> None:
    approver = Approver(core, device, "deny")
    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, "", approver.on_prompt))
    assert not login.accepted
    assert approver.done() == "denied"


@pytest.mark.e2e
@pytest.mark.parametrize("settings_extra", ['[push]\ntimeout = "3s"'])
def test_ssh_push_timed_out(ssh_service: Sshd, linux_user: LinuxUser, core: MFA,
                            device: Device, pamd: Pamd) -> None:
    approver = Approver(core, device, "ignore")
    started = time.monotonic()
    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, "", approver.on_prompt))
    assert not login.accepted
    assert approver.done() == "ignored"
    assert time.monotonic() - started < TIMEOUT
    assert pamd.log.wait_for(f"user={linux_user.name}")
    assert "reject" in pamd.log.text


@pytest.mark.e2e
@pytest.mark.parametrize(("failmode", "accepted"), [("secure", False), ("safe", True)])
def test_s07_ssh_with_the_daemon_down_follows_the_modules_failmode(
        sshd: Sshd, module_so: Path, run_dir: Path, linux_user: LinuxUser, failmode: str,
        accepted: bool) -> None:
    nothing = run_dir / "pamd.sock"  # a trusted directory where no daemon listens
    with pam_service(sshd.service, module_so, options(nothing, failmode)):
        login = ssh_login(sshd, linux_user, by_prompt(linux_user, "123456"))
    assert login.accepted is accepted
    assert [p.strip() for p in login.prompts] == ["Password:"]


@pytest.mark.e2e
def test_ssh_wrong_password_is_rejected_even_with_a_valid_code(
        ssh_service: Sshd, linux_user: LinuxUser, core: MFA, secret: str) -> None:
    wrong = LinuxUser(linux_user.name, linux_user.password + "x")
    login = ssh_login(ssh_service, linux_user,
                      by_prompt(wrong, now_code(core, secret, 1)))
    assert not login.accepted


@pytest.mark.e2e
def test_ssh_enroll_at_login_shows_the_qr_code_and_takes_the_first_code(
        ssh_service: Sshd, linux_user: LinuxUser, core: MFA) -> None:
    """A TOTP enrollment (separated mode): the QR code's rows reach the user with the prompt."""
    core.add_user(linux_user.name)
    core.set_enforcement(linux_user.name, "enroll_at_login")
    seen: list[str] = []

    def first_code() -> str:
        uri = next(line for line in seen[-1].splitlines() if line.startswith("otpauth://"))
        return now_code(core, secret_of(uri))

    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, first_code, seen=seen))
    assert login.accepted
    assert "\u2588" in login.prompts[-1]


@pytest.mark.e2e
def test_r05_ssh_enroll_at_login_shows_the_unified_qr_code(
        ssh_service: Sshd, linux_user: LinuxUser, core: MFA) -> None:
    """A unified enrollment's QR code is longer than sshd's 32 messages a call, line by line."""
    core.add_admin("boss", roles=("billing",))
    core.confirm("boss", core.preview("boss", "merge").confirmation)
    core.add_user(linux_user.name)
    core.set_enforcement(linux_user.name, "enroll_at_login")
    seen: list[str] = []

    def first_code() -> str:
        uri = next(line for line in seen[-1].splitlines() if line.startswith("otpauth://"))
        assert "enroll_token=" in uri  # the Protect app can register push from the same QR
        return now_code(core, secret_of(uri))

    login = ssh_login(ssh_service, linux_user, by_prompt(linux_user, first_code, seen=seen))
    assert login.accepted
