"""Access-Requests per second of `unified-mfa radius` against FreeRADIUS, and autopush logins held.

What is measured, in three parts:

1. **Throughput against FreeRADIUS.** One load generator (this process: UDP sockets polled with
   epoll, a bounded number of requests in flight, --in-flight) sends pre-built Access-Requests,
   each with a Message-Authenticator (encoded with pyrad), as fast as the server answers them:
   - to FreeRADIUS 3.2 (the Debian package) doing plain PAP from a users file: the `files`
     module finds the user's `Cleartext-Password`, `pap` compares it. FreeRADIUS runs from a
     minimal configuration of the bench's own (`freeradius -f -d DIR`), not the system service,
     a fresh process per run; every request has its own Request Authenticator, so none is
     answered from FreeRADIUS's duplicate cache;
   - to `unified-mfa radius` with a client in `append` mode and first factor `none`: each
     request is a complete TOTP login, `password,123456`, where the code is valid and fresh for
     that user, so the core's whole accept path runs (dialogue, seed decryption, the code in
     its window, replay protection, audit record).
   The rate is Access-Accepts per second over --seconds, after --warmup seconds of the same
   load that are not counted. Server CPU per request is the server processes' user+system time
   (/proc/PID/stat) over the same window, divided by the replies in it. Each part runs --runs
   times, interleaved, so that a change in the machine's load shows up as variance instead of
   as a difference between the servers; the ratios are taken within a run.

2. **SO_REUSEPORT scaling.** The same TOTP load against 1, 2, 4 … (--processes) `unified-mfa
   radius` processes on one port and one store; the kernel spreads requests over them by source
   port (the generator uses 64). The ratio to one process is printed. The machine's CPU count
   is printed with it: the load generator and the servers share those CPUs.

3. **Held autopush logins.** --held users, each with a registered push device, send their
   password from an `autopush` client: each gets an Access-Challenge with the number to pick
   (S03). Then all send the request that waits for the decision (the State, an empty password)
   at once, and one responder process holds them all. Its resident memory (VmRSS) is read
   before, after the challenges and while it holds them. Then a separate process approves every
   push through the core, signed by the device's key as the device API takes it, and the bench
   takes, per login, the time from the approval's commit to the Access-Accept reaching the
   generator (p50, p99). The responder learns of a decision made by another process through its
   store sweep, every 2 s (docs/radius.md): that is part of what a user waits for in a
   deployment too, where approvals arrive at `unified-mfa serve`. A warm-up round of --warm-held
   logins runs first in the same process, so that the baseline includes what any push login
   leaves behind.

Why: the RADIUS issue's goals are at least half of FreeRADIUS's rate from one process, a
near-linear gain with SO_REUSEPORT processes sharing the store, and 10,000 held autopush requests
with their memory and approve→Access-Accept latency recorded. The bench prints whether the first
two hold. It asserts nothing about timing; it fails (exit status 1) when the figures would not
mean what they say: a TOTP login that is not accepted, a held login that ends in anything but an
Access-Accept, a server that does not start.

Codes and replay protection: the core refuses a code for a time step the user has used (S01),
and takes codes for the previous, current and next step (window 1). So each of --users users
can log in once with the current step's code and once with the next step's, and once more per
30 s that pass. The bench keeps, per user, the newest step it spent, and orders each run's
requests so that no user's two requests are in flight together. If the fresh codes run out
before --seconds, the run is shorter and says so (raise --users).

How: a temporary home (`unified-mfa init`) on the embedded SQLite store (or --store postgresql:
a throwaway local cluster, as bench/core_totp.py starts one, or --pg-url), with settings that
keep product limits out of the way of the held round (push and dialogue lifetimes, the push
rate limit). Users are enrolled through the core: a TOTP factor confirmed with a code, and push
devices registered as bench/push_pending.py registers them. Every server process is stopped
at the end, also on Ctrl-C or SIGTERM (and killed by the kernel if the bench itself is), and
the temporary directory is removed.

    .venv/bin/python bench/radius_throughput.py [--users 6000] [--seconds 6] [--warmup 1.5]
        [--runs 2] [--processes 1,2,4] [--in-flight 128] [--freeradius-pool 400000]
        [--held 10000] [--warm-held 200] [--held-runs 1] [--approve-rate 0]
        [--skip-freeradius] [--skip-held] [--store sqlite|postgresql] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import platform
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from pyrad import dictionary, packet

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.enrollment_uri import parse_uri
from radius.server import load_dictionary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_pending import (  # a sibling bench, found through the line above
    Device,
    _die_with_parent,
    console_script,
    cpu_seconds,
    package_version,
    percentile,
    read_status,
    stop_on_signals,
)
from push_pending import setup as add_push_users

SECRET = "bench-radius-shared-secret"  # noqa: S105 - a throwaway shared secret on loopback
APPEND_SOURCE = "127.0.0.1"  # the `append` client of ours, and FreeRADIUS's client
AUTOPUSH_SOURCE = "127.0.0.2"  # the `autopush` client of ours
PASSWORD = "password"  # noqa: S105 - ours has first factor `none`; FreeRADIUS checks it
ACCEPT, REJECT, CHALLENGE = packet.AccessAccept, packet.AccessReject, packet.AccessChallenge
CODE_NAMES = {ACCEPT: "accept", REJECT: "reject", CHALLENGE: "challenge"}
SOCKETS = 64  # source ports of the load generator: SO_REUSEPORT spreads requests by source
IDS = 256  # RADIUS Identifiers per source port
GOAL_RATIO = 0.5  # of FreeRADIUS's rate, from one process
STEP_MARGIN = 25.0  # seconds a run may last: a code built for step s is good until s+1 ends
START_TIMEOUT = 30.0
REPLY_TIMEOUT = 10.0  # a request without a reply after this long is counted as lost
HOLD_TIMEOUT = 120.0  # seconds for the held requests to be taken in, and for the decisions
CTX = RequestContext(adapter="cli", client="bench")

SETTINGS_EXTRA = f"""
# bench/radius_throughput.py: product limits must not end the held round early
[dialogue]
ttl = "2h"

[push]
timeout = "1h"
max_per_window = 1000000

[radius]
first_factor = "none"

[[radius.clients]]
name = "bench-append"
address = "{APPEND_SOURCE}"
secret = "{SECRET}"
mode = "append"

[[radius.clients]]
name = "bench-autopush"
address = "{AUTOPUSH_SOURCE}"
secret = "{SECRET}"
mode = "autopush"
"""


class BenchFailure(Exception):
    """The run is not a measurement (a refused login, a server that did not start)."""


# -- server processes -------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def udp_queue(port: int) -> tuple[int, int]:
    """(bytes waiting in the receive queues, datagrams dropped) of every socket bound to
    `port`, from /proc/net/udp: a full receive buffer drops requests silently."""
    queued = dropped = 0
    with open("/proc/net/udp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port:
                queued += int(fields[4].partition(":")[2], 16)
                dropped += int(fields[12])
    return queued, dropped


@dataclass
class Servers:
    """Server processes that answer on one UDP port; the bench reads their CPU and memory."""

    label: str
    port: int
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    backends: str | None = None  # the process title of the store's server processes, if local

    def db_cpu(self) -> dict[int, float]:
        """CPU seconds of each database backend serving the store on this host (PostgreSQL
        forks one per pooled connection); they do part of the servers' work."""
        found: dict[int, float] = {}
        if not self.backends:
            return found
        title = self.backends.encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                if Path(entry.path, "cmdline").read_bytes().startswith(title):
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
        return found

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def cpu_each(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.pids]

    def rss_kb(self) -> int:
        return sum(read_status(pid)["VmRSS"] for pid in self.pids)

    def check_alive(self) -> None:
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-800:]
                raise BenchFailure(f"{self.label}: a server exited with status "
                                   f"{process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, needle: str,
                   label: str) -> None:
    """Until the process writes `needle` to its log; its exit or the timeout fails the run."""
    deadline = time.monotonic() + START_TIMEOUT
    while needle not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-800:]
            raise BenchFailure(f"{label} did not start:\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(servers: Servers) -> Iterator[Servers]:
    try:
        yield servers
    finally:
        servers.stop()


def start_ours(work: Path, home: Path, store: Store, count: int, tag: str) -> Servers:
    """`count` `unified-mfa radius` processes on one port (SO_REUSEPORT) and one store."""
    port = free_udp_port()
    store_args = ["--store", store.url] if store.url else []
    servers = Servers(f"unified-mfa radius x{count}", port, [], [], store.backends)
    try:
        for i in range(count):
            log = work / f"radius-{tag}-{i}.log"
            with log.open("wb") as out:
                # stdout and stderr into one file: the "listening" line and the log lines.
                servers.processes.append(subprocess.Popen(
                    [console_script("unified-mfa"), "radius", "--home", str(home), *store_args,
                     "--listen", f"127.0.0.1:{port}"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent))
            servers.logs.append(log)
            _wait_for_line(servers.processes[-1], log, "radius listening on udp", servers.label)
    except BaseException:
        servers.stop()
        raise
    return servers


FREERADIUS_CONF = """\
# A minimal FreeRADIUS for bench/radius_throughput.py: PAP against a users file, nothing else.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
name = freeradius
confdir = {dir}
modconfdir = {dir}
run_dir = {dir}
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1048576
hostname_lookups = no

log {{
	destination = stdout
	auth = no
}}

security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}}

# The Debian package's defaults.
thread pool {{
	start_servers = 5
	max_servers = 32
	min_spare_servers = 3
	max_spare_servers = 10
	max_requests_per_server = 0
	auto_limit_acct = no
}}

client bench {{
	ipaddr = {source}
	secret = {secret}
	require_message_authenticator = yes
}}

modules {{
	pap {{
	}}
	files {{
		filename = {dir}/users
	}}
}}

server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
}}
"""


def freeradius_config(work: Path, users: Sequence[str]) -> Path:
    """A configuration directory with the bench's users, each with the bench's password."""
    confdir = work / "freeradius"
    confdir.mkdir()
    with (confdir / "users").open("w") as out:
        for name in users:
            out.write(f'{name} Cleartext-Password := "{PASSWORD}"\n')
    return confdir


def start_freeradius(confdir: Path) -> Servers:
    port = free_udp_port()
    (confdir / "radiusd.conf").write_text(FREERADIUS_CONF.format(
        dir=confdir, port=port, source=APPEND_SOURCE, secret=SECRET))
    log = confdir / f"freeradius-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["freeradius", "-f", "-d", str(confdir), "-l", "stdout"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)
    servers = Servers("FreeRADIUS", port, [process], [log])
    try:
        _wait_for_line(process, log, "Ready to process requests", "FreeRADIUS")
    except BaseException:
        servers.stop()
        raise
    return servers


# -- packets and the load generator ----------------------------------------------------------


def slot(index: int, sockets: int) -> tuple[int, int]:
    """The generator's socket and the RADIUS Identifier of the `index`-th request: fixed when
    the request is built, because the Message-Authenticator covers the Identifier."""
    return index % sockets, (index // sockets) % IDS


def build_requests(attributes: dictionary.Dictionary,
                   logins: Sequence[tuple[str, str, bytes | None]],
                   sockets: int, first: int = 0) -> list[bytes]:
    """Encoded Access-Requests (User-Name, User-Password, State if given, and a
    Message-Authenticator), each with its own random Request Authenticator. `first` is the
    index of the first one in the whole sequence (its slot follows from it)."""
    encoded = []
    for index, (user, password, state) in enumerate(logins, first):
        request = packet.AuthPacket(code=packet.AccessRequest, id=slot(index, sockets)[1],
                                    secret=SECRET.encode(), dict=attributes)
        request["User-Name"] = user
        request["User-Password"] = request.PwCrypt(password)
        if state is not None:
            request["State"] = state
        request.add_message_authenticator()
        encoded.append(bytes(request.RequestPacket()))
    return encoded


def _build_part(logins: Sequence[tuple[str, str, bytes | None]], sockets: int,
                first: int) -> list[bytes]:
    return build_requests(load_dictionary(), logins, sockets, first)


def build_many(logins: Sequence[tuple[str, str, bytes | None]], sockets: int) -> list[bytes]:
    """build_requests over all CPUs: pyrad takes about 75 µs per request, and a FreeRADIUS
    run needs a few hundred thousand. Done before the servers start, so it measures nothing."""
    workers = os.cpu_count() or 1
    if workers == 1 or len(logins) < 20_000:
        return build_requests(load_dictionary(), logins, sockets)
    size = -(-len(logins) // workers)
    # close + join, not the pool's context manager: its terminate() once left a worker hung.
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        parts = pool.starmap(_build_part, [(logins[i:i + size], sockets, i)
                                           for i in range(0, len(logins), size)])
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return [request for part in parts for request in part]


def open_sockets(source: str, port: int, count: int) -> list[socket.socket]:
    """UDP sockets from `source` (which selects the client on our side), each its own port."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


@dataclass
class Traffic:
    """What the load generator sent and got back."""

    sent: int = 0
    replies: Counter[int] = field(default_factory=Counter)  # by reply code, all replies
    counted: Counter[int] = field(default_factory=Counter)  # by reply code, in the window
    window: float = 0.0  # seconds measured
    latencies: list[float] = field(default_factory=list)  # ms, replies in the window
    lost: int = 0  # no reply within REPLY_TIMEOUT
    strays: int = 0  # replies that matched no request in flight
    errors: int = 0  # send/recv errors (ICMP port unreachable)
    ran_out: bool = False  # the requests ended before the window did
    generator_cpu: float = 0.0  # this process, over the window (s)
    kept: dict[int, bytes] = field(default_factory=dict)  # the replies, when asked for


def drive(sockets: list[socket.socket], requests: Sequence[bytes], in_flight: int,
          warmup: float = 0.0, seconds: float | None = None, keep: bool = False,
          mark: Callable[[str], None] | None = None) -> Traffic:
    """Send `requests` in order, at most `in_flight` without a reply, each from its slot's
    socket. With `seconds`, replies are counted from `warmup` seconds after the start for
    `seconds` (`mark("start")` and `mark("stop")` are called at the window's edges; nothing is
    sent after it); without, until every request is answered or lost.

    A plain epoll loop rather than asyncio: this process shares the CPUs with the servers, and
    each request should cost it as little as possible."""
    traffic = Traffic()
    poller = select.epoll()
    by_fd = {sock.fileno(): k for k, sock in enumerate(sockets)}
    for sock in sockets:
        poller.register(sock.fileno(), select.EPOLLIN)
    waiting: dict[tuple[int, int], int] = {}  # slot -> request index
    sent_at: dict[int, float] = {}  # request index -> send time, oldest first
    count, total = len(sockets), len(requests)
    began = time.monotonic()
    start_at = began + warmup if seconds is not None else began
    stop_at = start_at + seconds if seconds is not None else math.inf
    started = seconds is None
    window_end = 0.0
    cpu_start = time.process_time()
    following = 0

    def send_more(now: float) -> None:
        nonlocal following
        while following < total and len(sent_at) < in_flight and now < stop_at:
            key = slot(following, count)
            stale = waiting.pop(key, None)
            if stale is not None:  # its slot comes round again: it is lost
                del sent_at[stale]
                traffic.lost += 1
            try:
                sockets[key[0]].send(requests[following])
            except OSError:
                traffic.errors += 1
            else:
                waiting[key] = following
                sent_at[following] = now
            following += 1

    try:
        while True:
            now = time.monotonic()
            if not started and now >= start_at:
                started = True
                cpu_start = time.process_time()
                if mark:
                    mark("start")
            exhausted = following >= total and not sent_at
            if window_end == 0.0 and (now >= stop_at or (started and exhausted)):
                window_end = min(now, stop_at)
                traffic.ran_out = seconds is not None and now < stop_at
                traffic.generator_cpu = time.process_time() - cpu_start
                if mark:
                    mark("stop")
            if window_end and (not sent_at or now > window_end + REPLY_TIMEOUT):
                break
            while sent_at:
                index, sent = next(iter(sent_at.items()))
                if now - sent < REPLY_TIMEOUT:
                    break
                del sent_at[index]
                waiting.pop(slot(index, count), None)
                traffic.lost += 1
            send_more(now)
            wait = 0.05 if started else min(0.05, max(0.0, start_at - now))
            if not window_end and seconds is not None:
                wait = min(wait, max(0.0, stop_at - now))
            for fd, _ in poller.poll(wait):
                k = by_fd[fd]
                try:
                    data = sockets[k].recv(4096)
                except OSError:
                    traffic.errors += 1
                    continue
                arrived = time.monotonic()
                answered = waiting.pop((k, data[1]), None) if len(data) >= 20 else None
                if answered is None:
                    traffic.strays += 1
                    continue
                sent = sent_at.pop(answered)
                traffic.replies[data[0]] += 1
                if started and not window_end and arrived < stop_at:
                    traffic.counted[data[0]] += 1
                    traffic.latencies.append((arrived - sent) * 1000)
                if keep:
                    traffic.kept[answered] = data
            send_more(time.monotonic())
    finally:
        poller.close()
    traffic.sent = following
    traffic.window = window_end - start_at
    return traffic


# -- users and their codes --------------------------------------------------------------------


PARAMS = totp.TotpParams()  # what `unified-mfa init` configures: SHA1, 6 digits, 30 s


@dataclass
class TotpUser:
    name: str
    secret: str
    last_step: int  # the newest step the core has taken from this user (S01: older are refused)


def current_step() -> int:
    return totp.step_at(PARAMS, time.time())


def add_totp_users(mfa: MFA, count: int) -> list[TotpUser]:
    """Users with a TOTP factor, confirmed with the previous step's code so that the current
    and the next step are still fresh."""
    users = []
    for i in range(count):
        name = f"totp{i:05d}"
        mfa.add_user(name)
        secret = parse_uri(mfa.enroll(name, "totp").uri).totp_secret
        if secret is None:
            raise BenchFailure("the TOTP enrollment URI carries no secret")
        for step in (current_step() - 1, current_step()):  # the step may turn meanwhile
            code = totp.code_at(secret, PARAMS, step * PARAMS.period)
            if mfa.authenticate_code(name, code, CTX).granted:
                users.append(TotpUser(name, secret, step))
                break
        else:
            raise BenchFailure(f"could not confirm the TOTP factor of {name}")
    return users


def fresh_logins(users: list[TotpUser], in_flight: int) -> list[tuple[TotpUser, int]]:
    """(user, step) pairs that the core will accept, built now and good for STEP_MARGIN s.

    Steps now and now+1: a request built with step s is accepted while the current step is
    s-1, s or s+1. All the current step's logins come first, then the next step's in the same
    user order, so that a user's two requests are as far apart as there are users: they are
    never in flight together, and the earlier step is always claimed first (else S01 would
    refuse it)."""
    now = current_step()
    first = [u for u in users if u.last_step < now]
    after = [u for u in users if u.last_step == now] + first
    pairs = [(u, now) for u in first]
    if len(after) >= 4 * in_flight:
        pairs += [(u, now + 1) for u in after]
    else:  # too few users to keep one user's two requests apart
        pairs += [(u, now + 1) for u in after if u.last_step == now]
    return pairs


def spend(pairs: Sequence[tuple[TotpUser, int]]) -> None:
    """Sent is spent, answered or not: the core may have taken the step."""
    for user, step in pairs:
        user.last_step = max(user.last_step, step)


# -- throughput -------------------------------------------------------------------------------


@dataclass
class Round:
    """One timed run against one server setup."""

    label: str
    processes: int  # of ours; 0 for FreeRADIUS
    run: int
    traffic: Traffic
    server_cpu: float  # s, over the window, all processes
    cpu_shares: list[float]  # per process, s over the window
    fresh: int = 0  # requests that were available (TOTP codes still fresh)
    db_cpu: float | None = None  # s, the store's server processes (local PostgreSQL)

    @property
    def rate(self) -> float:
        return self.traffic.counted[ACCEPT] / self.traffic.window if self.traffic.window else 0

    @property
    def answered(self) -> int:
        return sum(self.traffic.counted.values())

    def cpu_us(self) -> float:
        """Server CPU per request: the responders' and, when measured, the database's."""
        total = self.server_cpu + (self.db_cpu or 0.0)
        return total / self.answered * 1e6 if self.answered else math.nan

    def db_us(self) -> float:
        if self.db_cpu is None or not self.answered:
            return math.nan
        return self.db_cpu / self.answered * 1e6

    def busy(self) -> float:
        """CPUs the server side kept busy over the window."""
        total = self.server_cpu + (self.db_cpu or 0.0)
        return total / self.traffic.window if self.traffic.window else math.nan

    def generator_us(self) -> float:
        return self.traffic.generator_cpu / self.answered * 1e6 if self.answered else math.nan


def timed(servers: Servers, sockets: list[socket.socket], requests: Sequence[bytes],
          args: argparse.Namespace, label: str, run: int) -> Round:
    """One window of load; the server's CPU is read at the window's edges."""
    edges: dict[str, list[float]] = {}
    db: dict[str, dict[int, float]] = {}

    def mark(edge: str) -> None:
        edges[edge] = servers.cpu_each()
        db[edge] = servers.db_cpu()

    traffic = drive(sockets, requests, args.in_flight, args.warmup, args.seconds, mark=mark)
    servers.check_alive()
    shares = [b - a for a, b in zip(edges["start"], edges["stop"], strict=True)]
    db_cpu = (sum(cpu - db["start"].get(pid, 0.0) for pid, cpu in db["stop"].items())
              if servers.backends else None)  # a backend forked in the window started at 0
    processes = 0 if servers.label == "FreeRADIUS" else len(servers.processes)
    return Round(label, processes, run, traffic, sum(shares), shares, len(requests), db_cpu)


def freeradius_round(confdir: Path, requests: Sequence[bytes], args: argparse.Namespace,
                     run: int) -> Round:
    with running(start_freeradius(confdir)) as servers:
        sockets = open_sockets(APPEND_SOURCE, servers.port, SOCKETS)
        try:
            return timed(servers, sockets, requests, args, "FreeRADIUS, PAP from a users file",
                         run)
        finally:
            for sock in sockets:
                sock.close()


def ours_round(work: Path, home: Path, store: Store, users: list[TotpUser], processes: int,
               args: argparse.Namespace, run: int) -> Round:
    with running(start_ours(work, home, store, processes, f"p{processes}r{run}")) as servers:
        pairs = fresh_logins(users, args.in_flight)
        requests = build_many([
            (u.name, f"{PASSWORD},{totp.code_at(u.secret, PARAMS, step * PARAMS.period)}", None)
            for u, step in pairs], SOCKETS)
        sockets = open_sockets(APPEND_SOURCE, servers.port, SOCKETS)
        try:
            result = timed(servers, sockets, requests, args,
                           f"unified-mfa radius, append TOTP, {processes} process"
                           + ("es" if processes > 1 else ""), run)
        except BaseException:
            spend(pairs)  # some may have been sent: spent, to be safe
            raise
        finally:
            for sock in sockets:
                sock.close()
        spend(pairs[:result.traffic.sent])
        return result


def freeradius_requests(names: Sequence[str], count: int) -> list[bytes]:
    """`count` requests over the users in turn. Each has its own Request Authenticator, and a
    fresh FreeRADIUS is started for every run, so none is taken for a retransmission (which
    FreeRADIUS would answer from its cache, cheaper)."""
    return build_many([(names[i % len(names)], PASSWORD, None) for i in range(count)], SOCKETS)


# -- held autopush logins ---------------------------------------------------------------------


@dataclass
class Held:
    """One round of held autopush logins."""

    count: int
    challenged: int = 0
    challenge_seconds: float = 0.0
    held: int = 0  # requests sent for holding
    early: Counter[int] = field(default_factory=Counter)  # replies before any approval
    drops: int = 0  # datagrams the responder's socket dropped (receive buffer full)
    rss_baseline_kb: int = 0
    rss_challenged_kb: int = 0
    rss_holding_kb: int = 0
    threads: int = 0
    hold_seconds: float = 0.0
    approved: int = 0
    approve_seconds: float = 0.0
    outcomes: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, approval -> Access-Accept
    sweep_cpu: float = 0.0  # responder CPU share while holding, nothing else happening


NUMBER = re.compile(r"choosing (\d+)")


def challenges(servers: Servers, attributes: dictionary.Dictionary, devices: Sequence[Device],
               in_flight: int, result: Held) -> list[tuple[bytes, str]]:
    """The first request of each login (the password) from the autopush client: each must be
    answered with an Access-Challenge that carries a State and the number to pick (S03)."""
    requests = build_requests(attributes, [(d.user, PASSWORD, None) for d in devices], SOCKETS)
    sockets = open_sockets(AUTOPUSH_SOURCE, servers.port, SOCKETS)
    began = time.monotonic()
    try:
        traffic = drive(sockets, requests, in_flight, keep=True)
    finally:
        for sock in sockets:
            sock.close()
    result.challenge_seconds = time.monotonic() - began
    answers = []
    for index, device in enumerate(devices):
        data = traffic.kept.get(index)
        if data is None or data[0] != CHALLENGE:
            what = "no reply" if data is None else CODE_NAMES.get(data[0], str(data[0]))
            raise BenchFailure(f"autopush for {device.user}: {what} instead of a challenge")
        reply = packet.AuthPacket(secret=SECRET.encode(), dict=attributes, packet=data)
        message = str(reply["Reply-Message"][0])
        number = NUMBER.search(message)
        if number is None or "State" not in reply:
            raise BenchFailure(f"autopush for {device.user}: no number or State: {message}")
        answers.append((bytes(reply["State"][0]), number.group(1)))
    result.challenged = len(answers)
    return answers


def push_ids(home: Path, store: Store, devices: Sequence[Device],
             numbers: Sequence[str]) -> list[str]:
    """Each login's push, as its device lists it; the number shown must be among its choices."""
    mfa = MFA.open(home, store=store.url)
    try:
        ids = []
        for device, number in zip(devices, numbers, strict=True):
            pending = mfa.pending_pushes(device.device_id)
            if len(pending) != 1 or number not in pending[0].choices:
                raise BenchFailure(f"{device.user}: {len(pending)} pending pushes, or the "
                                   "number shown is not among the device's choices")
            ids.append(pending[0].id)
        return ids
    finally:
        mfa.close()


def approver(home: Path, store: Store, devices: Sequence[Device], ids: Sequence[str],
             numbers: Sequence[str], rate: float, out: Connection) -> None:
    """In a child process: approve every push through the core, signed by its device, as the
    device API does, and send back when each approval committed (time.monotonic, which is
    the same clock in every process)."""
    mfa = MFA.open(home, store=store.url)
    committed: list[float] = []
    try:
        began = time.monotonic()
        for k, (device, push_id, number) in enumerate(zip(devices, ids, numbers, strict=True)):
            if rate > 0:
                delay = began + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            status = mfa.answer_push(device.approval(push_id, number))
            if status != "approved":
                raise BenchFailure(f"approval of {device.user}'s push: {status}")
            committed.append(time.monotonic())
        out.send(committed)
    except Exception as exc:
        out.send(f"{type(exc).__name__}: {exc}")
    finally:
        mfa.close()
        out.close()


def settle(servers: Servers, port: int, timeout: float) -> float:
    """Until the responder has taken every datagram and gone idle (all it was sent is held);
    returns its CPU share over the last second, a measure of what holding costs."""
    deadline = time.monotonic() + timeout
    share = 1.0
    while time.monotonic() < deadline:
        cpu0, t0 = servers.cpu(), time.monotonic()
        time.sleep(1.0)
        share = (servers.cpu() - cpu0) / (time.monotonic() - t0)
        if udp_queue(port)[0] == 0 and share < 0.05:
            break
    return share


def settled_rss(servers: Servers, seconds: float = 10.0) -> int:
    """RSS once it changed by under 0.5% over 2 s (or after `seconds`)."""
    samples = [servers.rss_kb()]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(servers.rss_kb())
        if len(samples) >= 5 and abs(samples[-1] - samples[-5]) <= 0.005 * samples[-1]:
            break
    return samples[-1]


def held_round(servers: Servers, home: Path, store: Store,
               attributes: dictionary.Dictionary, devices: Sequence[Device],
               args: argparse.Namespace, result: Held) -> None:
    """Challenge every login, hold them all, approve them all; see the module's docstring."""
    count = len(devices)
    answers = challenges(servers, attributes, devices, args.in_flight, result)
    servers.check_alive()
    numbers = [number for _, number in answers]
    ids = push_ids(home, store, devices, numbers)
    result.rss_challenged_kb = settled_rss(servers)

    sockets_needed = max(SOCKETS, -(-count // IDS))
    requests = build_requests(attributes, [(d.user, "", state) for d, (state, _) in
                                           zip(devices, answers, strict=True)], sockets_needed)
    sockets = open_sockets(AUTOPUSH_SOURCE, servers.port, sockets_needed)
    poller = select.epoll()
    by_fd = {sock.fileno(): k for k, sock in enumerate(sockets)}
    for sock in sockets:
        poller.register(sock.fileno(), select.EPOLLIN)
    index_of = {slot(i, sockets_needed): i for i in range(count)}
    arrived: dict[int, float] = {}
    drops_before = udp_queue(servers.port)[1]

    def receive(timeout: float) -> None:
        for fd, _ in poller.poll(timeout):
            k = by_fd.get(fd)
            if k is None:  # the approving process's pipe: read by the caller
                continue
            try:
                data = sockets[k].recv(4096)
            except OSError:
                continue
            index = index_of.get((k, data[1])) if len(data) >= 20 else None
            if index is None or index in arrived:
                continue
            arrived[index] = time.monotonic()
            result.outcomes[data[0]] += 1

    try:
        began = time.monotonic()
        for i, request in enumerate(requests):
            sockets[slot(i, sockets_needed)[0]].send(request)
            if i % 200 == 199:  # let the responder read: its receive buffer is finite
                while udp_queue(servers.port)[0] > 256 * 1024:
                    receive(0.005)
        result.held = count
        result.sweep_cpu = settle(servers, servers.port, HOLD_TIMEOUT)
        receive(0)
        result.hold_seconds = time.monotonic() - began
        result.early = result.outcomes.copy()
        result.outcomes.clear()
        result.drops = udp_queue(servers.port)[1] - drops_before
        result.rss_holding_kb = settled_rss(servers)
        result.threads = sum(read_status(pid)["Threads"] for pid in servers.pids)
        servers.check_alive()

        mine, theirs = multiprocessing.get_context("fork").Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=approver, args=(home, store, devices, ids, numbers, args.approve_rate, theirs))
        child.start()
        theirs.close()
        poller.register(mine.fileno(), select.EPOLLIN)
        committed: list[float] | None = None
        approving = time.monotonic()
        # At least 20 approvals a second, then HOLD_TIMEOUT for the last decisions to arrive.
        deadline = approving + count / 20 + HOLD_TIMEOUT
        while len(arrived) < count and time.monotonic() < deadline:
            receive(0.05)
            if committed is None and mine.poll():
                message = mine.recv()
                if isinstance(message, str):
                    raise BenchFailure(f"approving: {message}")
                committed = message
                result.approve_seconds = time.monotonic() - approving
                deadline = min(deadline, time.monotonic() + HOLD_TIMEOUT)
            elif committed is None and not child.is_alive() and not mine.poll():
                raise BenchFailure(f"the approving process exited ({child.exitcode}) "
                                   "without a result")
        child.join(30)
        if child.is_alive():
            child.kill()
        mine.close()
    finally:
        poller.close()
        for sock in sockets:
            sock.close()
    if committed is None:
        raise BenchFailure("the approving process sent nothing back")
    result.approved = len(committed)
    result.lost = count - len(arrived)
    result.latencies = [(arrived[i] - committed[i]) * 1000 for i in arrived
                        if i < len(committed)]


def held_logins(work: Path, home: Path, store: Store, attributes: dictionary.Dictionary,
                devices: Sequence[Device], warm: Sequence[Device], args: argparse.Namespace
                ) -> Held:
    result = Held(len(devices))
    with running(start_ours(work, home, store, 1, f"held{time.monotonic_ns()}")) as servers:
        if warm:
            held_round(servers, home, store, attributes, warm, args, Held(len(warm)))
        result.rss_baseline_kb = settled_rss(servers)
        held_round(servers, home, store, attributes, devices, args, result)
    return result


# -- report -----------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    freeradius = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "freeradius"],
                                capture_output=True, text=True, check=False).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cpus = os.cpu_count() or 0
    return [f"machine: {cpus} CPUs ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}; load average before the run {load}",
            f"FreeRADIUS {freeradius or '?'}; pyrad {package_version('pyrad')}, SQLAlchemy "
            f"{package_version('SQLAlchemy')}",
            f"the load generator (this process) and the servers share the {cpus} CPUs"]


def stats(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(list(values), 50):,.1f} ms, p99 {percentile(list(values), 99):,.1f}"
            f" ms, max {max(values):,.1f} ms")


def table(rounds: Sequence[Round]) -> list[str]:
    header = (f"{'server':<44} {'run':>3} {'accepts/s':>9} {'accepted':>8} {'rejected':>8} "
              f"{'lost':>4} {'µs CPU srv':>10} {'of it db':>8} {'srv CPUs':>8} "
              f"{'µs CPU gen':>10} {'p50 ms':>7} {'p99 ms':>7}")
    lines = [header, "-" * len(header)]
    for r in rounds:
        t = r.traffic
        db = "-" if r.db_cpu is None else f"{r.db_us():,.0f}"
        lines.append(
            f"{r.label:<44} {r.run:>3} {r.rate:>9,.0f} {t.counted[ACCEPT]:>8,} "
            f"{t.replies[REJECT]:>8,} {t.lost:>4,} {r.cpu_us():>10,.1f} {db:>8} "
            f"{r.busy():>8.2f} {r.generator_us():>10,.1f} "
            f"{percentile(t.latencies, 50) if t.latencies else math.nan:>7,.1f} "
            f"{percentile(t.latencies, 99) if t.latencies else math.nan:>7,.1f}")
    return lines


NEAR_LINEAR = 0.8  # of linear: what the bench calls a near-linear gain


def summary(rounds: Sequence[Round], processes: Sequence[int], seconds: float) -> list[str]:
    """Notes on each run, the ratios within each run, and the goals over all runs. A run that
    is not valid (a reject, a lost request, codes that ran out in the first half of its
    window) is left out of the ratios."""
    lines: list[str] = []
    valid: dict[tuple[str, int], Round] = {}
    for r in rounds:
        note = []
        invalid = []
        if r.traffic.ran_out:
            raise_it = "--freeradius-pool" if r.processes == 0 else "--users"
            note.append(f"the requests built for it ({r.fresh:,}) ran out after "
                        f"{r.traffic.window:.1f} s of the window, which was cut there (raise "
                        f"{raise_it})")
            if r.traffic.window < seconds / 2:
                invalid.append("too short a window")
        if r.traffic.replies[REJECT] or r.traffic.lost or r.traffic.errors:
            invalid.append(f"{r.traffic.replies[REJECT]:,} rejected, {r.traffic.lost:,} lost, "
                           f"{r.traffic.errors:,} socket errors")
        if r.processes > 1:
            total = sum(r.cpu_shares) or 1.0
            note.append("CPU split over the processes: "
                        + " / ".join(f"{s / total:.0%}" for s in r.cpu_shares))
        if invalid:
            note.append("NOT VALID: " + "; ".join(invalid))
        else:
            valid[("free" if r.processes == 0 else str(r.processes), r.run)] = r
        if note:
            lines.append(f"{r.label}, run {r.run}: " + "; ".join(note))

    to_free: list[float] = []
    gains: dict[int, list[float]] = {p: [] for p in processes if p != 1}
    for run in sorted({r.run for r in rounds}):
        one, free = valid.get(("1", run)), valid.get(("free", run))
        if one and free and free.rate:
            to_free.append(one.rate / free.rate)
            lines.append(f"run {run}: one process {one.rate:,.0f}/s = {one.rate / free.rate:.4f}x "
                         f"FreeRADIUS's {free.rate:,.0f}/s; server CPU per request "
                         f"{one.cpu_us():,.0f} µs against {free.cpu_us():,.1f} µs "
                         f"({one.cpu_us() / free.cpu_us():,.0f} times as much)")
        for p in gains:
            more = valid.get((str(p), run))
            if one and more and one.rate:
                gains[p].append(more.rate / one.rate)
                lines.append(f"run {run}: {p} processes {more.rate:,.0f}/s = "
                             f"{more.rate / one.rate:.2f}x one process (linear: {p}x); server "
                             f"CPU per request {more.cpu_us() / one.cpu_us():.2f}x one process's")
    if to_free:
        lines.append(f"goal: one process at least {GOAL_RATIO:g}x FreeRADIUS's rate: "
                     f"{min(to_free):.4f}x to {max(to_free):.4f}x over {len(to_free)} runs: "
                     f"{'MET' if min(to_free) >= GOAL_RATIO else 'NOT MET'}")
    cpus = os.cpu_count() or 1
    for p, ratios in gains.items():
        if not ratios:
            continue
        verdict = ("MET" if min(ratios) >= NEAR_LINEAR * p else "NOT MET") if p <= cpus else (
            f"not measurable here: more processes than the {cpus} CPUs")
        lines.append(f"goal: near-linear gain (at least {NEAR_LINEAR:g} x {p}) with {p} "
                     f"SO_REUSEPORT processes: {min(ratios):.2f}x to {max(ratios):.2f}x one "
                     f"process over {len(ratios)} runs: {verdict}")
    lines.append(f"(this machine has {cpus} CPUs, shared by the load generator and the servers)")
    return lines


def held_lines(result: Held, run: int, rate: float) -> list[str]:
    n = result.count
    growth = result.rss_holding_kb - result.rss_challenged_kb
    return [
        f"held autopush, run {run}: {n:,} logins",
        f"  challenges: {result.challenged:,} of {n:,} in {result.challenge_seconds:.1f} s "
        f"({result.challenged / max(result.challenge_seconds, 1e-9):,.0f}/s)",
        f"  held requests sent: {result.held:,}; taken in and idle after "
        f"{result.hold_seconds:.1f} s; answered before any approval: "
        f"{dict(result.early) or 'none'}; datagrams dropped by the responder's socket: "
        f"{result.drops:,}",
        f"  responder CPU while holding them (the sweep, nothing else): "
        f"{result.sweep_cpu:.0%} of one CPU",
        f"  responder RSS: baseline {result.rss_baseline_kb / 1024:,.1f} MB, after the challenges "
        f"{result.rss_challenged_kb / 1024:,.1f} MB, holding {result.rss_holding_kb / 1024:,.1f} "
        f"MB ({result.threads} threads)",
        f"  memory per login: {(result.rss_holding_kb - result.rss_baseline_kb) / n:,.2f} KB in "
        f"all (the challenge's dialogue and push: "
        f"{(result.rss_challenged_kb - result.rss_baseline_kb) / n:,.2f} KB; the held request: "
        f"{growth / n:,.2f} KB)",
        f"  approved: {result.approved:,} in {result.approve_seconds:.1f} s "
        f"({result.approved / max(result.approve_seconds, 1e-9):,.0f}/s, "
        + (f"paced at {rate:g}/s" if rate > 0 else "as fast as one process goes")
        + ", through the core in a separate process)",
        "  replies after the approvals: " + ", ".join(
            f"{CODE_NAMES.get(code, code)} {k:,}" for code, k in sorted(result.outcomes.items()))
        + f"; no reply: {result.lost:,}",
        f"  approval committed -> Access-Accept at the generator: {stats(result.latencies)}",
    ]


# -- main -------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    counts = sorted({int(c) for c in text.split(",") if c.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of process counts, >= 1")
    return counts if counts[0] == 1 else [1, *counts]


@dataclass(frozen=True)
class Store:
    url: str | None  # None: the embedded SQLite store in the home
    label: str
    backends: str | None = None  # process title of its server's backends, when local


@contextlib.contextmanager
def chosen_store(args: argparse.Namespace) -> Iterator[Store]:
    """The embedded SQLite store, or PostgreSQL as bench/core_totp.py gets one: --pg-url (a
    scratch schema), else a throwaway local cluster, whose backends' CPU is counted."""
    if args.store == "sqlite":
        yield Store(None, "SQLite (embedded)")
        return
    from core_totp import local_postgres, scratch_schema

    if args.pg_url:
        with scratch_schema(args.pg_url) as url:
            yield Store(url, "PostgreSQL (given server; its CPU is not counted)")
    else:
        with local_postgres() as url:
            yield Store(url, "PostgreSQL (throwaway local cluster, default durability)",
                        "postgres: bench unified_mfa_bench ")


def make_home(work: Path, store: Store) -> Path:
    home = work / "home"
    # The store goes into the settings: whatever opens the home (the push devices' setup,
    # the servers) uses the same one.
    subprocess.run([console_script("unified-mfa"), "--home", str(home), "init",
                    *(["--store", store.url] if store.url else [])], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    with open(home / "unified-mfa.toml", "a") as settings:
        settings.write(SETTINGS_EXTRA)
    return home


def run_bench(args: argparse.Namespace, work: Path, store: Store) -> bool:
    """Everything but the printing of the machine: True when every figure is valid."""
    attributes = load_dictionary()
    home = make_home(work, store)
    t0 = time.monotonic()
    mfa = MFA.open(home, store=store.url)
    try:
        users = add_totp_users(mfa, args.users)
    finally:
        mfa.close()
    print(f"{args.users:,} users with a confirmed TOTP factor in {time.monotonic() - t0:.1f} s",
          flush=True)
    devices: list[Device] = []
    if not args.skip_held:
        t0 = time.monotonic()
        devices, _ = add_push_users(home, args.held + args.warm_held)
        print(f"{len(devices):,} users with a registered push device in "
              f"{time.monotonic() - t0:.1f} s", flush=True)

    free_pool: list[bytes] = []
    confdir = None
    if not args.skip_freeradius:
        confdir = freeradius_config(work, [u.name for u in users])
        t0 = time.monotonic()
        free_pool = freeradius_requests([u.name for u in users], args.freeradius_pool)
        print(f"{len(free_pool):,} FreeRADIUS requests built in {time.monotonic() - t0:.1f} s",
              flush=True)

    rounds: list[Round] = []
    print("\n" + "\n".join(table([])), flush=True)
    for run in range(1, args.runs + 1):
        if confdir is not None:
            rounds.append(freeradius_round(confdir, free_pool, args, run))
            print(table(rounds[-1:])[-1], flush=True)
        for processes in args.processes:
            rounds.append(ours_round(work, home, store, users, processes, args, run))
            print(table(rounds[-1:])[-1], flush=True)
    print()
    lines = summary(rounds, args.processes, args.seconds)
    print("\n".join(lines))
    valid = not any("NOT VALID" in line for line in lines)

    if not args.skip_held:
        warm, measured = devices[args.held:], devices[:args.held]
        for run in range(1, args.held_runs + 1):
            print(flush=True)
            result = held_logins(work, home, store, attributes, measured, warm, args)
            print("\n".join(held_lines(result, run, args.approve_rate)), flush=True)
            ok = (result.outcomes[ACCEPT] == result.count and not result.early)
            if not ok:
                print(f"  FAILED: {result.outcomes[ACCEPT]:,} of {result.count:,} held logins "
                      "ended in an Access-Accept")
            valid = valid and ok
    return valid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6000,
                        help="users with a TOTP factor: at most two fresh codes each at any "
                        "time, and one more per 30 s (default 6000)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="measured seconds per run (default 6)")
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds of load before each measured window (default 1.5)")
    parser.add_argument("--runs", type=int, default=2,
                        help="runs of each throughput setup, interleaved (default 2)")
    parser.add_argument("--processes", type=parse_counts, default=[1, 2, 4],
                        help="unified-mfa radius processes sharing the port (default 1,2,4)")
    parser.add_argument("--in-flight", type=int, default=128,
                        help="requests sent and not yet answered (default 128)")
    parser.add_argument("--freeradius-pool", type=int, default=400_000,
                        help="distinct requests built for FreeRADIUS, enough for --warmup + "
                        "--seconds at 50,000/s (default 400000)")
    parser.add_argument("--held", type=int, default=10_000,
                        help="autopush logins held at once (default 10000)")
    parser.add_argument("--warm-held", type=int, default=200,
                        help="held logins of a warm-up round before the baseline (default 200)")
    parser.add_argument("--held-runs", type=int, default=1,
                        help="rounds of held logins, each in a fresh process (default 1)")
    parser.add_argument("--approve-rate", type=float, default=0.0,
                        help="approvals per second; 0: as fast as one process goes (default 0)")
    parser.add_argument("--skip-freeradius", action="store_true")
    parser.add_argument("--skip-held", action="store_true")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the store of ours (default sqlite, the embedded default)")
    parser.add_argument("--pg-url", help="with --store postgresql: this server (a scratch "
                        "schema); default a throwaway local cluster")
    args = parser.parse_args()
    if args.warmup + args.seconds > STEP_MARGIN:
        parser.error(f"--warmup + --seconds must be at most {STEP_MARGIN:g}: a code built "
                     "at the start of a run must still be valid at its end")
    if args.users < 4 * args.in_flight:
        parser.error("--users must be at least 4 x --in-flight")
    if not args.skip_freeradius and not shutil.which("freeradius"):
        parser.error("freeradius is not installed (Debian package freeradius); "
                     "or use --skip-freeradius")

    for line in machine_lines():
        print(line)
    print(f"users {args.users:,}; {args.seconds:g} s measured after {args.warmup:g} s of "
          f"warm-up; {args.in_flight} requests in flight from {SOCKETS} source ports", flush=True)
    work = Path(tempfile.mkdtemp(prefix="unified-mfa-radius-bench-"))
    try:
        with stop_on_signals(), chosen_store(args) as store:
            print(f"store: {store.label}", flush=True)
            valid = run_bench(args, work, store)
    except BenchFailure as exc:
        print(f"radius_throughput: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("radius_throughput: interrupted; the servers were stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after the run: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
