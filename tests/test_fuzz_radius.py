"""Property tests of the RADIUS responder against hostile and broken datagrams.

The real `RadiusServer`, with the real responder and core, listens on a UDP socket of
127.0.0.1, composed as `radius.server.serve` composes it (in a thread of the test, so that the
test knows when a datagram has been answered or dropped); gateways are UDP sockets bound to
the client addresses of the settings. The fuzzer sends arbitrary bytes, and Access-Requests
built byte by byte: random and duplicated attributes, wrong and lying lengths, oversized and
truncated packets, a Message-Authenticator that is missing, wrong, or made with another
secret, passwords hidden with the right or the wrong secret, and State values that are
garbage or that an earlier reply gave to another user or another gateway. Alice's valid code
is sent too, wherever it must not open the door.

What must hold: no datagram upsets the server (no error logged, and a Status-Server is still
answered after each example); every reply is signed (Response Authenticator and
Message-Authenticator); no reply is ever an Access-Accept, except a Status-Server's "alive";
and a valid login works at the end. Bounds and a longer campaign: tests/fuzzing.py and
docs/security-testing.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrad import packet

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.loop_calls import core_calls
from pam_unified_mfa.service.waiter import Waiter
from pam_unified_mfa.settings import load_settings
from radius.clients import ClientTable
from radius.first_factor import password_checks
from radius.reply_cache import ReplyCache
from radius.responder import Responder
from radius.server import RadiusServer, bind, load_dictionary
from tests.fuzzing import ServerLog, T, fuzz_settings, mostly, server_log, without_lockout
from tests.helpers import now_code, secret_of, wrong_code

SECRET = b"radius-fuzz-secret"
OTHER_SECRET = b"not-the-shared-secret"
TIMEOUT = 20.0
CHALLENGE, APPEND, AUTOPUSH, LEGACY, STRANGER = (
    "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9")
MODES = {CHALLENGE: "challenge", APPEND: "append", AUTOPUSH: "autopush", LEGACY: "challenge"}
"""The gateways of the settings below by source address; STRANGER is no client at all."""
USER_NAME, USER_PASSWORD, STATE, MESSAGE_AUTHENTICATOR = 1, 2, 24, 80
HEADER = struct.Struct("!BBH16s")
ACCEPT, CHALLENGE_CODE = packet.AccessAccept, packet.AccessChallenge


@pytest.fixture
def settings_extra() -> str:
    # A short push timeout: a request held on a decoy push (S06) ends within the example.
    clients = "".join(f"""
[[radius.clients]]
name = "{mode}-{address}"
address = "{address}"
secret = "{SECRET.decode()}"
mode = "{mode}"
require_message_authenticator = {"false" if address == LEGACY else "true"}
""" for address, mode in MODES.items())
    return f'[push]\ntimeout = "300ms"\n\n[radius]\nfirst_factor = "none"\n{clients}'


@pytest.fixture
def home(home: Path) -> Path:
    return without_lockout(home)


# -- the responder, and knowing when it is done ---------------------------------------------------


class CountingServer(RadiusServer):
    """The real server; it also counts the datagrams it took, so the test knows when each one
    has been answered or dropped."""

    received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        self.received += 1  # after: the request's task, if any, is already registered

    def done_with(self, count: int) -> bool:
        return self.received >= count and not self._tasks


class RunningResponder:
    """The responder on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, mfa: MFA, home: Path) -> None:
        settings = load_settings(home)
        clients = ClientTable.from_settings(home, settings.radius)
        checks = password_checks(settings.radius, home, {c.first_factor for c in clients})
        responder = Responder(mfa, Waiter(), checks, core_calls(mfa.store.is_sqlite))
        self.server = CountingServer(clients, responder, ReplyCache(30.0, time.monotonic),
                                     load_dictionary())
        sock = bind("127.0.0.1", 0, settings.radius.receive_buffer)
        self.address = sock.getsockname()
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.transport, _ = asyncio.run_coroutine_threadsafe(self.loop.create_datagram_endpoint(
            lambda: self.server, sock=sock), self.loop).result(TIMEOUT)

    def settle(self) -> None:
        """Wait until every datagram sent so far was answered or dropped."""
        deadline = time.monotonic() + TIMEOUT
        while not self.server.done_with(self.sent):
            assert time.monotonic() < deadline, "the responder did not finish a request"
            time.sleep(0.0005)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.transport.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class Gateway:
    """UDP sockets bound to the client addresses, new for each example (so that the reply
    cache sees new requests, not retransmissions of an earlier example's)."""

    def __init__(self, responder: RunningResponder) -> None:
        self.responder = responder
        self.sockets: dict[str, socket.socket] = {}

    def send(self, source: str, datagram: bytes) -> list[bytes]:
        """Send one datagram and return what came back once the responder is done with it."""
        sock = self.sockets.get(source)
        if sock is None:
            sock = self.sockets[source] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.setblocking(False)
        sock.sendto(datagram, self.responder.address)
        self.responder.sent += 1
        self.responder.settle()
        replies = []
        while True:
            try:
                replies.append(sock.recv(65536))
            except BlockingIOError:
                return replies

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


# -- datagrams built byte by byte -----------------------------------------------------------------


def message_authenticator(secret: bytes, datagram: bytes, offset: int) -> bytes:
    """RFC 3579 §3.2: HMAC-MD5 of the packet with the attribute's value zeroed at `offset`."""
    zeroed = datagram[:offset] + bytes(16) + datagram[offset + 16:]
    return hmac.new(secret, zeroed, hashlib.md5).digest()


def hide_password(secret: bytes, authenticator: bytes, text: bytes) -> bytes:
    """RFC 2865 §5.2, as a gateway hides User-Password."""
    hider = packet.AuthPacket(secret=secret, authenticator=authenticator, dict=load_dictionary())
    return bytes(hider.PwCrypt(text))


@dataclass(frozen=True)
class Typed:
    """What the user typed: literal text, or Alice's valid code (alone, or after a password
    and a comma for an append-mode gateway), filled in when sent."""

    text: str = ""
    alice_code: bool = False
    appended: bool = False


@dataclass(frozen=True)
class Password:
    typed: Typed
    secret: bytes  # the shared secret, or another: the server then reads garbage


@dataclass(frozen=True)
class Captured:
    """The State of the n-th Access-Challenge this example received (modulo their count: -1
    is the latest)."""

    index: int


Value = bytes | Password | Captured


@dataclass(frozen=True)
class Request:
    source: str
    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, Value], ...]
    message_authenticator: str  # right, none, random, other-secret, short, twice
    length_delta: int  # the header's length field minus the true length
    broken_attribute: tuple[int, int] | None  # (index, length byte) of a lying attribute
    cut: int  # bytes dropped from the end after signing


@dataclass(frozen=True)
class Raw:
    source: str
    datagram: bytes


@dataclass(frozen=True)
class Issued:
    """A State the responder gave out: to whom (as the server read the User-Name), through
    which gateway."""

    value: bytes
    user: str | None
    source: str


def read_as_server(datagram: bytes) -> tuple[str | None, bytes | None]:
    """The user and the State the server reads from a datagram (the first of each), or None
    where it cannot decode them."""
    try:
        request = packet.AuthPacket(secret=SECRET, dict=load_dictionary(), packet=datagram)
        users, states = request.get("User-Name"), request.get("State")
    except Exception:  # the server drops what pyrad cannot decode
        return None, None
    return (str(users[0]) if users else None), (bytes(states[0]) if states else None)


class Example:
    """Sends one example's datagrams, filling in codes and captured States as it goes."""

    def __init__(self, gateway: Gateway, core: MFA, alice_secret: str) -> None:
        self.gateway = gateway
        self.core = core
        self.alice_secret = alice_secret
        self.issued: list[Issued] = []

    def send(self, step: Request | Raw) -> list[bytes]:
        if isinstance(step, Raw):
            return self.gateway.send(step.source, step.datagram)
        datagram = self.build(step, now_code(self.core, self.alice_secret, 1))
        user, state = read_as_server(datagram)
        if self._genuine(step, user, state):
            # Never the one genuine login (Alice's own State, back through the gateway that
            # issued it, or an append-mode gateway, whose first factor is "none"): everywhere
            # else Alice's valid code must not open the door.
            datagram = self.build(step, wrong_code(self.core, self.alice_secret))
        replies = self.gateway.send(step.source, datagram)
        for reply in replies:
            code, issued = check_signed(reply, step.identifier, step.authenticator)
            if code == CHALLENGE_CODE and issued is not None:
                self.issued.append(Issued(issued, user, step.source))
        return replies

    def _genuine(self, request: Request, user: str | None, state: bytes | None) -> bool:
        uses_code = any(isinstance(value, Password) and value.typed.alice_code
                        and value.secret == SECRET for _, value in request.attributes)
        return uses_code and user == "alice" and (MODES.get(request.source) == "append" or any(
            issued.value == state and issued.user == "alice" and issued.source == request.source
            for issued in self.issued))

    def build(self, request: Request, alice_code: str) -> bytes:
        """The datagram, with `alice_code` wherever the request types Alice's code."""
        body = b""
        for index, (kind, value) in enumerate(request.attributes):
            if isinstance(value, Password):
                raw = self._hide(request, value, alice_code)
            elif isinstance(value, Captured):
                raw = self.issued[value.index % len(self.issued)].value if self.issued else b""
            else:
                raw = value
            length = len(raw) + 2
            if request.broken_attribute is not None and request.broken_attribute[0] == index:
                length = request.broken_attribute[1]
            body += struct.pack("!BB", kind, length) + raw
        return self._sign(request, body)

    @staticmethod
    def _hide(request: Request, password: Password, alice_code: str) -> bytes:
        typed = password.typed
        text = typed.text
        if typed.alice_code:
            text = f"{text},{alice_code}" if typed.appended else alice_code
        return hide_password(password.secret, request.authenticator,
                             text.encode("utf-8")[:128])

    @staticmethod
    def _sign(request: Request, body: bytes) -> bytes:
        kind = request.message_authenticator
        if kind != "none":
            body += struct.pack("!BB", MESSAGE_AUTHENTICATOR, 18 if kind != "short" else 7)
            body += bytes(16 if kind != "short" else 5)
            if kind == "twice":
                body += struct.pack("!BB", MESSAGE_AUTHENTICATOR, 18) + bytes(16)
        length = max(0, min(0xFFFF, HEADER.size + len(body) + request.length_delta))
        datagram = HEADER.pack(request.code, request.identifier, length,
                               request.authenticator) + body
        if kind in ("right", "other-secret", "twice"):
            offset = len(datagram) - 16 - (18 if kind == "twice" else 0)
            key = SECRET if kind != "other-secret" else OTHER_SECRET
            signed = message_authenticator(key, datagram, offset)
            datagram = datagram[:offset] + signed + datagram[offset + 16:]
        elif kind == "random":
            datagram = datagram[:-16] + secrets.token_bytes(16)
        return datagram[:len(datagram) - request.cut] if request.cut else datagram


def check_signed(reply: bytes, identifier: int, authenticator: bytes) -> tuple[int, bytes | None]:
    """A reply as a gateway checks it: its code and State, after asserting that it answers
    this request and is signed with the shared secret both ways."""
    code, reply_id, length, response = HEADER.unpack_from(reply)
    assert reply_id == identifier and length == len(reply)
    attributes, state, offset, position = reply[HEADER.size:], None, None, HEADER.size
    while position < len(reply):
        kind, size = reply[position], reply[position + 1]
        if kind == MESSAGE_AUTHENTICATOR:
            offset = position + 2
        elif kind == STATE and state is None:
            state = reply[position + 2:position + size]
        position += size
    expected = hashlib.md5(reply[:4] + authenticator + attributes + SECRET).digest()  # noqa: S324
    assert response == expected, "the Response Authenticator does not verify"
    assert offset is not None, "a reply without Message-Authenticator"
    unsigned = reply[:4] + authenticator + reply[HEADER.size:]
    assert reply[offset:offset + 16] == message_authenticator(SECRET, unsigned, offset)
    return code, state


# -- what the fuzzer draws ------------------------------------------------------------------------

gateways = st.sampled_from([CHALLENGE, APPEND, AUTOPUSH, LEGACY, STRANGER])
texts = st.one_of(
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.sampled_from(["", "push", "PUSH", " ", "password", "pw,push", "pw,"]),
    st.text(st.characters(codec="utf-8"), max_size=40),
)
typed = st.one_of(
    st.builds(Typed, text=texts),
    st.builds(Typed, text=st.just(""), alice_code=st.just(True)),
    st.builds(Typed, text=st.sampled_from(["pw", ""]) | texts, alice_code=st.just(True),
              appended=st.just(True)),
)
passwords = st.one_of(
    st.builds(Password, typed=typed, secret=mostly(SECRET, st.just(OTHER_SECRET))),
    st.binary(max_size=253),  # not hidden as RFC 2865 says: any length, any bytes
)
user_names = mostly(b"alice", st.sampled_from([b"bob", b"mallory", b"", b"ALICE", b"alice\x00"])
                    | st.binary(max_size=253))
states = mostly(Captured(-1), st.one_of(st.builds(Captured, st.integers(0, 7)),
                                        st.binary(max_size=253),
                                        st.text(st.characters(codec="utf-8"), max_size=40).map(
                                            str.encode)))
others = st.tuples(st.integers(0, 255), st.binary(max_size=253))
"""Any attribute, known or not, User-Name, State and Message-Authenticator included."""


@dataclass(frozen=True)
class Damage:
    """For a damaged request, each part is damaged one time in eight; else it is as usual."""

    draw: st.DrawFn
    damaged: bool

    def __call__(self, usual: T, otherwise: st.SearchStrategy[T]) -> T:
        return self.draw(mostly(usual, otherwise)) if self.damaged else usual


@st.composite
def requests(draw: st.DrawFn, first: bool = False) -> Request:
    """An Access-Request (mostly). Half of them are well-formed, so that the dialogue is
    reached; the others have one or more of the damages a gateway or an attacker can do."""
    damaged = not first and draw(st.booleans())
    damage = Damage(draw, damaged)
    attributes: list[tuple[int, Value]] = []
    if damage(True, st.just(False)):
        attributes.append((USER_NAME, draw(user_names)))
    if damage(True, st.just(False)):
        attributes.append((USER_PASSWORD, draw(passwords)))
    if not first and draw(st.booleans()):
        attributes.append((STATE, draw(states)))
    attributes += draw(st.lists(others, max_size=2) | st.lists(others, min_size=10, max_size=20)
                       if damaged else st.just([]))
    order = damage(tuple(attributes), st.permutations(attributes).map(tuple))
    broken = None
    if damage(False, st.just(True)) and order:
        broken = (draw(st.integers(0, len(order) - 1)), draw(st.integers(0, 255)))
    return Request(
        source=draw(st.sampled_from([CHALLENGE, LEGACY, AUTOPUSH, APPEND]) if first else mostly(
            CHALLENGE, gateways)),
        code=damage(packet.AccessRequest, st.sampled_from(
            [packet.StatusServer, packet.AccessAccept, packet.AccountingRequest]) | st.integers(
            0, 255)),
        identifier=draw(st.integers(0, 255)),
        authenticator=draw(st.binary(min_size=16, max_size=16)),
        attributes=order,
        message_authenticator=damage("right", st.sampled_from(
            ["none", "random", "other-secret", "short", "twice"])),
        length_delta=damage(0, st.integers(-30, 30) | st.integers(-0xFFFF, 0xFFFF)),
        broken_attribute=broken,
        cut=damage(0, st.integers(1, 40)),
    )


raws = st.builds(Raw, gateways, st.binary(max_size=4200) | st.builds(
    lambda head, tail: head + tail,
    st.builds(HEADER.pack, st.sampled_from([packet.AccessRequest, packet.StatusServer]),
              st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(min_size=16, max_size=16)),
    st.binary(max_size=300)))
examples = st.builds(lambda first, then: [first, *then], requests(first=True),
                     st.lists(st.one_of(requests(), requests(), requests(), raws), max_size=5))
"""A first request that gets a State, mostly; then what may use it, or not."""


# -- the tests ------------------------------------------------------------------------------------


@pytest.fixture
def log() -> Iterator[ServerLog]:
    with server_log("unified_mfa.radius") as lines:
        yield lines


@dataclass
class Setup:
    core: MFA
    responder: RunningResponder
    alice_secret: str


def confirmed_totp(core: MFA, name: str) -> str:
    """A user with a confirmed TOTP; the confirming code is this step's (tests use the next)."""
    core.add_user(name)
    secret = secret_of(core.enroll(name, "totp").uri)
    assert core.authenticate_code(name, now_code(core, secret), RequestContext()).granted
    return secret


@pytest.fixture
def setup(home: Path, store_url: str, core: MFA) -> Iterator[Setup]:
    alice = confirmed_totp(core, "alice")
    confirmed_totp(core, "bob")
    mfa = MFA.open(home, store=store_url)
    responder = RunningResponder(mfa, home)
    try:
        yield Setup(core, responder, alice)
    finally:
        responder.close()
        mfa.close()


def status_server() -> Request:
    return Request(CHALLENGE, packet.StatusServer, 1, secrets.token_bytes(16), (), "right",
                   0, None, 0)


def access_request(user: bytes, typed: Typed, state: bytes | None = None) -> Request:
    attributes: list[tuple[int, Value]] = [(USER_NAME, user),
                                           (USER_PASSWORD, Password(typed, SECRET))]
    if state is not None:
        attributes.append((STATE, state))
    return Request(CHALLENGE, packet.AccessRequest, secrets.randbelow(256),
                   secrets.token_bytes(16), tuple(attributes), "right", 0, None, 0)


def only_code(replies: list[bytes]) -> int:
    assert len(replies) == 1, replies
    return replies[0][0]


def test_no_fuzzed_datagram_gets_an_accept_or_upsets_the_server(setup: Setup,
                                                                 log: ServerLog) -> None:
    """One responder for all the examples, as in production: nothing one gateway sent may
    change what the next request gets, nor stop the server."""

    @given(steps=examples)
    @fuzz_settings(120)
    def fuzz(steps: list[Request | Raw]) -> None:
        log.errors.clear()
        gateway = Gateway(setup.responder)
        example = Example(gateway, setup.core, setup.alice_secret)
        try:
            for step in steps:
                for reply in example.send(step):
                    alive = isinstance(step, Request) and step.code == packet.StatusServer
                    assert reply[0] != ACCEPT or alive, (step, reply)
            assert only_code(example.send(status_server())) == ACCEPT
        finally:
            gateway.close()
        assert log.errors == []

    fuzz()
    gateway = Gateway(setup.responder)
    login = Example(gateway, setup.core, setup.alice_secret)
    first = login.send(access_request(b"alice", Typed("password")))
    assert only_code(first) == CHALLENGE_CODE and login.issued
    code = now_code(setup.core, setup.alice_secret, 1)
    assert only_code(login.send(access_request(b"alice", Typed(code), login.issued[-1].value))
                     ) == ACCEPT
    gateway.close()


# -- what the fuzzer found, kept as plain tests -------------------------------------------------


def test_a_user_password_of_broken_length_is_rejected_without_an_error(setup: Setup,
                                                                        log: ServerLog) -> None:
    """RFC 2865 §5.2: a hidden password is whole 16-byte blocks; 5 bytes is a broken gateway,
    refused as a wrong password is, not a failure inside the server."""
    gateway = Gateway(setup.responder)
    request = replace(access_request(b"alice", Typed("password")),
                      attributes=((USER_NAME, b"alice"), (USER_PASSWORD, b"12345")))
    assert only_code(Example(gateway, setup.core, setup.alice_secret).send(request)) == (
        packet.AccessReject)
    gateway.close()
    assert log.errors == []
