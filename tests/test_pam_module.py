"""The C PAM module pam_unified_mfa.so, driven for real (docs/pam-protocol.md).

The module is built with its own Makefile into a temporary directory and loaded by libpam:
through `pamtester` (an ordinary PAM application: what the user sees, the PAM result it
prints) and, where a test needs the exact PAM return code or the exact shape of each
conversation call, through libpam called with ctypes and a scripted conversation function.
Each test writes a throwaway /etc/pam.d service whose only auth line is the module, and runs a
fake daemon: a Unix socket server that speaks the protocol and records every byte the module
sent. The standard session's bytes are kept in tests/data/pam_module_session.txt for the
daemon's own tests; a test proves the module still produces exactly those bytes (after a
deliberate protocol change, UNIFIED_MFA_REGENERATE_PAM_SESSION=1 rewrites the file).

What the module must do: relay INFO/ERROR/PROMPT in one conversation call per prompt, send
answers without ever letting a line break through, map ACCEPT/REJECT to success/failure,
apply its fail mode (secure: PAM_AUTHINFO_UNAVAIL, safe: success with a warning) to anything
that is the daemon's fault (down, untrusted socket, timeout, protocol error), fail closed on a
bad configuration or an unsendable value, never log an answer, and leak nothing (valgrind).

Needs root (it writes /etc/pam.d) and the Debian packages build-essential, libpam0g-dev,
pamtester and valgrind; a missing one fails the test, it is never skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import build_pam_module, require_tool

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "pam_unified_mfa" / "pam"
SESSION_FILE = ROOT / "tests" / "data" / "pam_module_session.txt"
SESSION_SERVICE = "unified-mfa-test-session"
REGENERATE = os.environ.get("UNIFIED_MFA_REGENERATE_PAM_SESSION") == "1"

# PAM return codes and message styles (security/_pam_types.h, Linux-PAM)
PAM_SUCCESS = 0
PAM_SERVICE_ERR = 3
PAM_AUTH_ERR = 7
PAM_AUTHINFO_UNAVAIL = 9
PAM_CONV_ERR = 19
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4

# What pamtester prints (pam_strerror) for each result
SUCCESS_TEXT = "successfully authenticated"
AUTH_ERR_TEXT = "Authentication failure"
UNAVAIL_TEXT = "Authentication service cannot retrieve authentication info"
SERVICE_ERR_TEXT = "Error in service module"

# syslog priorities the module uses: LOG_AUTHPRIV (10 << 3) | severity
LOG_AUTHPRIV = 10 << 3
LOG_ERR, LOG_WARNING = 3, 4

NOBODY = 65534
IO_TIMEOUT = 20.0


# --- building ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the PAM module tests need root: they write /etc/pam.d services")
    return build_pam_module(tmp_path_factory.mktemp("pam-build"))


# --- the fake daemon ---------------------------------------------------------------------


class Peer:
    """One connection from the module, as the daemon sees it; every byte read is recorded."""

    def __init__(self, conn: socket.socket, record: bytearray) -> None:
        self.conn = conn
        self.record = record
        self.pending = b""

    def read_line(self) -> bytes | None:
        """The next line without its newline, or None once the module closed."""
        while b"\n" not in self.pending:
            chunk = self.conn.recv(4096)
            if not chunk:
                return None
            self.record.extend(chunk)
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def handshake(self) -> None:
        """HELLO 1 both ways, then the session lines up to BEGIN."""
        assert self.read_line() == b"HELLO 1"
        self.send(b"HELLO 1\n")
        while self.read_line() not in (b"BEGIN", None):
            pass

    def hang_up(self) -> None:
        self.conn.shutdown(socket.SHUT_RDWR)

    def drain(self) -> None:
        """Records the rest of what the module sends, until it closes (or we hung up)."""
        while self.read_line() is not None:
            pass


Handler = Callable[[Peer], None]


@dataclass
class FakeDaemon:
    """A Unix socket server speaking the protocol; `handler` plays the daemon's side."""

    path: Path
    handler: Handler
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.server.listen(8)
        self.server.settimeout(0.1)
        self.stopping = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        peer = Peer(conn, self.received)
        try:
            self.handler(peer)
            peer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the module hung up first: what it sent is recorded all the same
        except BaseException as error:
            self.errors.append(error)
        finally:
            conn.close()

    def stop(self, check: bool = True) -> None:
        """Waits for every connection to end, closes the listening socket, and fails the test
        if the daemon's side (a handler's assertion) went wrong."""
        if not self.stopping.is_set():
            for thread in self.threads:
                thread.join(IO_TIMEOUT)
            self.stopping.set()
            self.acceptor.join(IO_TIMEOUT)
            self.server.close()
        assert not (check and self.errors), self.errors


def accept_after_code(peer: Peer) -> None:
    peer.handshake()
    peer.send(b"PROMPT Passcode: \n")
    assert peer.read_line() == b"ANSWER 123456"
    peer.send(b"ACCEPT\n")


# --- syslog capture ----------------------------------------------------------------------


class SyslogCapture:
    """What pamtester sends to /dev/log, received on a socket of the test's own.

    A thread reads while pamtester runs: a datagram socket queues only a few records
    (net.unix.max_dgram_qlen) and syslog() blocks once the queue is full.
    """

    def __init__(self, sock: socket.socket, wrap: Callable[[list[str]], list[str]]) -> None:
        self.sock = sock
        self.wrap = wrap
        self.records: list[bytes] = []
        self.done = threading.Event()
        self.sock.settimeout(0.05)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(TimeoutError):
                self.records.append(self.sock.recv(8192))

    def lines(self) -> list[tuple[int, str]]:
        """(priority, text) of each record; call it once the logging process has ended."""
        self.done.set()
        self.reader.join()
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.records.append(self.sock.recv(8192))
        out: list[tuple[int, str]] = []
        for record in self.records:
            priority, _, text = record.decode(errors="replace")[1:].partition(">")
            out.append((int(priority), text))
        return out


@contextlib.contextmanager
def syslog_capture(directory: Path) -> Iterator[SyslogCapture]:
    """Binds a datagram socket where pamtester's syslog() goes.

    Where /dev/log exists (a syslog daemon runs) pamtester runs in a private mount namespace
    with the test's socket bound over /dev/log; where it does not, the socket is /dev/log.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dev_log = Path("/dev/log")
    owned = False
    capture: SyslogCapture | None = None
    try:
        if not os.path.lexists(dev_log):
            try:
                sock.bind(str(dev_log))
                owned = True
            except OSError:
                pass  # another run just took it: use a namespace instead
        if owned:
            capture = SyslogCapture(sock, lambda cmd: cmd)
        else:
            private = directory / "log"
            sock.bind(str(private))
            script = 'mount --bind "$0" /dev/log && exec "$@"'
            capture = SyslogCapture(
                sock,
                lambda cmd: [
                    "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                    str(private), *cmd,
                ],
            )
        yield capture
    finally:
        if capture is not None:
            capture.done.set()
            capture.reader.join()
        sock.close()
        if owned:
            dev_log.unlink()


# --- libpam through ctypes ---------------------------------------------------------------


class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(_Message)),
    ctypes.POINTER(ctypes.POINTER(_Response)),
    ctypes.c_void_p,
)


class _Conv(ctypes.Structure):
    _fields_ = [("conv", _CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.calloc.restype = ctypes.c_void_p
_LIBC.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_LIBC.strdup.restype = ctypes.c_void_p
_LIBC.strdup.argtypes = [ctypes.c_char_p]


@dataclass
class ConvResult:
    code: int
    calls: list[list[tuple[int, bytes]]]  # each conversation call: (style, text) per message


def libpam_authenticate(
    service: str,
    user: str,
    answers: list[bytes],
    fail_conversation: bool = False,
    answer_after: float = 0.0,
) -> ConvResult:
    """pam_authenticate() in this process, with a conversation function that records each call
    and answers each prompt with the next of `answers` (or fails, like a user who hung up),
    taking `answer_after` seconds like a slow user."""
    libpam = ctypes.CDLL("libpam.so.0")
    calls: list[list[tuple[int, bytes]]] = []
    queue = list(answers)

    def conversation(n: int, messages: Any, response: Any, _data: Any) -> int:
        batch = [(messages[i].contents.msg_style, messages[i].contents.msg) for i in range(n)]
        calls.append(batch)
        if fail_conversation:
            return PAM_CONV_ERR
        time.sleep(answer_after)  # the module measures real time: a slow user takes real time
        replies = ctypes.cast(
            _LIBC.calloc(n, ctypes.sizeof(_Response)), ctypes.POINTER(_Response)
        )
        for i, (style, _text) in enumerate(batch):
            if style in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON):
                replies[i].resp = _LIBC.strdup(queue.pop(0))
        response[0] = replies
        return PAM_SUCCESS

    callback = _CONV_FUNC(conversation)
    conv = _Conv(callback, None)
    handle = ctypes.c_void_p()
    started = libpam.pam_start(
        service.encode(), user.encode(), ctypes.byref(conv), ctypes.byref(handle)
    )
    assert started == PAM_SUCCESS
    code = libpam.pam_authenticate(handle, 0)
    libpam.pam_end(handle, code)
    return ConvResult(code, calls)


# --- PAM services and pamtester ----------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str  # stdout and stderr together
    seconds: float


class Pam:
    """Throwaway PAM services for the built module, a socket directory, and ways to run them."""

    def __init__(self, module: Path, workdir: Path) -> None:
        self.module = module
        self.workdir = workdir
        self.socket = workdir / "pamd.sock"
        self.services: list[Path] = []
        self.daemons: list[FakeDaemon] = []

    def daemon(self, handler: Handler, path: Path | None = None) -> FakeDaemon:
        daemon = FakeDaemon(path or self.socket, handler)
        self.daemons.append(daemon)
        return daemon

    def service(self, *options: str, socket_path: Path | None = None, name: str = "") -> str:
        """An /etc/pam.d service whose auth stack is the module alone, with these options."""
        name = name or f"unified-mfa-test-{secrets.token_hex(6)}"
        path = Path("/etc/pam.d") / name
        args = " ".join((f"socket={socket_path or self.socket}", *options))
        path.write_text(f"auth required {self.module} {args}\n")
        self.services.append(path)
        return name

    def pamtester(
        self,
        service: str,
        user: str = "alice",
        stdin: bytes = b"123456\n",
        items: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] = lambda cmd: cmd,
        valgrind: bool = False,
    ) -> Run:
        command = [require_tool("pamtester", "pamtester"), "-v"]
        for key, value in (items or {}).items():
            command += ["-I", f"{key}={value}"]
        command += [service, user, "authenticate"]
        if valgrind:
            command = [
                require_tool("valgrind", "valgrind"), "-q", "--error-exitcode=99",
                "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", *command,
            ]
        start = time.monotonic()
        done = subprocess.run(
            wrap(command), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=120,
        )
        return Run(done.returncode, done.stdout.decode(errors="replace"), time.monotonic() - start)

    def close(self) -> None:
        for path in self.services:
            path.unlink(missing_ok=True)
        for daemon in self.daemons:
            daemon.stop(check=False)
        errors = [error for daemon in self.daemons for error in daemon.errors]
        assert not errors, errors


@pytest.fixture
def pam(module_path: Path) -> Iterator[Pam]:
    # a short, root-owned 0700 directory: socket paths must fit sun_path (108 bytes)
    workdir = Path(tempfile.mkdtemp(prefix="umfa-"))
    helper = Pam(module_path, workdir)
    try:
        yield helper
    finally:
        try:
            helper.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def sent_lines(daemon: FakeDaemon) -> list[bytes]:
    return bytes(daemon.received).splitlines()


# --- building and installing -------------------------------------------------------------


def test_make_install_puts_the_module_in_libdir_security(module_path: Path, tmp_path: Path) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    subprocess.run(
        ["make", "-C", str(MODULE_DIR), f"OUT={out}", f"DESTDIR={dest}",
         "LIBDIR=/lib/x86_64-linux-gnu", "install"],
        check=True, capture_output=True,
    )
    installed = dest / "lib/x86_64-linux-gnu/security/pam_unified_mfa.so"
    assert installed.is_file()
    assert installed.stat().st_mode & 0o777 == 0o644
    subprocess.run(["make", "-C", str(MODULE_DIR), f"OUT={out}", "clean"], check=True,
                   capture_output=True)
    assert not (out / "pam_unified_mfa.so").exists()


# --- the standard session ----------------------------------------------------------------


def test_standard_session_sends_exactly_the_recorded_bytes(pam: Pam) -> None:
    daemon = pam.daemon(accept_after_code)
    service = pam.service(name=SESSION_SERVICE)
    run = pam.pamtester(service)
    daemon.stop()
    assert run.returncode == 0, run.output
    if REGENERATE:
        SESSION_FILE.parent.mkdir(exist_ok=True)
        SESSION_FILE.write_bytes(bytes(daemon.received))
    assert bytes(daemon.received) == SESSION_FILE.read_bytes()
    assert SESSION_FILE.read_bytes() == (
        b"HELLO 1\nUSER alice\nSERVICE unified-mfa-test-session\nFAILMODE secure\nBEGIN\n"
        b"ANSWER 123456\n"
    )


def test_accept_authenticates_the_user(pam: Pam) -> None:
    pam.daemon(accept_after_code)
    run = pam.pamtester(pam.service())
    assert run.returncode == 0
    assert SUCCESS_TEXT in run.output


def test_reject_fails_with_auth_error_and_shows_its_text(pam: Pam) -> None:
    def reject(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT Passcode: \n")
        peer.read_line()
        peer.send(b"REJECT That code is not valid.\n")

    pam.daemon(reject)
    run = pam.pamtester(pam.service())
    assert run.returncode != 0
    assert AUTH_ERR_TEXT in run.output
    assert "That code is not valid." in run.output


def test_reject_text_is_one_error_message_after_the_pending_ones(pam: Pam) -> None:
    def reject(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO Your account is locked.\nREJECT Contact the help desk.\n")

    pam.daemon(reject)
    result = libpam_authenticate(pam.service(), "alice", [])
    assert result.code == PAM_AUTH_ERR
    assert result.calls == [
        [(PAM_TEXT_INFO, b"Your account is locked."), (PAM_ERROR_MSG, b"Contact the help desk.")]
    ]


def test_prompt_text_reaches_the_user(pam: Pam) -> None:
    def prompt(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT Protect code for alice: \n")
        peer.read_line()
        peer.send(b"ACCEPT\n")

    pam.daemon(prompt)
    run = pam.pamtester(pam.service())
    assert "Protect code for alice: " in run.output
    assert run.returncode == 0


def test_info_lines_reach_the_user(pam: Pam) -> None:
    def info(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO Scan this code with the app:\nINFO otpauth-line-two\nPROMPT Code: \n")
        peer.read_line()
        peer.send(b"ACCEPT\n")

    pam.daemon(info)
    run = pam.pamtester(pam.service())
    assert "Scan this code with the app:\notpauth-line-two" in run.output
    assert run.returncode == 0


def test_info_and_error_lines_come_with_the_prompt_in_one_conversation_call(pam: Pam) -> None:
    def rounds(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO first\nINFO \nERROR second\nINFO third with  spaces \nPROMPT Code: \n")
        assert peer.read_line() == b"ANSWER 111111"
        peer.send(b"ACCEPT\n")

    pam.daemon(rounds)
    result = libpam_authenticate(pam.service(), "alice", [b"111111"])
    assert result.code == PAM_SUCCESS
    assert result.calls == [
        [
            (PAM_TEXT_INFO, b"first\n"),
            (PAM_ERROR_MSG, b"second"),
            (PAM_TEXT_INFO, b"third with  spaces "),
            (PAM_PROMPT_ECHO_OFF, b"Code: "),
        ]
    ]


def test_prompt_echo_asks_with_echo_on(pam: Pam) -> None:
    def press_enter(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT_ECHO Approve on your phone, then press Enter\n")
        assert peer.read_line() == b"ANSWER "
        peer.send(b"ACCEPT\n")

    pam.daemon(press_enter)
    result = libpam_authenticate(pam.service(), "alice", [b""])
    assert result.code == PAM_SUCCESS
    assert result.calls == [[(PAM_PROMPT_ECHO_ON, b"Approve on your phone, then press Enter")]]


def test_several_rounds_each_answered_in_turn(pam: Pam) -> None:
    def two_rounds(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT Code: \n")
        assert peer.read_line() == b"ANSWER 000000"
        peer.send(b"ERROR Wrong code, try again.\nPROMPT Code: \n")
        assert peer.read_line() == b"ANSWER 123456"
        peer.send(b"ACCEPT\n")

    daemon = pam.daemon(two_rounds)
    result = libpam_authenticate(pam.service(), "alice", [b"000000", b"123456"])
    daemon.stop()
    assert result.code == PAM_SUCCESS
    assert result.calls == [
        [(PAM_PROMPT_ECHO_OFF, b"Code: ")],
        [(PAM_ERROR_MSG, b"Wrong code, try again."), (PAM_PROMPT_ECHO_OFF, b"Code: ")],
    ]
    assert sent_lines(daemon)[-2:] == [b"ANSWER 000000", b"ANSWER 123456"]


def test_remote_host_tty_failmode_and_autopush_are_forwarded(pam: Pam) -> None:
    daemon = pam.daemon(accept_after_code)
    service = pam.service("failmode=safe", "autopush")
    run = pam.pamtester(service, items={"rhost": "203.0.113.7", "tty": "ssh"})
    daemon.stop()
    assert run.returncode == 0, run.output
    assert sent_lines(daemon) == [
        b"HELLO 1",
        b"USER alice",
        f"SERVICE {service}".encode(),
        b"RHOST 203.0.113.7",
        b"TTY ssh",
        b"FAILMODE safe",
        b"AUTOPUSH",
        b"BEGIN",
        b"ANSWER 123456",
    ]


def test_conversation_failure_returns_conv_err_and_sends_no_answer(pam: Pam) -> None:
    daemon = pam.daemon(prompt_once)
    result = libpam_authenticate(pam.service(), "alice", [], fail_conversation=True)
    daemon.stop()
    assert result.code == PAM_CONV_ERR
    assert sent_lines(daemon)[-1] == b"BEGIN"


# --- answers that must not be sent -------------------------------------------------------


def prompt_once(peer: Peer) -> None:
    peer.handshake()
    peer.send(b"PROMPT Code: \n")


def test_answer_with_a_carriage_return_is_refused_and_nothing_of_it_sent(pam: Pam) -> None:
    daemon = pam.daemon(prompt_once)
    run = pam.pamtester(pam.service("failmode=safe"), stdin=b"123456\rACCEPT\n")
    daemon.stop()
    assert run.returncode != 0
    assert AUTH_ERR_TEXT in run.output
    assert b"ANSWER" not in daemon.received
    assert b"123456" not in daemon.received


def test_answer_with_a_line_feed_is_refused_and_nothing_of_it_sent(pam: Pam) -> None:
    daemon = pam.daemon(prompt_once)
    result = libpam_authenticate(pam.service("failmode=safe"), "alice", [b"123456\nACCEPT"])
    daemon.stop()
    assert result.code == PAM_AUTH_ERR
    assert b"ANSWER" not in daemon.received


def test_answer_filling_exactly_1024_bytes_is_sent(pam: Pam) -> None:
    answer = b"7" * (1024 - len(b"ANSWER \n"))

    def long_answer(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT Code: \n")
        assert peer.read_line() == b"ANSWER " + answer
        peer.send(b"ACCEPT\n")

    pam.daemon(long_answer)
    run = pam.pamtester(pam.service(), stdin=answer + b"\n")
    assert run.returncode == 0, run.output


def test_answer_one_byte_over_the_line_limit_is_refused(pam: Pam) -> None:
    daemon = pam.daemon(prompt_once)
    answer = b"7" * (1024 - len(b"ANSWER \n") + 1)
    run = pam.pamtester(pam.service("failmode=safe"), stdin=answer + b"\n")
    daemon.stop()
    assert run.returncode != 0
    assert AUTH_ERR_TEXT in run.output
    assert b"ANSWER" not in daemon.received


# --- values the module will not send -----------------------------------------------------


def test_user_name_with_a_line_break_is_refused_before_connecting(pam: Pam) -> None:
    daemon = pam.daemon(accept_after_code)
    run = pam.pamtester(pam.service("failmode=safe"), user="alice\nUSER root")
    daemon.stop()
    assert run.returncode != 0
    assert AUTH_ERR_TEXT in run.output
    assert daemon.connections == 0


def test_remote_host_with_a_line_break_fails_closed_even_in_safe_mode(pam: Pam) -> None:
    daemon = pam.daemon(accept_after_code)
    run = pam.pamtester(pam.service("failmode=safe"), items={"rhost": "host\nUSER root"})
    daemon.stop()
    assert run.returncode != 0
    assert UNAVAIL_TEXT in run.output
    assert daemon.connections == 0


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        "bogus",
        "Debug",
        "timeout=0",
        "timeout=601",
        "timeout=abc",
        "timeout=",
        "timeout=+5",
        "timeout=5s",
        "failmode=open",
        "failmode=",
        "socket=relative/pamd.sock",
        "socket=",
        "socket=/" + "x" * 120,
    ],
)
def test_unknown_or_malformed_option_fails_closed_even_in_safe_mode(
    pam: Pam, option: str
) -> None:
    daemon = pam.daemon(accept_after_code)
    run = pam.pamtester(pam.service("failmode=safe", option))
    daemon.stop()
    assert run.returncode != 0
    assert SERVICE_ERR_TEXT in run.output
    assert daemon.connections == 0


def test_timeout_bounds_are_accepted(pam: Pam) -> None:
    pam.daemon(accept_after_code)
    for option in ("timeout=1", "timeout=600"):
        run = pam.pamtester(pam.service(option))
        assert run.returncode == 0, (option, run.output)


# --- fail mode ---------------------------------------------------------------------------


def test_daemon_down_with_failmode_secure_is_authinfo_unavailable(pam: Pam) -> None:
    run = pam.pamtester(pam.service("failmode=secure"))
    assert run.returncode != 0
    assert UNAVAIL_TEXT in run.output


def test_daemon_down_fails_secure_by_default(pam: Pam) -> None:
    run = pam.pamtester(pam.service())
    assert run.returncode != 0
    assert UNAVAIL_TEXT in run.output


def test_daemon_down_with_failmode_safe_fails_open_with_a_warning(pam: Pam) -> None:
    with syslog_capture(pam.workdir) as log:
        run = pam.pamtester(pam.service("failmode=safe"), wrap=log.wrap)
        lines = log.lines()
    assert run.returncode == 0, run.output
    assert SUCCESS_TEXT in run.output
    warnings = [text for priority, text in lines if priority == LOG_AUTHPRIV | LOG_WARNING]
    assert any("failing open" in text and "alice" in text for text in warnings), lines


def test_socket_that_nobody_listens_on_applies_the_fail_mode(pam: Pam) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(pam.socket))
    os.chmod(pam.socket, 0o600)
    stale.close()  # the file stays, nobody accepts
    run = pam.pamtester(pam.service())
    assert UNAVAIL_TEXT in run.output


def test_unavailable_from_the_daemon_applies_the_fail_mode(pam: Pam) -> None:
    def unavailable(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"UNAVAILABLE\n")

    pam.daemon(unavailable)
    secure = pam.pamtester(pam.service("failmode=secure"))
    safe = pam.pamtester(pam.service("failmode=safe"))
    assert secure.returncode != 0
    assert UNAVAIL_TEXT in secure.output
    assert safe.returncode == 0, safe.output


def test_daemon_closing_early_applies_the_fail_mode(pam: Pam) -> None:
    def hang_up_after_begin(peer: Peer) -> None:
        peer.handshake()
        peer.hang_up()

    pam.daemon(hang_up_after_begin)
    secure = pam.pamtester(pam.service())
    safe = pam.pamtester(pam.service("failmode=safe"))
    assert UNAVAIL_TEXT in secure.output
    assert safe.returncode == 0, safe.output


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"INFO " + b"x" * 1019 + b"\n", id="line-of-1025-bytes"),
        pytest.param(b"INFO " + b"x" * 5000 + b"\nACCEPT\n", id="much-longer-line"),
        pytest.param(b"INFO a\rb\nACCEPT\n", id="carriage-return"),
        pytest.param(b"INFO a\x00b\nACCEPT\n", id="nul"),
        pytest.param(b"INFO caf\xe9\nACCEPT\n", id="latin-1-not-utf-8"),
        pytest.param(b"INFO \xc0\xaf\nACCEPT\n", id="overlong-utf-8"),
        pytest.param(b"accept\n", id="lower-case-verb"),
        pytest.param(b"GRANT\n", id="unknown-verb"),
        pytest.param(b"ACCEPT now\n", id="accept-with-argument"),
        pytest.param(b"INFO m\n" * 65 + b"PROMPT Code: \n", id="65-messages"),
    ],
)
def test_protocol_error_from_the_daemon_applies_the_fail_mode(pam: Pam, reply: bytes) -> None:
    def broken(peer: Peer) -> None:
        peer.handshake()
        peer.send(reply)

    daemon = pam.daemon(broken)
    run = pam.pamtester(pam.service())
    daemon.stop()
    assert run.returncode != 0
    assert UNAVAIL_TEXT in run.output
    assert b"ANSWER" not in daemon.received


def test_line_of_exactly_1024_bytes_is_accepted(pam: Pam) -> None:
    text = b"x" * (1024 - len(b"INFO \n"))

    def long_info(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO " + text + b"\nACCEPT\n")

    pam.daemon(long_info)
    result = libpam_authenticate(pam.service(), "alice", [])
    assert result.code == PAM_SUCCESS
    assert result.calls == [[(PAM_TEXT_INFO, text)]]


def test_64_info_lines_travel_as_one_message_with_the_prompt(pam: Pam) -> None:
    """sshd refuses a conversation call of more than 32 messages; a QR code is ~35 lines."""

    def many(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO m\n" * 64 + b"PROMPT Code: \n")
        peer.read_line()
        peer.send(b"ACCEPT\n")

    pam.daemon(many)
    result = libpam_authenticate(pam.service(), "alice", [b"1"])
    assert result.code == PAM_SUCCESS
    assert result.calls[0] == [(PAM_TEXT_INFO, b"\n".join([b"m"] * 64)),
                               (PAM_PROMPT_ECHO_OFF, b"Code: ")]


@pytest.mark.parametrize("hello", [b"HELLO 2\n", b"HELLO\n", b"PROMPT Code: \n"])
def test_daemon_not_answering_hello_1_applies_the_fail_mode(pam: Pam, hello: bytes) -> None:
    def other_version(peer: Peer) -> None:
        assert peer.read_line() == b"HELLO 1"
        peer.send(hello)
        peer.drain()

    daemon = pam.daemon(other_version)
    run = pam.pamtester(pam.service())
    daemon.stop()
    assert UNAVAIL_TEXT in run.output
    assert sent_lines(daemon)[-1] == b"BEGIN"  # the opening, and nothing after it
    assert b"ANSWER" not in daemon.received


def test_opening_is_sent_before_the_daemon_answers_hello(pam: Pam) -> None:
    """HELLO to BEGIN in one go: the daemon wakes once, and a login saves a round trip."""
    def hello_after_begin(peer: Peer) -> None:
        while peer.read_line() not in (b"BEGIN", None):
            pass  # nothing sent yet: a module waiting for HELLO would time out here
        peer.send(b"HELLO 1\nPROMPT Passcode: \n")
        assert peer.read_line() == b"ANSWER 123456"
        peer.send(b"ACCEPT\n")

    pam.daemon(hello_after_begin)
    run = pam.pamtester(pam.service("timeout=5"))
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("stage", ["before-hello", "after-begin"])
def test_silent_daemon_times_out_into_the_fail_mode(pam: Pam, stage: str) -> None:
    def silent(peer: Peer) -> None:
        if stage == "after-begin":
            peer.handshake()

    pam.daemon(silent)
    run = pam.pamtester(pam.service("timeout=2"))
    assert UNAVAIL_TEXT in run.output
    # It gave up because of timeout=2, not at once: the deadline was honoured.
    assert run.seconds >= 1.8, run.seconds


def test_time_spent_answering_does_not_count_against_the_timeout(pam: Pam) -> None:
    """A user who waits at the prompt past timeout= must not make failmode=safe fail open."""

    def slow_verdict(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"PROMPT Code: \n")
        assert peer.read_line() == b"ANSWER 000000"
        time.sleep(0.3)  # the daemon checks the code, well within the 1 s it has left
        peer.send(b"REJECT That code is not valid.\n")

    pam.daemon(slow_verdict)
    service = pam.service("timeout=1", "failmode=safe")
    result = libpam_authenticate(service, "alice", [b"000000"], answer_after=1.5)
    assert result.code == PAM_AUTH_ERR


# --- the socket must be trusted ----------------------------------------------------------


def _untrust(kind: str, pam: Pam) -> Path:
    """Makes the socket (or its directory) untrusted in one way; returns the socket= path."""
    if kind == "socket-owned-by-nobody":
        os.chown(pam.socket, NOBODY, NOBODY)
    elif kind == "socket-group-writable":
        os.chmod(pam.socket, 0o620)
    elif kind == "socket-other-writable":
        os.chmod(pam.socket, 0o602)  # noqa: S103 (deliberately unsafe)
    elif kind == "directory-owned-by-nobody":
        os.chown(pam.workdir, NOBODY, NOBODY)
    elif kind == "directory-group-writable":
        os.chmod(pam.workdir, 0o770)  # noqa: S103 (deliberately unsafe)
    elif kind == "symlink-to-the-socket":
        link = pam.workdir / "link.sock"
        link.symlink_to(pam.socket)
        return link
    elif kind == "regular-file":
        other = pam.workdir / "file.sock"
        other.write_bytes(b"")
        other.chmod(0o600)
        return other
    return pam.socket


@pytest.mark.parametrize(
    "kind",
    [
        "socket-owned-by-nobody",
        "socket-group-writable",
        "socket-other-writable",
        "directory-owned-by-nobody",
        "directory-group-writable",
        "symlink-to-the-socket",
        "regular-file",
    ],
)
def test_untrusted_socket_is_refused_before_connecting(pam: Pam, kind: str) -> None:
    daemon = pam.daemon(accept_after_code)
    target = _untrust(kind, pam)
    run = pam.pamtester(pam.service(socket_path=target))
    daemon.stop()
    assert run.returncode != 0
    assert UNAVAIL_TEXT in run.output
    assert daemon.connections == 0


# --- logging -----------------------------------------------------------------------------


def test_debug_logs_protocol_steps_but_never_the_answer(pam: Pam) -> None:
    pam.daemon(accept_after_code)
    with syslog_capture(pam.workdir) as log:
        run = pam.pamtester(pam.service("debug"), wrap=log.wrap)
        lines = log.lines()
    assert run.returncode == 0, run.output
    texts = [text for _priority, text in lines]
    assert all(priority & ~7 == LOG_AUTHPRIV for priority, _text in lines)
    for step in ("sent HELLO to BEGIN", "received PROMPT", "sent ANSWER", "received ACCEPT"):
        assert any(step in text for text in texts), (step, texts)
    assert not any("123456" in text for text in texts)


def test_refused_answer_is_logged_without_its_content(pam: Pam) -> None:
    pam.daemon(prompt_once)
    with syslog_capture(pam.workdir) as log:
        run = pam.pamtester(pam.service("debug"), stdin=b"654321\rX\n", wrap=log.wrap)
        lines = log.lines()
    assert run.returncode != 0
    errors = [text for priority, text in lines if priority == LOG_AUTHPRIV | LOG_ERR]
    assert any("refused an answer" in text for text in errors), lines
    assert not any("654321" in text for _priority, text in lines)


# --- memory ------------------------------------------------------------------------------


def _valgrind_scenarios() -> dict[str, tuple[Handler | None, bytes]]:
    def reject(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO a\nERROR b\nPROMPT Code: \n")
        peer.read_line()
        peer.send(b"INFO c\nREJECT No.\n")

    def overlong(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO x\n" + b"y" * 2000)

    def info_then_prompt(peer: Peer) -> None:
        peer.handshake()
        peer.send(b"INFO a\nPROMPT Code: \n")

    return {
        "accept": (accept_after_code, b"123456\n"),
        "reject": (reject, b"123456\n"),
        "protocol-error": (overlong, b""),
        "refused-answer": (info_then_prompt, b"12\r34\n"),
        "conversation-error": (info_then_prompt, b""),
        "daemon-down": (None, b""),
    }


@pytest.mark.e2e
@pytest.mark.parametrize("scenario", list(_valgrind_scenarios()))
def test_module_is_valgrind_clean(pam: Pam, scenario: str) -> None:
    handler, stdin = _valgrind_scenarios()[scenario]
    if handler is not None:
        pam.daemon(handler)
    run = pam.pamtester(pam.service(), stdin=stdin, valgrind=True)
    assert run.returncode != 99, run.output
    assert "definitely lost" not in run.output
    assert (run.returncode == 0) == (scenario == "accept"), run.output
