"""Property tests of the PAM socket protocol (docs/pam-protocol.md) and of the daemon behind it.

The codec is fed arbitrary text and bytes: what `encode` builds decodes back to itself, `decode`
and `read_line` refuse everything else with `ProtocolError` and nothing else, and no carriage
return, line feed or NUL ever survives into a line. Then random conversations (verbs, arguments,
orders, raw bytes, oversize lines, early hang-ups) go to a running daemon over its real socket:
none of them ever gets `ACCEPT` unless it answered with a valid code, every line the daemon
sends is in protocol, and the daemon still lets the user in with a valid code afterwards.
Bounds and a longer campaign: tests/fuzzing.py and docs/security-testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from pam_unified_mfa.core import MFA
from pam_unified_mfa.core.verification import normalise_code
from pam_unified_mfa.pamd import protocol as p
from tests.fuzzing import ServerLog, fuzz_settings, mostly, server_log, without_lockout
from tests.test_pamd import TIMEOUT, Client, Daemon, last, now_code, push_user

FORBIDDEN = (b"\r", b"\n", b"\0")
MODULE_VERBS = (p.HELLO, *p.HEADERS, p.BEGIN, p.ANSWER)
DAEMON_VERBS = (p.INFO, p.ERROR, p.PROMPT, p.PROMPT_ECHO, p.ACCEPT, p.REJECT, p.UNAVAILABLE)
ENDED = re.compile(r"pamd: (uid|user)=")
"""The one line the daemon logs when a connection ends (server.handle)."""
USERS = ("alice", "nobody-here", "carol")
"""alice has TOTP and a push device; nobody-here does not exist (S06); carol has no factor."""


@pytest.fixture
def home(home: Path) -> Path:
    return without_lockout(home)


# -- the codec ----------------------------------------------------------------------------------

verbs = st.from_regex(r"[A-Z][A-Z_]{0,15}", fullmatch=True)
sendable = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"),
                   max_size=p.MAX_LINE)
"""Arguments the protocol allows: any text without a line break or NUL (lone surrogates are
not text and cannot be UTF-8)."""


@given(verb=verbs, argument=st.one_of(st.none(), sendable))
@fuzz_settings(400)
def test_encode_then_decode_gives_back_every_allowed_line(verb: str, argument: str | None) -> None:
    fits = len(verb.encode()) + (0 if argument is None else 1 + len(argument.encode())) < p.MAX_LINE
    if not fits:
        with pytest.raises(p.ProtocolError):
            p.encode(verb, argument)
        return
    data = p.encode(verb, argument)
    assert data.endswith(b"\n") and len(data) <= p.MAX_LINE
    assert p.decode(data) == p.Line(verb, argument or "")


any_text = st.text(st.characters(exclude_categories=()), max_size=1100)
"""Any Python string, lone surrogates and line breaks included."""


@given(verb=verbs | st.text(max_size=20), argument=st.none() | any_text)
@fuzz_settings(400)
def test_encode_refuses_with_protocol_error_what_it_cannot_send(verb: str,
                                                                argument: str | None) -> None:
    try:
        data = p.encode(verb, argument)
    except p.ProtocolError:
        return
    assert p.decode(data) == p.Line(verb, argument or "")


@given(data=st.binary(max_size=1100) | st.builds(
    lambda head, tail: head + tail, st.sampled_from([v.encode() for v in MODULE_VERBS]),
    st.binary(max_size=1100)))
@fuzz_settings(400)
def test_decode_raises_only_protocol_error_and_never_keeps_a_line_break_or_nul(
        data: bytes) -> None:
    try:
        line = p.decode(data)
    except p.ProtocolError:
        return
    assert not any(ch in line.argument.encode("utf-8") for ch in FORBIDDEN)
    assert data in (p.encode(line.verb, line.argument), p.encode(line.verb))


@given(text=any_text | st.text(max_size=3000), verb=st.sampled_from(DAEMON_VERBS))
@fuzz_settings(300)
def test_multi_line_text_becomes_lines_that_fit_and_hold_no_line_break_or_nul(
        text: str, verb: str) -> None:
    for data in p.text_lines(verb, text):
        assert len(data) <= p.MAX_LINE
        assert not any(ch in data[:-1] for ch in FORBIDDEN)
        assert p.decode(data).verb == verb


async def _read_all(chunks: list[bytes]) -> list[p.Line]:
    """Lines read from a stream that receives `chunks` one at a time, as from a socket."""
    reader = asyncio.StreamReader(limit=p.MAX_LINE)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    lines: list[p.Line] = []
    try:
        while (line := await p.read_line(reader)) is not None:
            lines.append(line)
    finally:
        await feeder
    return lines


@given(chunks=st.lists(st.binary(min_size=1, max_size=700) | st.sampled_from(
    [b"\n", b"HELLO 1\n", b"ANSWER 123456\n", b"USER " + b"u" * 1018 + b"\n", b"x" * 1030]),
    max_size=8))
@fuzz_settings(300)
def test_read_line_raises_only_protocol_error_on_any_stream(chunks: list[bytes]) -> None:
    try:
        lines = asyncio.run(_read_all(chunks))
    except p.ProtocolError:
        return
    for line in lines:
        assert not any(ch in line.argument.encode("utf-8") for ch in FORBIDDEN)
    assert b"".join(chunks).count(b"\n") == len(lines)


# -- conversations with a running daemon --------------------------------------------------------

texts = st.one_of(
    st.sampled_from(["", "push", "PUSH", " ", "secure", "safe", "open", "1", *USERS]),
    st.from_regex(r"[0-9 -]{1,10}", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=40),
)
long_texts = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=250,
                     max_size=p.MAX_LINE - 10)
"""Names, hosts and services longer than anything the store keeps, that still fit a line."""
headers_texts = texts | long_texts
lines = st.builds(p.encode, st.sampled_from(MODULE_VERBS + DAEMON_VERBS) | verbs,
                  st.none() | texts)
answers = st.builds(p.encode, st.just(p.ANSWER), st.one_of(
    st.from_regex(r"[0-9]{6}", fullmatch=True), st.sampled_from(["", "push"]), texts))
raw = st.binary(max_size=64) | st.sampled_from([
    b"ANSWER " + b"1" * (p.MAX_LINE - 7) + b"\n",  # one byte over the limit
    b"ANSWER " + b"1" * 3 * p.MAX_LINE,  # over the limit, and never ends
    b"ANSWER 12\r\n", b"ANSWER 1\x002\n", b"ANSWER \xff\xfe\n", b"HELLO 1\n"])


@dataclass(frozen=True)
class Conversation:
    opening: bytes
    """The module's opening (HELLO to BEGIN), or b"" for none: the moves start cold."""
    moves: tuple[bytes, ...]
    hang_up_after: int | None
    """Close the whole connection (not only the sending side) after this many moves."""

    def data(self) -> bytes:
        return self.opening + b"".join(self.moves[:self.hang_up_after])


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    opening = b""
    if draw(mostly(True)):  # a good opening, so that the dialogue is reached
        headers = [p.encode(p.USER, draw(mostly("alice", st.sampled_from(USERS) | headers_texts)))]
        if draw(st.booleans()):
            headers.append(p.encode(p.FAILMODE, draw(st.sampled_from(p.FAIL_MODES) | mostly(
                "safe", texts))))
        if draw(st.booleans()):
            headers.append(p.encode(p.AUTOPUSH))
        if draw(st.booleans()):
            headers.append(p.encode(p.RHOST, draw(headers_texts)))
        if draw(st.booleans()):
            headers.append(p.encode(p.SERVICE, draw(headers_texts)))
        opening = p.encode(p.HELLO, p.VERSION) + b"".join(
            draw(st.permutations(headers))) + p.encode(p.BEGIN)
    moves = tuple(draw(st.lists(st.one_of(answers, answers, answers, lines, raw), max_size=8)))
    hang_up = draw(mostly(None, st.integers(0, len(moves))))
    return Conversation(opening, moves, hang_up)


def valid_codes(core: MFA, secret: str) -> set[str]:
    """Every code the core could take for this secret around now (the window, and one more)."""
    reach = core.settings.totp.window + 2
    return {now_code(secret, core, k) for k in range(-reach, reach + 1)}


def answered_codes(data: bytes) -> set[str]:
    """The codes a stream answered with, as the core would read them."""
    codes = set()
    for raw_line in data.splitlines(keepends=True):
        with contextlib.suppress(p.ProtocolError):
            line = p.decode(raw_line)
            if line.verb == p.ANSWER:
                codes.add(normalise_code(line.argument))
    return codes


def talk(path: Path, conversation: Conversation) -> bytes:
    """Send the conversation, hang up as it says, and return every byte the daemon sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(conversation.data())
        if conversation.hang_up_after is not None:
            return b""  # the module gave up: whatever the daemon decides, nobody hears it
        sock.shutdown(socket.SHUT_WR)  # the module sends no more: the daemon must end
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


@dataclass
class Target:
    daemon: Daemon
    core: MFA
    secret: str
    log: ServerLog
    connections: int = 0

    def ended(self) -> int:
        """Connections the daemon has finished: it logs one line for each, whatever happened."""
        return sum(bool(ENDED.match(message)) for message in self.log.messages)

    def wait_until_all_ended(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.ended() < self.connections:
            assert time.monotonic() < deadline, "the daemon left a connection open"
            time.sleep(0.001)


@pytest.fixture
def target(home: Path, store_url: str, core: MFA, run_dir: Path) -> Iterator[Target]:
    secret, _device = push_user(core, "alice")
    core.add_user("carol")
    mfa = MFA.open(home, store=store_url)
    running = Daemon(mfa, run_dir / "run" / "pamd.sock")
    try:
        with server_log("unified_mfa.pamd") as log:
            yield Target(running, core, secret, log)
    finally:
        running.close()
        mfa.close()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="umfa-fuzz-"))  # short: a socket path holds 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_fuzzed_conversation_is_accepted_and_a_valid_login_works_after(
        target: Target) -> None:
    """One daemon for all the examples, as in production: what one connection did must not
    help the next one, nor stop the daemon."""
    core, secret = target.core, target.secret

    @given(conversation=conversations())
    @fuzz_settings(150)
    def fuzz(conversation: Conversation) -> None:
        received = talk(target.daemon.path, conversation)
        target.connections += 1
        target.wait_until_all_ended()  # so that what it logs belongs to this example
        sent_a_valid_code = bool(answered_codes(conversation.data()) & valid_codes(core, secret))
        replies = [p.decode(raw_line) for raw_line in received.splitlines(keepends=True)]
        assert all(line.verb in (p.HELLO, *DAEMON_VERBS) for line in replies)
        event(f"daemon's last line: {replies[-1].verb if replies else 'none'}")
        event(f"codes checked: {sum(line.verb == p.ERROR for line in replies)}")
        if not sent_a_valid_code:
            assert p.Line(p.ACCEPT) not in replies, conversation
        assert target.log.errors == []

    fuzz()
    accepted = [e for e in core.audit_tail(100_000)
                if e.action == "mfa.login" and e.outcome == "accepted"]
    assert accepted == []
    client = Client(target.daemon.path)
    assert last(client.start("alice")).verb == p.PROMPT
    assert client.answer(now_code(secret, core, 1)) == [p.Line(p.ACCEPT)]
    client.close()


# -- what the fuzzer found, kept as plain tests -------------------------------------------------


def test_a_module_that_hangs_up_with_lines_unread_is_logged_as_abandoned(target: Target) -> None:
    """A close with the daemon's lines unread resets the connection: an abandoned login, not
    an internal error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(target.daemon.path))
        sock.sendall(p.encode(p.HELLO, p.VERSION) + p.encode(p.USER, "alice") + p.encode(p.BEGIN))
        sock.settimeout(TIMEOUT)
        while p.PROMPT.encode() not in sock.recv(4096, socket.MSG_PEEK):  # there, and unread
            time.sleep(0.001)
    target.connections += 1
    target.wait_until_all_ended()
    assert target.log.errors == []
    assert any("abandoned" in message for message in target.log.messages)


def test_s06_names_hosts_and_services_longer_than_the_store_keeps_get_the_decoy_prompt(
        target: Target) -> None:
    long = "x" * 600
    client = Client(target.daemon.path)
    client.send(p.HELLO, p.VERSION)
    assert client.line() == p.Line(p.HELLO, p.VERSION)
    for verb in (p.USER, p.RHOST, p.SERVICE):
        client.send(verb, long)
    client.send(p.BEGIN)
    assert last(client.round()).verb == p.PROMPT
    assert client.answer("123456")[0].verb == p.ERROR  # refused like any unknown user's code
    client.close()
    assert target.log.errors == []
