"""`unified-mfa radius` behind the RADIUS peers it is deployed with: pam_radius_auth, FreeRADIUS.

The responder runs as its own process (`running_radius` of tests/test_radius.py) and a real
RADIUS client sits in front of it:

- Debian's pam_radius_auth (libpam-radius-auth 2.0.0) in a throwaway /etc/pam.d service made
  from packaging/radius/pam_radius_auth/openvpn, driven through libpam by a conversation
  that answers each prompt by its text — what OpenVPN's auth-pam plugin, or any PAM
  application, does with it;
- FreeRADIUS 3.2 as a proxy in front of us, the common deployment: run in the foreground
  (`freeradius -X`) on a configuration directory of the test's own under tmp — never
  /etc/freeradius, never the system service — whose proxy.conf and virtual server are made
  from packaging/radius/freeradius/, so the samples are the configuration under test. The
  gateway in front of FreeRADIUS is `radclient`.

The password is checked by the `pam` first factor, through a copy of
packaging/radius/pam.d/unified-mfa-radius, for a throwaway Linux user. The store is SQLite
only: tests/test_radius.py runs the responder on both stores; what is proved here is the
conversation between peers, which does not depend on the store.

Needs root and the Debian packages libpam-radius-auth, freeradius, freeradius-utils; a
missing one fails the test.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pam_unified_mfa.core import MFA
from pam_unified_mfa.settings import SETTINGS_FILE, load_settings, parse_duration
from radius.clients import ClientTable
from tests.helpers import (
    Device,
    LinuxUser,
    free_port,
    now_code,
    require_tool,
    stop_process,
    wrong_code,
)
from tests.test_pam_login import (
    PAM_AUTH_ERR,
    PAM_SUCCESS,
    PUSH_PROMPT,
    Approver,
    pam_authenticate,
)
from tests.test_radius import (  # noqa: F401 - fixtures used by the tests below
    SECRET,
    TIMEOUT,
    Answer,
    Responder,
    linux_user,
    radclient,
    responder,
)

pytestmark = pytest.mark.e2e  # real PAM stacks, a FreeRADIUS process, a Linux user

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "packaging" / "radius"
PAM_D = Path("/etc/pam.d")
PAM_RADIUS_AUTH_SOURCE = "127.0.0.5"
"""pam_radius_auth's source address, so that our client table tells it from FreeRADIUS."""
FRONT_SECRET = "gateway-to-freeradius-secret"
"""The secret between radclient (the gateway) and FreeRADIUS; FreeRADIUS and we share SECRET."""
CODE_PROMPT = "Enter a passcode"
WRONG_PROMPT = "Invalid passcode, try again. Enter a passcode"


def from_sample(path: Path, replacements: dict[str, str]) -> str:
    """A sample file of packaging/radius with its example values replaced. Each value must be
    there exactly once, so that an edited sample fails here instead of being left untested."""
    text = path.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{path}: {old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def pam_d_file(prefix: str, text: str) -> Iterator[str]:
    """/etc/pam.d/<prefix>-<random> with `text`, removed afterwards; yields the service name.
    The `umfa-` prefix keeps it out of tests/test_packaging.py's "no PAM stack touched"."""
    name = f"umfa-{prefix}-{secrets.token_hex(4)}"
    path = PAM_D / name
    path.write_text(text, encoding="utf-8")
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """SQLite only (see the module's docstring)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(scope="module")
def first_factor_service() -> Iterator[str]:
    """The sample PAM service of the `pam` first factor, installed under a name of our own."""
    text = (SAMPLES / "pam.d" / "unified-mfa-radius").read_text(encoding="utf-8")
    with pam_d_file("radius-first-factor", text) as name:
        yield name


@pytest.fixture
def settings_extra(first_factor_service: str) -> str:
    """Two clients by source address, because they differ in what they send: FreeRADIUS signs
    every request (so its entry requires a Message-Authenticator), pam_radius_auth 2.0.0 none."""
    return f"""
[radius]
first_factor = "pam"
pam_service = "{first_factor_service}"

# FreeRADIUS proxies from 127.0.0.1 and signs what it proxies.
[[radius.clients]]
name = "freeradius"
address = "127.0.0.1"
secret = "{SECRET}"

# Debian 12's pam_radius_auth 2.0.0 sends no Message-Authenticator.
[[radius.clients]]
name = "pam-radius-auth"
address = "{PAM_RADIUS_AUTH_SOURCE}"
secret = "{SECRET}"
require_message_authenticator = false
"""


# -- pam_radius_auth ---------------------------------------------------------------------------


@pytest.fixture
def radius_pam_service(responder: Responder, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """/etc/pam.d/umfa-pam-radius-<random>: the OpenVPN sample, its pam_radius_auth pointed
    at a server file of ours that names the responder (and the source address to speak from,
    the file's optional fourth column)."""
    servers = tmp_path / "pam_radius_auth.conf"
    servers.touch(mode=0o600)
    servers.write_text(f"127.0.0.1:{responder.port} {SECRET} 10 {PAM_RADIUS_AUTH_SOURCE}\n",
                       encoding="utf-8")
    text = from_sample(SAMPLES / "pam_radius_auth" / "openvpn",
                       {"conf=/etc/pam_radius_auth.conf": f"conf={servers}"})
    with pam_d_file("pam-radius", text) as name:
        yield name


def user_at_prompts(user: LinuxUser, code: str, seen: list[str],
                    on_push: Callable[[str], str] | None = None) -> Callable[[str], str]:
    """Answers as the user would, by what the prompt says: the password at pam_radius_auth's
    own prompt, `code` at ours (the Reply-Message of our Access-Challenge); the push prompt
    goes to `on_push`. Any other prompt fails the test."""
    def answer(prompt: str) -> str:
        seen.append(prompt)
        if prompt == "Password: ":
            return user.password
        if on_push is not None and PUSH_PROMPT.search(prompt):
            return on_push(prompt)
        if prompt.startswith((CODE_PROMPT, "Invalid passcode")):
            return code
        raise AssertionError(f"unexpected prompt {prompt!r}")
    return answer


def test_pam_radius_auth_shows_our_challenge_and_the_code_logs_in(
        radius_pam_service: str, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    seen: list[str] = []
    result = pam_authenticate(radius_pam_service, linux_user.name,
                              user_at_prompts(linux_user, now_code(core, secret, 1), seen))
    assert result == PAM_SUCCESS
    assert seen == ["Password: ", CODE_PROMPT]


def test_pam_radius_auth_wrong_code_fails_the_login(
        radius_pam_service: str, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    seen: list[str] = []
    result = pam_authenticate(radius_pam_service, linux_user.name,
                              user_at_prompts(linux_user, wrong_code(core, secret), seen))
    assert result == PAM_AUTH_ERR
    assert seen[:2] == ["Password: ", CODE_PROMPT]
    assert seen[2:] and all(p == WRONG_PROMPT for p in seen[2:])


def test_pam_radius_auth_wrong_password_fails_before_a_code_is_asked(
        radius_pam_service: str, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    seen: list[str] = []
    wrong_password = LinuxUser(linux_user.name, "not-the-password")
    result = pam_authenticate(radius_pam_service, linux_user.name,
                              user_at_prompts(wrong_password, now_code(core, secret, 1), seen))
    assert result == PAM_AUTH_ERR
    assert seen == ["Password: "]


def test_s01_a_code_that_logged_in_through_pam_radius_auth_is_refused_the_second_time(
        radius_pam_service: str, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    code = now_code(core, secret, 1)
    assert pam_authenticate(radius_pam_service, linux_user.name,
                            user_at_prompts(linux_user, code, [])) == PAM_SUCCESS
    seen: list[str] = []
    replayed = pam_authenticate(radius_pam_service, linux_user.name,
                                user_at_prompts(linux_user, code, seen))
    assert replayed == PAM_AUTH_ERR
    assert WRONG_PROMPT in seen


def test_s03_pam_radius_auth_shows_the_push_number_and_enter_waits_for_the_approval(
        radius_pam_service: str, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    approver = Approver(core, Device(core, core.enroll(linux_user.name, "push").uri), "approve")
    seen: list[str] = []
    # An empty answer to the first challenge asks for a push; the next prompt shows its number.
    result = pam_authenticate(radius_pam_service, linux_user.name,
                              user_at_prompts(linux_user, "", seen, approver.on_prompt))
    assert result == PAM_SUCCESS
    assert seen[0] == "Password: " and seen[1].startswith(CODE_PROMPT)
    assert PUSH_PROMPT.search(seen[-1])
    assert approver.done() == "approved"


# -- FreeRADIUS as a proxy in front of us ------------------------------------------------------


def radiusd_conf(directory: Path) -> str:
    """The smallest radiusd.conf of a proxy: no modules, no accounting, no user or group
    switch, everything under `directory`. `max_request_time` is the sample's 60 s: FreeRADIUS
    waits for a home server the smaller of it and `response_window`."""
    return "\n".join([
        "prefix = /usr",
        f"raddbdir = {directory}",
        "confdir = ${raddbdir}",
        f"logdir = {directory}",
        f"run_dir = {directory}",
        "libdir = /usr/lib/freeradius",
        "pidfile = ${run_dir}/freeradius.pid",
        "max_request_time = 60",
        "cleanup_delay = 5",
        "max_requests = 256",
        "hostname_lookups = no",
        "log {", "\tdestination = stdout", "}",
        "security {", "\tallow_core_dumps = no", "\treject_delay = 0",
        "\tstatus_server = yes", "}",
        "proxy_requests = yes",
        "$INCLUDE proxy.conf",
        "$INCLUDE clients.conf",
        "modules {", "}",
        "$INCLUDE sites-enabled/",
        "",
    ])


CLIENTS_CONF = f"""
# The gateways in front of FreeRADIUS: a current one, and one that sends no
# Message-Authenticator (FreeRADIUS adds its own when it proxies).
client gateway {{
\tipaddr = 127.0.0.1
\tsecret = {FRONT_SECRET}
\trequire_message_authenticator = yes
}}
client legacy_gateway {{
\tipaddr = 127.0.0.2
\tsecret = {FRONT_SECRET}
\trequire_message_authenticator = no
}}
"""


class FreeRadius:
    """A FreeRADIUS process of the test's own and its debug output (a file)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def proxied(self, home_port: int) -> int:
        """How many Access-Requests FreeRADIUS has sent to the home server so far."""
        sent = re.compile(rf"Sent Access-Request Id \d+ from \S+ to 127\.0\.0\.1:{home_port} ")
        return len(sent.findall(self.log.read_text(encoding="utf-8", errors="replace")))


@contextlib.contextmanager
def running_freeradius(directory: Path, home_server: Responder) -> Iterator[FreeRadius]:
    """`freeradius -X` (foreground, debug output, one thread) on a configuration made from the
    samples, proxying to `home_server`; yields once it says it is ready, and stops it whatever
    happens."""
    binary = require_tool("freeradius", "freeradius")
    port = free_port(socket.SOCK_DGRAM)
    (directory / "sites-enabled").mkdir(parents=True)
    (directory / "radiusd.conf").write_text(radiusd_conf(directory), encoding="utf-8")
    (directory / "clients.conf").write_text(CLIENTS_CONF, encoding="utf-8")
    (directory / "proxy.conf").write_text(
        "proxy server {\n\tdefault_fallback = no\n}\n" + from_sample(
            SAMPLES / "freeradius" / "proxy.conf",
            {"ipaddr = 192.0.2.20": "ipaddr = 127.0.0.1",
             "port = 1812": f"port = {home_server.port}",
             'secret = "change-me-to-the-secret-of-the-client-entry"': f'secret = "{SECRET}"'}),
        encoding="utf-8")
    (directory / "sites-enabled" / "unified-mfa").write_text(from_sample(
        SAMPLES / "freeradius" / "unified-mfa",
        {"ipaddr = *": "ipaddr = 127.0.0.1", "port = 1812": f"port = {port}"}),
        encoding="utf-8")
    log = directory / "freeradius.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, "-X", "-d", str(directory)], stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while "Ready to process requests" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"freeradius exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"freeradius is not ready:\n{log.read_text()}"
            time.sleep(0.05)
        yield FreeRadius(port, log)
    finally:
        stop_process(process)


@pytest.fixture
def freeradius(responder: Responder, tmp_path: Path) -> Iterator[FreeRadius]:  # noqa: F811
    with running_freeradius(tmp_path / "freeradius", responder) as running:
        yield running


def through_freeradius(freeradius: FreeRadius, attributes: dict[str, str],
                       source: str = "127.0.0.1", message_authenticator: bool = True,
                       timeout: int = 3) -> Answer:
    """One request of the gateway (radclient) to FreeRADIUS, which proxies it to us."""
    return radclient(freeradius.port, attributes, source=source, secret=FRONT_SECRET,
                     message_authenticator=message_authenticator, timeout=timeout)


def test_freeradius_relays_our_challenge_and_the_code_logs_in(
        freeradius: FreeRadius, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    first = through_freeradius(freeradius, {"User-Name": linux_user.name,
                                            "User-Password": linux_user.password})
    assert first.code == "Access-Challenge"
    assert first.attributes["Reply-Message"] == CODE_PROMPT
    second = through_freeradius(freeradius, {"User-Name": linux_user.name,
                                             "User-Password": now_code(core, secret, 1),
                                             "State": first.attributes["State"]})
    assert second.code == "Access-Accept"


def test_freeradius_signs_what_it_proxies_so_a_gateway_without_message_authenticator_reaches_us(
        freeradius: FreeRadius, responder: Responder, linux_user: LinuxUser,  # noqa: F811
        secret: str) -> None:
    # Our client entry for FreeRADIUS requires a Message-Authenticator; this gateway sends
    # none to FreeRADIUS, which adds its own towards us.
    answer = through_freeradius(freeradius, {"User-Name": linux_user.name,
                                             "User-Password": linux_user.password},
                                source="127.0.0.2", message_authenticator=False)
    assert answer.code == "Access-Challenge"
    assert "no Message-Authenticator" not in responder.log.read_text()


def test_s03_push_through_freeradius_shows_the_number_and_the_held_request_ends_in_accept(
        freeradius: FreeRadius, responder: Responder, linux_user: LinuxUser,  # noqa: F811
        core: MFA, secret: str) -> None:
    device = Device(core, core.enroll(linux_user.name, "push").uri)
    user = {"User-Name": linux_user.name}
    first = through_freeradius(freeradius, {**user, "User-Password": linux_user.password})
    pushed = through_freeradius(freeradius, {**user, "User-Password": "push",
                                             "State": first.attributes["State"]})
    assert pushed.code == "Access-Challenge"
    number = PUSH_PROMPT.search(pushed.attributes["Reply-Message"])
    assert number is not None
    held: list[Answer] = []
    enter = threading.Thread(target=lambda: held.append(through_freeradius(
        freeradius, {**user, "State": pushed.attributes["State"]}, timeout=int(TIMEOUT))))
    enter.start()
    # Approve once FreeRADIUS has passed the request on: it is then held by us (the third
    # request it proxied), and FreeRADIUS waits for our late answer (response_window).
    deadline = time.monotonic() + TIMEOUT
    while freeradius.proxied(responder.port) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert freeradius.proxied(responder.port) == 3, freeradius.log.read_text()
    device.approve(number.group(1))
    enter.join(TIMEOUT + 5)
    assert held and held[0].code == "Access-Accept"


# -- the samples themselves --------------------------------------------------------------------


@pytest.fixture
def sample_home(tmp_path: Path) -> Path:
    """A home whose settings are packaging/radius/unified-mfa.toml as shipped, with the secret
    files it names."""
    home = tmp_path / "sample-home"
    (home / "radius").mkdir(parents=True)
    shutil.copy(SAMPLES / "unified-mfa.toml", home / SETTINGS_FILE)
    for gateway in ("freeradius", "openvpn", "strongswan"):
        (home / "radius" / f"{gateway}.secret").write_text("a long shared secret\n",
                                                            encoding="utf-8")
    return home


def test_the_sample_settings_give_each_sample_gateway_its_mode_and_message_authenticator_rule(
        sample_home: Path) -> None:
    table = ClientTable.from_settings(sample_home, load_settings(sample_home).radius)
    found = [table.find(address) for address in ("192.0.2.10", "192.0.2.11", "192.0.2.12")]
    assert {c.name: (c.mode, c.require_message_authenticator) for c in found if c} == {
        "freeradius": ("challenge", True),
        "openvpn": ("challenge", False),  # pam_radius_auth 2.0.0
        "strongswan": ("append", True),
    }


def test_the_sample_push_timeout_ends_before_freeradius_stops_waiting(sample_home: Path) -> None:
    push_timeout = parse_duration(load_settings(sample_home).push.timeout)
    proxy = (SAMPLES / "freeradius" / "proxy.conf").read_text(encoding="utf-8")
    window = re.search(r"^\s*response_window = (\d+)$", proxy, re.MULTILINE)
    assert window is not None
    assert push_timeout < int(window.group(1)) <= 60  # FreeRADIUS waits 60 s at most
