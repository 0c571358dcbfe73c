"""The PAM daemon at the protocol level (docs/pam-protocol.md): the lines it sends for each step
of the core's dialogue, what it refuses (long lines, foreign peers, broken headers), its socket,
and that it serves several logins at once.

The daemon runs on real time in a thread on a temporary socket; a plain socket client speaks to
it with the daemon's own encoder, and with the bytes the C module wrote for a standard session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.pamd import protocol as p
from pam_unified_mfa.pamd import server
from pam_unified_mfa.pamd.session import (
    PROMPT_CODE,
    PROMPT_CODE_OR_PUSH,
    PROMPT_ENROLL,
)
from tests.helpers import Device, secret_of, wrong_code

MODULE_SESSION = Path(__file__).parent / "data" / "pam_module_session.txt"
VERDICTS = (p.ACCEPT, p.REJECT, p.UNAVAILABLE)
ASKS = (p.PROMPT, p.PROMPT_ECHO)
TIMEOUT = 15.0
NOBODY = 65534


# -- the daemon and a client ------------------------------------------------------------------


class Daemon:
    """`serve` in its own thread and event loop, as `unified-mfa pamd` runs it."""

    def __init__(self, mfa: MFA, path: Path, deadline: float = 60.0) -> None:
        self.path = path
        self.mfa = mfa
        self.deadline = deadline
        self.listener = server.bind_socket(path)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(TIMEOUT)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.ready.set()
        await server.serve(self.mfa, self.listener, self.stop, self.deadline, poll_interval=0.05)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(TIMEOUT)
        self.listener.close()


class Client:
    """The module's side of one connection, built with the protocol's own encoder."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, verb: str, argument: str | None = None) -> None:
        self.sock.sendall(p.encode(verb, argument))

    def line(self) -> p.Line | None:
        data = self.reader.readline(p.MAX_LINE + 1)
        return p.decode(data) if data else None

    def round(self) -> list[p.Line]:
        """The lines up to and including the next prompt or verdict."""
        lines: list[p.Line] = []
        while (line := self.line()) is not None:
            lines.append(line)
            if line.verb in ASKS + VERDICTS:
                return lines
        raise EOFError(f"connection closed after {lines}")

    def closed(self) -> bool:
        """True when the daemon closed the connection (after any lines it sent)."""
        try:
            while self.line() is not None:
                pass
        except ConnectionResetError:
            pass
        return True

    def start(self, user: str, *, failmode: str = "secure", autopush: bool = False,
              service: str = "sshd", rhost: str = "192.0.2.7") -> list[p.Line]:
        self.send(p.HELLO, p.VERSION)
        assert self.line() == p.Line(p.HELLO, p.VERSION)
        self.send(p.USER, user)
        self.send(p.SERVICE, service)
        self.send(p.RHOST, rhost)
        self.send(p.TTY, "ssh")
        self.send(p.FAILMODE, failmode)
        if autopush:
            self.send(p.AUTOPUSH)
        self.send(p.BEGIN)
        return self.round()

    def answer(self, text: str) -> list[p.Line]:
        self.send(p.ANSWER, text)
        return self.round()


class LogLines(logging.Handler):
    """The daemon's log lines, with a way to wait for one written by the daemon's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.messages.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, text: str) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in m for m in self.messages), TIMEOUT)


def last(lines: list[p.Line]) -> p.Line:
    return lines[-1]


def now_code(secret: str, mfa: MFA, offset_steps: int = 0) -> str:
    params = mfa.settings.totp.params()
    return totp.code_at(secret, params, time.time() + offset_steps * params.period)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def pamd_log() -> Iterator[LogLines]:
    logger = logging.getLogger("unified_mfa.pamd")
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket path holds at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="umfa-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(run_dir: Path) -> Path:
    return run_dir / "run" / "pamd.sock"


@pytest.fixture
def daemon(home: Path, store_url: str, sock_path: Path) -> Iterator[Daemon]:
    mfa = MFA.open(home, store=store_url)
    running = Daemon(mfa, sock_path)
    yield running
    running.close()
    mfa.close()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    connection = Client(daemon.path)
    yield connection
    connection.close()


def totp_user(mfa: MFA, name: str = "alice") -> str:
    """A user with a confirmed TOTP factor; returns the secret. The confirming code is at the
    current step, so the tests' own codes use the next step (within the window)."""
    mfa.add_user(name)
    uri = mfa.enroll(name, "totp").uri
    secret = secret_of(uri)
    ctx = RequestContext(adapter="cli")
    assert mfa.authenticate_code(name, now_code(secret, mfa), ctx).granted
    return secret


def push_user(mfa: MFA, name: str = "alice") -> tuple[str, Device]:
    """A user with TOTP and a registered push device."""
    secret = totp_user(mfa, name)
    return secret, Device(mfa, mfa.enroll(name, "push").uri)


def push_number(line: p.Line) -> str:
    assert line.verb == p.PROMPT_ECHO
    assert line.argument.startswith("Approve the push on your device by choosing ")
    number = line.argument.split("choosing ")[1].split(",")[0]
    assert number.isdigit()
    return number


# -- the dialogue -------------------------------------------------------------------------------


def test_valid_code_is_accepted(core: MFA, client: Client) -> None:
    secret = totp_user(core)
    assert last(client.start("alice")) == p.Line(p.PROMPT, PROMPT_CODE)
    assert client.answer(now_code(secret, core, 1)) == [p.Line(p.ACCEPT)]
    assert client.closed()


def test_wrong_code_is_retried_then_rejected_after_the_cores_attempts(core: MFA,
                                                                      client: Client) -> None:
    secret = totp_user(core)
    client.start("alice")
    wrong = wrong_code(core, secret)
    attempts = core.settings.dialogue.max_attempts
    for _ in range(attempts - 1):
        lines = client.answer(wrong)
        assert [line.verb for line in lines] == [p.ERROR, p.PROMPT]
        assert lines[0].argument.startswith("Invalid passcode")
        assert last(lines) == p.Line(p.PROMPT, PROMPT_CODE)
    assert client.answer(wrong) == [p.Line(p.REJECT, "Access denied")]


def test_s01_replayed_code_is_rejected(core: MFA, daemon: Daemon) -> None:
    secret = totp_user(core)
    code = now_code(secret, core, 1)
    first, second = Client(daemon.path), Client(daemon.path)
    first.start("alice")
    assert first.answer(code) == [p.Line(p.ACCEPT)]
    second.start("alice")
    replay = second.answer(code)
    assert last(replay).verb == p.PROMPT and replay[0].verb == p.ERROR
    first.close()
    second.close()


def test_s06_unknown_user_gets_the_same_first_prompt_as_a_known_one(core: MFA,
                                                                    daemon: Daemon) -> None:
    push_user(core)
    known, unknown = Client(daemon.path), Client(daemon.path)
    assert known.start("alice") == unknown.start("nobody-here")
    assert unknown.answer("123456")[0].verb == p.ERROR
    known.close()
    unknown.close()


def test_s06_unknown_user_gets_a_push_number_too(client: Client) -> None:
    assert last(client.start("nobody-here")) == p.Line(p.PROMPT, PROMPT_CODE_OR_PUSH)
    push_number(last(client.answer("")))


def test_user_without_a_factor_is_refused_by_the_default_enforcement(core: MFA,
                                                                     client: Client) -> None:
    core.add_user("carol")
    (line,) = client.start("carol")
    assert line.verb == p.REJECT and "No MFA method" in line.argument


def test_enroll_at_login_sends_the_qr_code_the_uri_and_a_prompt(core: MFA,
                                                                client: Client) -> None:
    core.add_user("dave")
    core.set_enforcement("dave", "enroll_at_login")
    lines = client.start("dave")
    assert last(lines) == p.Line(p.PROMPT, PROMPT_ENROLL)
    infos = [line.argument for line in lines[:-1]]
    assert all(line.verb == p.INFO for line in lines[:-1])
    assert sum("\u2588" in text for text in infos) > 20  # the QR code, one line per row
    uri = next(text for text in infos if text.startswith("otpauth://"))
    assert parse_uri(uri).account.endswith("dave")
    assert client.answer(now_code(secret_of(uri), core)) == [p.Line(p.ACCEPT)]


def test_unified_hint_comes_before_the_first_prompt(core: MFA, client: Client) -> None:
    secret = totp_user(core)
    core.add_admin("boss", roles=("billing",))
    core.confirm("boss", core.preview("boss", "merge").confirmation)
    lines = client.start("alice")
    assert lines[0].verb == p.INFO and "Protect" in lines[0].argument
    assert last(lines).verb == p.PROMPT
    assert client.answer(now_code(secret, core, 1)) == [p.Line(p.ACCEPT)]


# -- push ---------------------------------------------------------------------------------------


def test_enter_sends_a_push_whose_approval_is_accepted(core: MFA, client: Client) -> None:
    _, device = push_user(core)
    assert last(client.start("alice")) == p.Line(p.PROMPT, PROMPT_CODE_OR_PUSH)
    number = push_number(last(client.answer("")))
    client.send(p.ANSWER, "")  # the user presses Enter and the daemon waits for the device
    assert device.approve(number) == "approved"
    assert client.round() == [p.Line(p.ACCEPT)]


def test_a_denied_push_is_rejected(core: MFA, client: Client) -> None:
    _, device = push_user(core)
    client.start("alice")
    client.answer("push")
    client.send(p.ANSWER, "")
    challenge = core.pending_pushes(device.factor_id)[0].id
    core.answer_push(device.sign(challenge, "deny"))
    assert client.round() == [p.Line(p.REJECT, "The push was denied")]


def test_a_code_typed_at_the_push_prompt_is_checked_as_a_code(core: MFA, client: Client) -> None:
    secret, _ = push_user(core)
    client.start("alice")
    client.answer("")
    assert client.answer(now_code(secret, core, 1)) == [p.Line(p.ACCEPT)]


def test_autopush_shows_the_number_at_once(core: MFA, client: Client) -> None:
    _, device = push_user(core)
    number = push_number(last(client.start("alice", autopush=True)))
    assert device.approve(number) == "approved"
    assert client.answer("") == [p.Line(p.ACCEPT)]


def test_autopush_without_a_push_device_asks_for_a_code(core: MFA, client: Client) -> None:
    totp_user(core)
    assert last(client.start("alice", autopush=True)) == p.Line(p.PROMPT, PROMPT_CODE)


# -- fail mode (S07) ----------------------------------------------------------------------------


@pytest.fixture
def broken_daemon(home: Path, run_dir: Path) -> Iterator[Daemon]:
    """A daemon whose store cannot be opened: every step is the core's UNAVAILABLE."""
    mfa = MFA.open(home, store=f"sqlite:///{run_dir / 'missing' / 'store.db'}", migrate=False)
    running = Daemon(mfa, run_dir / "pamd.sock")
    yield running
    running.close()
    mfa.close()


def test_s07_store_down_with_failmode_secure_is_unavailable(broken_daemon: Daemon) -> None:
    client = Client(broken_daemon.path)
    assert client.start("alice", failmode="secure") == [p.Line(p.UNAVAILABLE)]
    client.close()


def test_s07_store_down_with_failmode_safe_is_accepted(broken_daemon: Daemon) -> None:
    client = Client(broken_daemon.path)
    assert client.start("alice", failmode="safe") == [p.Line(p.ACCEPT)]
    client.close()


# -- protocol errors and peers ------------------------------------------------------------------


def test_overlong_line_closes_the_connection(client: Client) -> None:
    client.send(p.HELLO, p.VERSION)
    assert client.line() == p.Line(p.HELLO, p.VERSION)
    client.sock.sendall(b"USER " + b"a" * (p.MAX_LINE - 5) + b"\n")  # 1025 bytes
    assert client.line() is None


def test_line_without_end_beyond_the_limit_closes_the_connection(client: Client) -> None:
    client.sock.sendall(b"HELLO 1\nUSER " + b"a" * 4 * p.MAX_LINE)
    assert client.line() == p.Line(p.HELLO, p.VERSION)
    assert client.line() is None


def test_line_of_exactly_the_limit_is_accepted(core: MFA, client: Client) -> None:
    client.send(p.HELLO, p.VERSION)
    client.line()
    client.sock.sendall(b"SERVICE " + b"s" * (p.MAX_LINE - 9) + b"\n")  # 1024 bytes
    client.send(p.USER, "nobody-here")
    client.send(p.BEGIN)
    assert last(client.round()).verb == p.PROMPT


@pytest.mark.parametrize("data", [b"HELLO 2\n", b"hello 1\n", b"HELLO 1\r\n", b"\xff\n"])
def test_bad_hello_closes_the_connection(client: Client, data: bytes) -> None:
    client.sock.sendall(data)
    assert client.line() is None


@pytest.mark.parametrize("header", [
    b"BEGIN\n",  # no USER
    b"USER alice\nUSER bob\nBEGIN\n",  # twice
    b"USER alice\nANSWER 1\n",  # before BEGIN
    b"USER alice\nFAILMODE open\nBEGIN\n",
    b"USER al\x00ice\nBEGIN\n",
])
def test_bad_header_closes_the_connection(client: Client, header: bytes) -> None:
    client.send(p.HELLO, p.VERSION)
    client.line()
    client.sock.sendall(header)
    assert client.line() is None


def test_a_line_other_than_answer_after_a_prompt_closes_the_connection(client: Client) -> None:
    client.start("nobody-here")
    client.send(p.USER, "root")
    assert client.line() is None


def test_a_module_that_hangs_up_abandons_the_dialogue(daemon: Daemon,
                                                       pamd_log: LogLines) -> None:
    client = Client(daemon.path)
    client.start("nobody-here")
    client.close()
    assert pamd_log.wait_for("abandoned: the module closed the connection")
    follow = Client(daemon.path)  # the daemon keeps serving
    assert last(follow.start("nobody-here")).verb == p.PROMPT
    follow.close()


def test_hanging_up_during_a_push_wait_abandons_the_login(core: MFA, daemon: Daemon,
                                                          pamd_log: LogLines) -> None:
    _, device = push_user(core)
    client = Client(daemon.path)
    client.start("alice")
    number = push_number(last(client.answer("")))
    client.send(p.ANSWER, "")
    client.close()  # the user gave up while the daemon waits for the device
    assert pamd_log.wait_for("abandoned: the module closed the connection")
    device.approve(number)  # too late: nobody is logging in any more
    assert not any("accept" in message for message in pamd_log.messages)
    assert not [e for e in core.audit_tail(50)
                if e.action == "mfa.login" and e.outcome == "accepted" and e.adapter == "pam"]


def test_a_dialogue_past_the_deadline_is_closed(home: Path, store_url: str,
                                                run_dir: Path) -> None:
    mfa = MFA.open(home, store=store_url)
    running = Daemon(mfa, run_dir / "pamd.sock", deadline=0.5)
    try:
        client = Client(running.path)
        client.start("nobody-here")
        assert client.line() is None  # nobody answered within the deadline
        client.close()
    finally:
        running.close()
        mfa.close()


def _connect_as(uid: int, path: Path) -> bytes:
    """Connect and say HELLO from a child process running as `uid`; what the daemon sent."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        status = 0
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(TIMEOUT)
                sock.connect(str(path))
                data = b"connected:"
                # The daemon may close before HELLO is sent, or with it unread.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(p.encode(p.HELLO, p.VERSION))
                    while chunk := sock.recv(4096):
                        data += chunk
            os.write(write_end, data)
        except BaseException as exc:
            os.write(write_end, f"error:{type(exc).__name__}".encode())
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        result = reader.read()
    os.waitpid(pid, 0)
    return result


def test_a_peer_with_another_uid_is_refused(daemon: Daemon, pamd_log: LogLines) -> None:
    assert os.geteuid() == 0, "the suite runs as root (CI does): needed to become nobody"
    # Open the socket to everyone so that only the daemon's own peer check stands in the way.
    for directory in (daemon.path.parent.parent, daemon.path.parent):
        os.chmod(directory, 0o755)  # noqa: S103
    os.chmod(daemon.path, 0o666)  # noqa: S103
    assert _connect_as(NOBODY, daemon.path) == b"connected:"  # closed without a word
    assert pamd_log.wait_for(f"refused a connection from uid {NOBODY}")


def test_root_peer_is_served(client: Client) -> None:
    assert os.geteuid() == 0
    assert last(client.start("nobody-here")).verb == p.PROMPT


def test_concurrent_sessions_do_not_wait_for_each_other(core: MFA, daemon: Daemon) -> None:
    _, device = push_user(core, "alice")
    secret_bob = totp_user(core, "bob")
    alice, bob = Client(daemon.path), Client(daemon.path)
    alice.start("alice")
    bob.start("bob")
    number = push_number(last(alice.answer("")))
    alice.send(p.ANSWER, "")  # alice's push now waits on the device ...
    assert bob.answer(now_code(secret_bob, core, 1)) == [p.Line(p.ACCEPT)]  # ... bob gets in
    device.approve(number)
    assert alice.round() == [p.Line(p.ACCEPT)]
    alice.close()
    bob.close()


def test_many_sessions_at_once_each_get_their_prompt(daemon: Daemon) -> None:
    clients = [Client(daemon.path) for _ in range(20)]
    for each in clients:
        each.send(p.HELLO, p.VERSION)
    for each in clients:
        assert each.line() == p.Line(p.HELLO, p.VERSION)
        each.send(p.USER, "nobody-here")
        each.send(p.BEGIN)
    for each in clients:
        assert last(each.round()).verb == p.PROMPT
        each.close()


def test_the_log_has_one_line_per_decision_and_never_the_code(core: MFA, client: Client,
                                                              pamd_log: LogLines) -> None:
    secret = totp_user(core)
    wrong, code = wrong_code(core, secret), now_code(secret, core, 1)
    client.start("alice")
    client.answer(wrong)
    client.answer(code)
    assert pamd_log.wait_for("user=alice")
    assert pamd_log.messages == ["pamd: user=alice service=sshd rhost=192.0.2.7 uid=0 accept"]
    assert not any(code in m or wrong in m for m in pamd_log.messages)


# -- the bytes the C module sends ---------------------------------------------------------------


def module_session() -> list[bytes]:
    """The module's lines for a standard session, as it wrote them to tests/data."""
    data = MODULE_SESSION.read_bytes()
    assert data.endswith(b"\n")
    return data.splitlines(keepends=True)


def test_module_session_file_is_well_formed() -> None:
    lines = [p.decode(raw) for raw in module_session()]
    verbs = [line.verb for line in lines]
    assert verbs[0] == p.HELLO and lines[0].argument == p.VERSION
    assert p.USER in verbs and p.FAILMODE in verbs
    assert verbs[verbs.index(p.BEGIN) + 1:] == [p.ANSWER]
    assert all(verb in (p.HELLO, *p.HEADERS, p.BEGIN, p.ANSWER) for verb in verbs)


def test_module_session_bytes_are_answered_in_protocol(core: MFA, daemon: Daemon) -> None:
    """Replays the module's bytes verbatim, with a valid code for a user of that name."""
    user = next(p.decode(raw).argument for raw in module_session() if raw.startswith(b"USER "))
    secret = totp_user(core, user)
    code = p.encode(p.ANSWER, now_code(secret, core, 1))
    client = Client(daemon.path)
    client.sock.sendall(b"".join(code if raw.startswith(b"ANSWER") else raw
                                 for raw in module_session()))
    replies: list[p.Line] = []
    while (line := client.line()) is not None:
        replies.append(line)
    client.close()
    assert replies[0] == p.Line(p.HELLO, p.VERSION)
    assert [line.verb for line in replies[1:]] == [p.PROMPT, p.ACCEPT]


# -- the socket ---------------------------------------------------------------------------------


def test_socket_is_0600_in_a_new_0700_directory(run_dir: Path) -> None:
    path = run_dir / "new" / "pamd.sock"
    listener = server.bind_socket(path)
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert path.parent.stat().st_uid == os.geteuid()
    finally:
        listener.close()


def test_a_stale_socket_is_replaced(run_dir: Path) -> None:
    path = run_dir / "pamd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    listener = server.bind_socket(path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(path))
    finally:
        listener.close()


def test_a_live_socket_is_not_taken_over(run_dir: Path) -> None:
    path = run_dir / "pamd.sock"
    listener = server.bind_socket(path)
    try:
        with pytest.raises(ConfigError, match="another daemon"):
            server.bind_socket(path)
    finally:
        listener.close()


def test_a_file_in_the_sockets_place_is_not_removed(run_dir: Path) -> None:
    path = run_dir / "pamd.sock"
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        server.bind_socket(path)
    assert path.read_text() == "not a socket"


def test_pamd_command_serves_a_systemd_activated_socket(home: Path, store_url: str,
                                                       run_dir: Path) -> None:
    path = run_dir / "activated.sock"
    listener = server.bind_socket(path)
    fd = listener.fileno()
    script = f'LISTEN_FDS=1 LISTEN_PID=$$ exec "$@" 3<&{fd}'
    command = ["bash", "-c", script, "bash", sys.executable, "-m", "pam_unified_mfa.cli.main",
               "pamd", "--home", str(home), "--store", store_url,
               "--socket", str(run_dir / "unused" / "pamd.sock")]
    daemon = subprocess.Popen(command, pass_fds=(fd,), stderr=subprocess.PIPE,
                              cwd=Path(__file__).parent.parent)
    listener.close()
    try:
        client = Client(path)
        assert last(client.start("nobody-here")).verb == p.PROMPT
        client.close()
        assert not (run_dir / "unused").exists()
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=TIMEOUT)
    assert daemon.returncode == 0, err
    assert b"listening on the activated socket" in err


# -- the codec ----------------------------------------------------------------------------------


def test_encode_refuses_line_breaks_and_overlong_lines() -> None:
    with pytest.raises(p.ProtocolError):
        p.encode(p.ANSWER, "123\n456")
    with pytest.raises(p.ProtocolError):
        p.encode(p.ANSWER, "1\r")
    with pytest.raises(p.ProtocolError):
        p.encode(p.INFO, "x" * (p.MAX_LINE - len("INFO \n") + 1))
    assert len(p.encode(p.INFO, "x" * (p.MAX_LINE - len("INFO \n")))) == p.MAX_LINE


def test_decode_keeps_the_argument_literally() -> None:
    assert p.decode(b"ANSWER \n") == p.Line(p.ANSWER, "")
    assert p.decode(b"ANSWER\n") == p.Line(p.ANSWER, "")
    assert p.decode(b"REJECT two  spaces \n") == p.Line(p.REJECT, "two  spaces ")


def test_multi_line_text_becomes_lines_that_fit() -> None:
    lines = p.text_lines(p.INFO, "one\ntwo\n" + "\u2588" * 600)
    assert [p.decode(line).argument for line in lines[:2]] == ["one", "two"]
    assert all(len(line) <= p.MAX_LINE for line in lines)
    assert p.decode(lines[2]).argument.endswith("...")
