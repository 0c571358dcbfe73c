"""The RADIUS responder (`unified-mfa radius`) against FreeRADIUS's `radclient` as the gateway.

The responder runs as its own process on 127.0.0.1, as it would beside a VPN gateway; the
gateway's requests come from the real `radclient` (Debian freeradius-utils), or, where a test
needs one exact datagram sent several times, from a socket of the test's own.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyrad import packet

from pam_unified_mfa.core import MFA
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.loop_calls import inline
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.settings import (
    SETTINGS_FILE,
    RadiusClientSettings,
    RadiusSettings,
    load_settings,
)
from radius.clients import ClientTable
from radius.responder import split_append
from radius.server import load_dictionary, shared_replies
from tests.helpers import (
    Device,
    LinuxUser,
    free_port,
    now_code,
    require_tool,
    stop_process,
    throwaway_linux_user,
    wrong_code,
)
from tests.test_authenticator import (  # noqa: F401 - fixtures used by the test below
    App,
    Service,
    _pending_push,
    app,
    service,
)

SECRET = "radius-test-secret"
TIMEOUT = 20.0
PAM_D = Path("/etc/pam.d")


@pytest.fixture(scope="module")
def linux_user() -> Iterator[LinuxUser]:
    with throwaway_linux_user() as user:
        yield user


@pytest.fixture(scope="module")
def pam_service() -> Iterator[str]:
    """A PAM service of the tests' own that checks the password with pam_unix."""
    name = f"unified-mfa-radius-test-{int(time.time() * 1000) % 10**9}"
    path = PAM_D / name
    path.write_text("auth required pam_unix.so\naccount required pam_unix.so\n")
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def settings_extra(pam_service: str) -> str:
    return f"""
[push]
timeout = "6s"

[radius]
first_factor = "pam"
pam_service = "{pam_service}"

[[radius.clients]]
name = "challenge-gw"
address = "127.0.0.1"
secret = "{SECRET}"

[[radius.clients]]
name = "append-gw"
address = "127.0.0.2"
secret = "{SECRET}"
mode = "append"

[[radius.clients]]
name = "autopush-gw"
address = "127.0.0.3"
secret = "{SECRET}"
mode = "autopush"

[[radius.clients]]
name = "legacy-gw"
address = "127.0.0.4"
secret = "{SECRET}"
require_message_authenticator = false
"""


@dataclass
class Responder:
    port: int
    log: Path


@contextmanager
def running_radius(home: Path, store_url: str | None, log: Path) -> Iterator[Responder]:
    """`unified-mfa radius` on a free UDP port of 127.0.0.1, which every 127/8 source
    reaches; yields once it has printed that it listens."""
    port = free_port(socket.SOCK_DGRAM)
    store = ["--store", store_url] if store_url else []
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pam_unified_mfa.cli.main", "radius", "--home", str(home),
             *store, "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "radius listening on udp" in line, log.read_text()
            yield Responder(port, log)
        finally:
            stop_process(process)


@pytest.fixture
def responder(home: Path, store_url: str, tmp_path: Path) -> Iterator[Responder]:
    with running_radius(home, store_url, tmp_path / "radius.log") as running:
        yield running


@dataclass
class Answer:
    code: str
    """Access-Accept, Access-Reject, Access-Challenge, or "none" when nothing came back."""
    attributes: dict[str, str]


_RECEIVED = re.compile(r"^Received (Access-\w+) Id")
_ATTRIBUTE = re.compile(r"^\s+([\w-]+) = (.*)$")


def radclient(port: int, attributes: dict[str, str], source: str = "127.0.0.1",
              secret: str = SECRET, message_authenticator: bool = True,
              timeout: int = 3) -> Answer:
    """One Access-Request from FreeRADIUS's radclient, sent from `source` (a loopback
    address: each test gateway has its own); its parsed answer."""
    tool = require_tool("radclient", "freeradius-utils")
    pairs = {**attributes, "Packet-Src-IP-Address": source}
    if message_authenticator:
        pairs["Message-Authenticator"] = "0x00"  # radclient computes the real value
    request = ",".join(f"{k}={v}" if v.startswith("0x") or k.startswith("Packet-")
                       else f'{k}="{v}"' for k, v in pairs.items())
    result = subprocess.run([tool, "-x", "-r", "1", "-t", str(timeout), f"127.0.0.1:{port}", "auth",
                             secret], input=request, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    return _parse(result.stdout)


def _parse(output: str) -> Answer:
    code, attributes = "none", {}
    for line in output.splitlines():
        if match := _RECEIVED.match(line):
            code = match.group(1)
        elif code != "none" and (match := _ATTRIBUTE.match(line)):
            attributes[match.group(1)] = match.group(2).strip('"')
    return Answer(code, attributes)


# -- challenge mode ---------------------------------------------------------------------------


def password_request(user: LinuxUser, password: str | None = None) -> dict[str, str]:
    return {"User-Name": user.name, "User-Password": user.password if password is None
            else password}


def test_challenge_mode_asks_for_a_code_and_accepts_it(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    first = radclient(responder.port, password_request(linux_user))
    assert first.code == "Access-Challenge"
    assert "passcode" in first.attributes["Reply-Message"]
    second = radclient(responder.port, {**password_request(linux_user, now_code(core, secret, 1)),
                                        "State": first.attributes["State"]})
    assert second.code == "Access-Accept"


def test_s01_a_state_is_single_use(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    first = radclient(responder.port, password_request(linux_user))
    state = {"State": first.attributes["State"]}
    code = now_code(core, secret, 1)
    assert radclient(responder.port, {**password_request(linux_user, code), **state}
                     ).code == "Access-Accept"
    again = radclient(responder.port, {**password_request(linux_user, now_code(core, secret)),
                                       **state})
    assert again.code == "Access-Reject"
    assert "expired" in again.attributes["Reply-Message"]


def test_wrong_password_is_rejected_without_a_challenge(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    answer = radclient(responder.port, password_request(linux_user, "not-the-password"))
    assert answer.code == "Access-Reject"
    assert "State" not in answer.attributes


def test_wrong_code_is_challenged_again_with_a_new_state(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    first = radclient(responder.port, password_request(linux_user))
    wrong = radclient(responder.port, {**password_request(linux_user, wrong_code(core, secret)),
                                       "State": first.attributes["State"]})
    assert wrong.code == "Access-Challenge"
    assert "Invalid passcode" in wrong.attributes["Reply-Message"]
    assert wrong.attributes["State"] != first.attributes["State"]


def test_a_state_answered_under_another_user_name_is_refused(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    first = radclient(responder.port, password_request(linux_user))
    other = radclient(responder.port, {"User-Name": "mallory",
                                       "User-Password": now_code(core, secret, 1),
                                       "State": first.attributes["State"]})
    assert other.code == "Access-Reject"
    # The lifted State is spent: the real user has to start again.
    after = radclient(responder.port, {**password_request(linux_user, now_code(core, secret, 1)),
                                       "State": first.attributes["State"]})
    assert after.code == "Access-Reject"


def test_s03_push_shows_the_number_and_the_held_request_ends_with_the_approval(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    device = Device(core, core.enroll(linux_user.name, "push").uri)
    first = radclient(responder.port, password_request(linux_user))
    pushed = radclient(responder.port, {**password_request(linux_user, "push"),
                                        "State": first.attributes["State"]})
    assert pushed.code == "Access-Challenge"
    number = re.search(r"choosing (\d+)", pushed.attributes["Reply-Message"])
    assert number is not None
    held: list[Answer] = []
    waiting = threading.Thread(target=lambda: held.append(radclient(
        responder.port, {"User-Name": linux_user.name, "State": pushed.attributes["State"]},
        timeout=15)))
    waiting.start()
    time.sleep(0.5)
    assert not held  # held until the decision
    device.approve(number.group(1))
    waiting.join(TIMEOUT)
    assert held and held[0].code == "Access-Accept"


# -- append and autopush modes ----------------------------------------------------------------


def test_append_mode_takes_password_and_code_in_one_request(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    typed = f"{linux_user.password},{now_code(core, secret, 1)}"
    answer = radclient(responder.port, password_request(linux_user, typed), source="127.0.0.2")
    assert answer.code == "Access-Accept"


def test_append_mode_rejects_a_wrong_code(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    typed = f"{linux_user.password},{wrong_code(core, secret)}"
    answer = radclient(responder.port, password_request(linux_user, typed), source="127.0.0.2")
    assert answer.code == "Access-Reject"


def test_autopush_mode_sends_the_push_with_the_password(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    device = Device(core, core.enroll(linux_user.name, "push").uri)
    pushed = radclient(responder.port, password_request(linux_user), source="127.0.0.3")
    assert pushed.code == "Access-Challenge"
    assert core.pending_pushes(device.factor_id)
    assert re.search(r"choosing \d+", pushed.attributes["Reply-Message"])


@pytest.fixture
def service_settings() -> str:
    """For the `service` fixture: a gateway in autopush mode beside the HTTP service."""
    return f"""
[radius]
first_factor = "none"

[[radius.clients]]
name = "autopush-gw"
address = "127.0.0.3"
secret = "{SECRET}"
mode = "autopush"
"""


@pytest.mark.e2e
def test_autopush_approved_by_the_reference_authenticator_lets_the_user_in(
        service: Service, app: App, tmp_path: Path) -> None:  # noqa: F811 - imported fixtures
    service.merge()
    service.enroll(app, "alice", tmp_path)  # one scan: push + TOTP (R05)
    with running_radius(service.home, None, tmp_path / "radius.log") as radius:
        pushed = radclient(radius.port, {"User-Name": "alice", "User-Password": "checked"},
                           source="127.0.0.3")
        assert pushed.code == "Access-Challenge"
        number = re.search(r"choosing (\d+)", pushed.attributes["Reply-Message"])
        assert number is not None
        held: list[Answer] = []
        waiting = threading.Thread(target=lambda: held.append(radclient(
            radius.port, {"User-Name": "alice", "State": pushed.attributes["State"]},
            source="127.0.0.3", timeout=30)))
        waiting.start()
        push = _pending_push(app, number.group(1))
        app.ok("approve", push["id"], "--number", number.group(1))
        waiting.join(TIMEOUT + 30)
    assert held and held[0].code == "Access-Accept"


# -- what is dropped --------------------------------------------------------------------------


def test_a_wrong_shared_secret_gets_no_reply(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    answer = radclient(responder.port, password_request(linux_user), secret="not-the-secret")
    assert answer.code == "none"
    assert "bad Message-Authenticator" in responder.log.read_text()


def test_a_request_without_message_authenticator_is_dropped_when_required(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    answer = radclient(responder.port, password_request(linux_user),
                       message_authenticator=False)
    assert answer.code == "none"
    assert "no Message-Authenticator" in responder.log.read_text()


def test_a_client_may_be_allowed_to_omit_message_authenticator(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    answer = radclient(responder.port, password_request(linux_user), source="127.0.0.4",
                       message_authenticator=False)
    assert answer.code == "Access-Challenge"
    assert "Message-Authenticator" in answer.attributes  # every reply carries one


def test_an_unknown_client_gets_no_reply(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    answer = radclient(responder.port, password_request(linux_user), source="127.0.0.9")
    assert answer.code == "none"
    assert "unknown client" in responder.log.read_text()


def test_a_malformed_datagram_is_dropped_and_the_next_request_is_answered(
        responder: Responder, linux_user: LinuxUser, secret: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x01\x02\x00\xff" + b"\x00" * 30, ("127.0.0.1", responder.port))
    assert radclient(responder.port, password_request(linux_user)).code == "Access-Challenge"
    assert "malformed packet" in responder.log.read_text()


# -- retransmissions (RFC 5080) ---------------------------------------------------------------


def test_the_same_datagram_three_times_during_a_push_wait_gets_one_push_and_three_same_replies(
        responder: Responder, linux_user: LinuxUser, secret: str, core: MFA) -> None:
    device = Device(core, core.enroll(linux_user.name, "push").uri)
    first = radclient(responder.port, password_request(linux_user))
    pushed = radclient(responder.port, {**password_request(linux_user, "push"),
                                        "State": first.attributes["State"]})
    number = re.search(r"choosing (\d+)", pushed.attributes["Reply-Message"])
    assert number is not None
    request = packet.AuthPacket(secret=SECRET.encode(), dict=load_dictionary(),
                                User_Name=linux_user.name)
    request["User-Password"] = request.PwCrypt("")
    request["State"] = bytes.fromhex(pushed.attributes["State"][2:])
    request.add_message_authenticator()
    datagram = request.RequestPacket()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        for _ in range(3):
            sock.sendto(datagram, ("127.0.0.1", responder.port))
            time.sleep(0.3)
        assert len(core.pending_pushes(device.factor_id)) == 1
        device.approve(number.group(1))
        replies = [sock.recv(4096) for _ in range(3)]
    assert replies[0] == replies[1] == replies[2]
    assert replies[0][0] == packet.AccessAccept


# -- configuration ----------------------------------------------------------------------------


def test_split_append_splits_at_the_last_comma() -> None:
    assert split_append("pa,ss,123456") == ("pa,ss", "123456")
    assert split_append("password") == ("password", "push")


def test_the_most_specific_client_network_wins(tmp_path: Path) -> None:
    settings = RadiusSettings(first_factor="none", clients=(
        RadiusClientSettings(name="all", address="10.0.0.0/8", secret="a"),
        RadiusClientSettings(name="one", address="10.1.2.3", secret="b"),
    ))
    table = ClientTable.from_settings(tmp_path, settings)
    assert (found := table.find("10.1.2.3")) is not None and found.name == "one"
    assert (found := table.find("10.9.9.9")) is not None and found.name == "all"
    assert table.find("192.0.2.1") is None


def test_a_client_needs_exactly_one_of_secret_and_secret_file() -> None:
    with pytest.raises(ConfigError, match="exactly one of secret and secret_file"):
        RadiusSettings(clients=(RadiusClientSettings(name="gw", address="10.0.0.1"),)).check()


def test_a_client_without_a_first_factor_is_refused(tmp_path: Path) -> None:
    settings = RadiusSettings(clients=(
        RadiusClientSettings(name="gw", address="10.0.0.1", secret="s"),))
    with pytest.raises(ConfigError, match="first_factor"):
        ClientTable.from_settings(tmp_path, settings)


def test_an_unknown_key_in_a_client_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text(
        '[[radius.clients]]\nname = "gw"\naddress = "10.0.0.1"\nsecret = "s"\nsecrte = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting radius\.clients\.secrte"):
        load_settings(tmp_path)


def test_shared_replies_must_be_auto_on_or_off() -> None:
    with pytest.raises(ConfigError, match="shared_replies must be one of auto, on, off"):
        RadiusSettings(shared_replies="yes").check()


def test_shared_replies_are_on_by_default_only_with_postgresql(mfa: MFA) -> None:
    shared = shared_replies(mfa, Waiter(), inline, 30.0)
    assert (shared is None) == mfa.store.is_sqlite
