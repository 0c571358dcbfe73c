"""The PAM daemon in remote mode: `[pamd] server` makes `unified-mfa pamd` run every login's
dialogue on a central `unified-mfa serve` through the auth API (docs/api.md), as an API client.

A real `unified-mfa serve` runs on a free loopback port with its own home, with an API client
added by `unified-mfa client add`; a real `unified-mfa pamd` runs on a temporary socket with a
home that holds only its settings and the client's secret file (no key, no store), and the
module's side is played with the protocol's own encoder (the client of tests/test_pamd.py).
Valid and wrong codes, the central service gone (S07: the module's fail mode decides), and a
wrong client secret (denied whatever the fail mode).

Time is real: users are set up on the central store with the core on real time, and the tests
wait only for the processes to start listening.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.pamd import protocol as p
from pam_unified_mfa.pamd.session import PROMPT_CODE
from pam_unified_mfa.settings import load_settings
from tests.helpers import stop_process, wrong_code
from tests.test_authenticator import SERVER, Service, _wait_until_healthy, free_port
from tests.test_pamd import Client, last, now_code, totp_user

TIMEOUT = 30.0


@dataclass
class Pamd:
    """A running `unified-mfa pamd --socket PATH` and its log."""

    process: subprocess.Popen[bytes]
    home: Path
    socket: Path
    log: Path

    def connect(self) -> Client:
        return Client(self.socket)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def start_service(home: Path, log: Path) -> Service:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "UNIFIED_MFA_HOME": str(home)}
    subprocess.run([str(SERVER), "init", "--public-url", url], env=env, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SERVER), "serve"], env=env, stdout=sink, stderr=sink,
                                   stdin=subprocess.DEVNULL)
    running = Service(home, url, process)
    _wait_until_healthy(running, log)
    return running


def start_pamd(run_dir: Path, server: str, client: str, secret: str) -> Pamd:
    """A remote-mode daemon whose home holds nothing but its settings and the secret file."""
    home = Path(tempfile.mkdtemp(prefix="pamd-", dir=run_dir))
    secret_file = home / "client.secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    (home / "unified-mfa.toml").write_text(
        f'[pamd]\nserver = "{server}"\nclient = "{client}"\n'
        f'client_secret_file = "{secret_file}"\ntimeout = "5s"\n', encoding="utf-8")
    sock = run_dir / f"{home.name}.sock"
    log = run_dir / f"{home.name}.log"
    env = {k: v for k, v in os.environ.items() if k != "UNIFIED_MFA_HOME"}
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SERVER), "pamd", "--home", str(home), "--socket",
                                    str(sock)], env=env, stdout=sink, stderr=sink,
                                   stdin=subprocess.DEVNULL)
    running = Pamd(process, home, sock, log)
    deadline = time.monotonic() + TIMEOUT
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            pytest.fail(f"unified-mfa pamd did not listen: {running.output()[-2000:]}")
        # Waiting for a real process to bind its socket, not for a time-based rule.
        time.sleep(0.05)
    return running


@dataclass
class Central:
    service: Service
    secret: str
    core: MFA


@pytest.fixture(scope="module")
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket path holds at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="umfa-r-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def central(run_dir: Path) -> Iterator[Central]:
    """A central `unified-mfa serve` with the API client `pam-host`, and the core on its store
    (real time) to set users up."""
    service = start_service(run_dir / "central", run_dir / "serve.log")
    try:
        added = service.ok("client", "add", "pam-host", "--json")
        secret = json.loads(added.stdout)["secret"]
        core = MFA.open(service.home)
        try:
            yield Central(service, secret, core)
        finally:
            core.close()
    finally:
        service.stop()


@pytest.fixture(scope="module")
def pamd(central: Central, run_dir: Path) -> Iterator[Pamd]:
    running = start_pamd(run_dir, central.service.url, "pam-host", central.secret)
    yield running
    running.stop()


@pytest.fixture
def client(pamd: Pamd) -> Iterator[Client]:
    connection = pamd.connect()
    yield connection
    connection.close()


def test_remote_daemon_starts_without_a_local_key_or_store(pamd: Pamd) -> None:
    assert sorted(f.name for f in pamd.home.iterdir()) == ["client.secret", "unified-mfa.toml"]
    assert "remote mode" in pamd.output()


def test_remote_valid_code_is_accepted(central: Central, client: Client) -> None:
    secret = totp_user(central.core, "alice")
    assert last(client.start("alice")) == p.Line(p.PROMPT, PROMPT_CODE)
    assert last(client.answer(now_code(secret, central.core, 1))) == p.Line(p.ACCEPT)


def test_remote_login_is_audited_on_the_central_service_with_the_remote_host(
    central: Central, client: Client,
) -> None:
    secret = totp_user(central.core, "dora")
    client.start("dora", rhost="198.51.100.9", service="sshd")
    assert last(client.answer(now_code(secret, central.core, 1))) == p.Line(p.ACCEPT)
    entries = [e for e in central.core.audit_tail(50) if e.subject == "dora"]
    assert any(e.adapter == "api" and e.client == "198.51.100.9" for e in entries), entries


def test_remote_wrong_code_is_rejected(central: Central, client: Client) -> None:
    secret = totp_user(central.core, "bob")
    client.start("bob")
    wrong = wrong_code(central.core, secret)
    for _ in range(central.core.settings.dialogue.max_attempts - 1):
        lines = client.answer(wrong)
        assert [line.verb for line in lines] == [p.ERROR, p.PROMPT]
        assert lines[0].argument.startswith("Invalid passcode")
    assert client.answer(wrong) == [p.Line(p.REJECT, "Access denied")]


def test_s01_remote_replayed_code_is_rejected(central: Central, pamd: Pamd) -> None:
    secret = totp_user(central.core, "carol")
    code = now_code(secret, central.core, 1)
    first = pamd.connect()
    first.start("carol")
    assert last(first.answer(code)) == p.Line(p.ACCEPT)
    first.close()
    second = pamd.connect()
    second.start("carol")
    assert [line.verb for line in second.answer(code)] == [p.ERROR, p.PROMPT]
    second.close()


@pytest.fixture
def lonely_pamd(run_dir: Path, tmp_path: Path) -> Iterator[Pamd]:
    """A remote-mode daemon whose central service has stopped."""
    service = start_service(tmp_path / "gone", tmp_path / "gone.log")
    try:
        secret = json.loads(service.ok("client", "add", "pam-host", "--json").stdout)["secret"]
    finally:
        service.stop()
    running = start_pamd(run_dir, service.url, "pam-host", secret)
    yield running
    running.stop()


def test_s07_service_down_with_failmode_secure_is_unavailable(lonely_pamd: Pamd) -> None:
    client = lonely_pamd.connect()
    assert client.start("alice", failmode="secure") == [p.Line(p.UNAVAILABLE)]
    assert client.closed()


def test_s07_service_down_with_failmode_safe_is_accepted(lonely_pamd: Pamd) -> None:
    client = lonely_pamd.connect()
    assert client.start("alice", failmode="safe") == [p.Line(p.ACCEPT)]
    lonely_pamd.stop()
    assert "fail_mode=safe verdict=allow" in lonely_pamd.output()


@pytest.fixture
def impostor_pamd(central: Central, run_dir: Path) -> Iterator[Pamd]:
    """A remote-mode daemon with the right client name and a wrong secret."""
    running = start_pamd(run_dir, central.service.url, "pam-host", "not-the-secret")
    yield running
    running.stop()


def test_wrong_client_secret_is_unavailable_even_with_failmode_safe(central: Central,
                                                                    impostor_pamd: Pamd) -> None:
    totp_user(central.core, "erin")
    client = impostor_pamd.connect()
    assert client.start("erin", failmode="safe") == [p.Line(p.UNAVAILABLE)]
    impostor_pamd.stop()
    assert "refused begin with HTTP 401" in impostor_pamd.output()


def test_secret_file_readable_by_others_stops_the_daemon(central: Central,
                                                         run_dir: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="loose-", dir=run_dir))
    secret_file = home / "client.secret"
    secret_file.write_text(central.secret, encoding="utf-8")
    secret_file.chmod(0o644)
    (home / "unified-mfa.toml").write_text(
        f'[pamd]\nserver = "{central.service.url}"\nclient = "pam-host"\n'
        f'client_secret_file = "client.secret"\n', encoding="utf-8")
    result = subprocess.run([str(SERVER), "pamd", "--home", str(home), "--socket",
                             str(run_dir / "loose.sock")], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "chmod 600" in result.stderr and central.secret not in result.stderr
    assert not (run_dir / "loose.sock").exists()


def test_pamd_server_without_client_or_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unified-mfa.toml").write_text(
        '[pamd]\nserver = "https://mfa.example.com"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[pamd\]"):
        load_settings(tmp_path)


def test_pamd_unknown_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unified-mfa.toml").write_text('[pamd]\nclient_secret = "s3cret"\n',
                                               encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown setting pamd\.client_secret"):
        load_settings(tmp_path)
