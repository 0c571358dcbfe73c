"""Many logins waiting on push in one service process: memory per pending login, and the time
from a device's approval to the adapter's decision.

What is measured: N logins (default 1,000 then 10,000) go through the auth API of one
`unified-mfa serve` process as a remote adapter drives them: `POST /v1/auth/begin`, then
`POST /v1/auth/answer` with `push`. Then all N wait at once for their decisions. By default
they wait as an adapter that holds many logins does: followed over a few waits sockets
(`/v1/auth/waits`, --sockets, default 4, as 4 adapter nodes). With `--waits requests` each
login holds its own `POST /v1/auth/wait` long-poll on its own connection instead (a wait that
times out still pending is sent again). When the service's `unified_mfa_pending_waiters` gauge
shows all N waiting (or stops growing for a minute) and its resident memory has settled, the
bench reads the memory (VmRSS in /proc/PID/status). The growth over the baseline, divided by
N, is the memory one pending login costs the service.

Then every push is approved through the device API (`POST /v1/device/pushes/{id}`, signed by
the device key as the Protect app signs it), and for each login the bench takes the time from
sending the approval to the moment its decision (`accept`) reaches the bench: what a user
waits for between tapping the number and being let in. p50, p99 and the maximum are reported
for three ways of approving, in this order, the other logins still pending:
- --paced logins one at a time (each decided before the next is sent): the latency of the
  path itself in a service that holds N pending logins;
- --rate-count logins at --rate per second, sent on a fixed schedule whatever the responses
  (an open loop, as users tapping their phones are): the latency in a busy service;
- the rest --concurrency at a time, a burst: the latency there is the queue that the
  service's throughput leaves, and the bench reports that throughput (decisions per second).

Why: a push login holds an open request for as long as the user takes to find the phone. The
product goal is 10,000 pending logins per process for less than 100 MB more memory, with an
approval reaching the adapter in under 50 ms (p99). The figures are printed with whether each
goal is met (the latency goal for the one-at-a-time and the fixed-rate approvals). Nothing is
asserted about timing: this is a benchmark. It fails loudly (exit status 1) when the service
does not actually take the logins: a begin, answer, approval or wait that does not give the
expected outcome, approvals not all answered within --approve-seconds, or fewer than N logins
accepted at the end. What was measured until then is still printed.

How: a temporary home (`unified-mfa init`) with settings that keep product limits out of the
way (push rate limit, push and dialogue lifetimes, API client rate). U users (default 100) each
get a push device registered directly through the core with an Ed25519 key that the bench
keeps, and one API client authenticates with HTTP Basic. Logins are spread over the users in
turn. Each login uses its own `client_address`; the device API lists it as the push's `client`,
so each push is matched to its login without relying on order. Long-poll wait timeouts are
spread from 240 to 300 s so that logins that began together do not all time out together. The
memory is broken down into what creating the N dialogues left in the process (store caches)
and what holding the N waits adds; with `--waits requests`, a separate service process
measures what N idle TCP connections alone cost. Each N gets a fresh service process so that
one measurement does not inherit the free memory of the previous one. Before the baseline, a
warm-up of full logins at the bench's concurrency brings the worker threads, the store's
connection pool and the allocator's arenas to their working size, so that the growth measured
is due to the pending logins.

The machine runs the bench (the client side) and the service together. On a 2-CPU machine
they compete: the latencies include the client's own delay in noticing a response, which the
bench reports as its event loop's lateness. A request whose connection is refused, reset or
closed is sent once more and counted (waits and approvals only; both are safe to repeat).
Every step has a timeout; the service is stopped at exit, also on Ctrl-C or SIGTERM, and the
temporary home is removed (the service logs are kept when the run failed).

    .venv/bin/python bench/push_pending.py [--counts 1000,10000] [--users 100]
        [--waits socket|requests] [--sockets 4] [--concurrency 100] [--paced 200]
        [--rate 50] [--rate-count 500] [--approve-seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from pam_unified_mfa.core import MFA
from pam_unified_mfa.enrollment_uri import parse_uri

GOAL_MB_PER_10K = 100.0  # more memory for 10,000 pending logins
GOAL_P99_MS = 50.0  # approval to decision, 99th percentile
WAIT_TIMEOUT = 300  # the longest wait the API takes (seconds); the bench asks for 240 to 300
WAIT_SHARD = 250  # connections per httpx client: its pool does linear scans per request
FD_MARGIN = 512  # descriptors besides the wait connections (store, threads, approvals, logs)
WARMUP_HELD = 5  # waits the warm-up holds before approving
PLATEAU_SECONDS = 60.0  # stop waiting for all N to be pending when the count stops growing
DECISION_GRACE = 180.0  # seconds an approved login may take to be decided
KEEPALIVE_EXPIRY = 2.0  # seconds a client keeps an idle connection (the service: 5 s)
PENDING_GAUGE = "unified_mfa_pending_waiters"
DEVICE_AUDIENCE = "unified-mfa-device"

SETTINGS_EXTRA = """
# bench/push_pending.py: product limits must not throttle the bench
[dialogue]
ttl = "2h"

[push]
timeout = "1h"
max_per_window = 1000000

[service]
client_rate = 1000000
client_burst = 1000000
"""


class BenchFailure(Exception):
    """The service did not take the logins as it should: the run is not a measurement."""


# -- the service process --------------------------------------------------------------------


def console_script(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} not found: install the project into this environment")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: be killed if the bench dies without stopping it (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def raise_fd_limit(counts: list[int]) -> tuple[int, list[int]]:
    """Soft RLIMIT_NOFILE up to the hard limit (the service inherits it); caps N if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    usable = soft - FD_MARGIN
    capped = []
    for n in counts:
        if n > usable:
            print(f"open-file limit {soft} is too low for {n:,} connections on each side "
                  f"plus {FD_MARGIN}: N is capped to {usable:,} (raise `ulimit -Hn`)")
            n = usable
        capped.append(n)
    return soft, capped


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (kB) and Threads of a process."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def rss_kb(pid: int) -> int:
    return read_status(pid)["VmRSS"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """`unified-mfa serve` on the bench home; its output goes to a log file in the home."""

    def __init__(self, home: Path, url: str, name: str, listen: str | None = None) -> None:
        self.url = url
        self.log_path = home / f"serve-{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [console_script("unified-mfa"), "--home", str(home), "serve",
             *(["--listen", listen] if listen else [])],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.pid = self.process.pid

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"the service exited with status {self.process.returncode}; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchFailure(f"the service did not become healthy in {timeout:.0f} s")

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

    def log_summary(self) -> tuple[Counter[str], int]:
        """Statuses per path from the access log, and how many tracebacks it holds."""
        statuses: Counter[str] = Counter()
        pattern = re.compile(r'"(GET|POST|PUT|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
        tracebacks = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "uvicorn.error: Shutting down" in line:
                break  # what follows is requests cut short by stopping the service
            if line.startswith("Traceback"):
                tracebacks += 1
            match = pattern.search(line)
            if match:
                path = re.sub(r"/p[\w-]{8,}$", "/{id}", match.group(2).split("?")[0])
                statuses[f"{match.group(3)} {match.group(1)} {path}"] += 1
        return statuses, tracebacks


# -- the devices and the auth API client ------------------------------------------------------


@dataclass
class Device:
    """A minimal Protect app: the key registered for one user's push factor."""

    user: str
    key: Ed25519PrivateKey
    device_id: str = ""

    def bearer(self) -> str:
        """The device's request JWT, made fresh for each request with the longest lifetime the
        service accepts (120 s): a request may wait long in an overloaded service."""
        now = int(time.time())
        return jwt.encode({"aud": DEVICE_AUDIENCE, "iat": now, "exp": now + 120}, self.key,
                          algorithm="EdDSA", headers={"kid": self.device_id})

    def approval(self, push_id: str, number: str) -> str:
        return jwt.encode({"sub": push_id, "decision": "approve", "number": number,
                           "iat": int(time.time())}, self.key, algorithm="EdDSA",
                          headers={"kid": self.device_id})


@dataclass
class Login:
    """One login as an adapter sees it, and what the bench learns about it."""

    index: int
    device: Device
    address: str
    token: str = ""
    number: str = ""
    push_id: str = ""
    waits: int = 0  # wait requests sent (more than one when a wait timed out still pending)
    sent: float = 0.0  # approval sent (perf_counter)
    answered: float = 0.0  # approval response received
    decided: float = 0.0  # the wait returned accept
    outcome: str = ""


def client_address(i: int) -> str:
    """A distinct end-user address per login: the device API shows it as the push's client."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def setup(home: Path, users: int) -> tuple[list[Device], str]:
    """Users with registered push devices, and the API client's Basic credentials."""
    mfa = MFA.open(home)
    try:
        devices = []
        for u in range(users):
            name = f"bench{u:05d}"
            mfa.add_user(name)
            token = parse_uri(mfa.enroll(name, "push").uri).token
            if token is None:
                raise BenchFailure("the push enrollment URI carries no registration token")
            key = Ed25519PrivateKey.generate()
            pem = key.public_key().public_bytes(Encoding.PEM,
                                                PublicFormat.SubjectPublicKeyInfo).decode()
            device = Device(name, key)
            device.device_id = mfa.register_device(token, pem).factor_id
            devices.append(device)
        secret = mfa.add_client("bench")
        if secret is None:
            raise BenchFailure("add_client returned no secret")
    finally:
        mfa.close()
    basic = base64.b64encode(f"bench:{secret}".encode()).decode()
    return devices, f"Basic {basic}"


RESETS: Counter[str] = Counter()  # requests sent again after the connection failed


async def call(client: httpx.AsyncClient, method: str, url: str, what: str,
               retry: bool = False, **kwargs: Any) -> dict[str, Any]:
    """One request; anything but 200 with a JSON body stops the run, saying where.

    With `retry`, a request whose connection fails (not accepted in time, reset or closed;
    not a read timeout) is sent once more and counted, as an adapter or the app would: only
    for waits, which change nothing, and approvals, which the service decides once (a second
    one that got through would be refused, not counted twice)."""
    for attempt in (1, 2):
        try:
            response = await client.request(method, url, **kwargs)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
                httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if retry and attempt == 1:
                RESETS[f"{type(exc).__name__} on {what.split()[0]}"] += 1
                continue
            raise BenchFailure(f"{what}: {type(exc).__name__} {exc}".rstrip()) from exc
        except httpx.HTTPError as exc:
            raise BenchFailure(f"{what}: {type(exc).__name__} {exc}".rstrip()) from exc
        return expect(response, what)
    raise AssertionError("unreachable")


def expect(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchFailure(f"{what}: HTTP {response.status_code} {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


async def start_login(client: httpx.AsyncClient, login: Login) -> None:
    """begin, then answer `push`: the login waits on the device afterwards."""
    begun = await call(client, "POST", "/v1/auth/begin", "begin", json={
        "user": login.device.user, "service": "bench", "client_address": login.address})
    if begun["outcome"] != "prompt" or "push" not in begun["methods"]:
        raise BenchFailure(f"begin for {login.device.user}: {begun['outcome']} "
                           f"{begun['methods']} ({begun['message']})")
    answered = await call(client, "POST", "/v1/auth/answer", "answer", json={
        "token": begun["token"], "answer": "push", "service": "bench",
        "client_address": login.address})
    if answered["outcome"] != "push_pending" or not answered["push_number"]:
        raise BenchFailure(f"answer push for {login.device.user}: {answered['outcome']} "
                           f"({answered['message']})")
    login.token, login.number = answered["token"], answered["push_number"]


def wait_timeout(i: int) -> int:
    """240 to 300 s: the waits of logins that began together do not all time out together."""
    return WAIT_TIMEOUT - i % 61


async def wait_decision(client: httpx.AsyncClient, login: Login) -> None:
    """Long-poll until the login is decided, re-waiting when a wait times out still pending."""
    while True:
        login.waits += 1
        step = await call(client, "POST", "/v1/auth/wait", "wait", retry=True, json={
            "token": login.token, "timeout": wait_timeout(login.index), "service": "bench",
            "client_address": login.address})
        if step["outcome"] != "push_pending":
            login.decided = time.perf_counter()
            login.outcome = step["outcome"]
            if step["outcome"] != "accept":
                raise BenchFailure(f"wait for login {login.index}: {step['outcome']} "
                                   f"({step['message']})")
            return
        login.token = step["token"] or login.token


class SocketWaits:
    """Logins followed over a few waits sockets (`/v1/auth/waits`), as an adapter that holds
    many logins at once waits: each socket carries its share, each login is one message out
    and one back. `decide(login)` plays the part of `wait_decision` for one login."""

    def __init__(self, base: str, auth: str, count: int) -> None:
        self.url = base.replace("http://", "ws://") + "/v1/auth/waits"
        self.auth, self.count = auth, count
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.pending: dict[str, tuple[Login, asyncio.Future[dict[str, Any]]]] = {}

    async def __aenter__(self) -> SocketWaits:
        for _ in range(self.count):
            # No client pings: the bench's loop may lag under load; the service pings anyway.
            conn = await ws_connect(self.url, additional_headers={"Authorization": self.auth},
                                    max_size=None, ping_interval=None)
            self.sockets.append(conn)
            self.readers.append(asyncio.create_task(self._read(conn)))
        return self

    async def __aexit__(self, *_: object) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        for conn in self.sockets:
            await conn.close()

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for text in conn:
                message = json.loads(text)
                entry = self.pending.pop(message.get("token", ""), None)
                if entry is None:
                    raise BenchFailure(f"waits socket: unexpected message {message}")
                login, future = entry
                if "error" in message:
                    future.set_exception(BenchFailure(
                        f"waits socket, login {login.index}: {message['error']}"))
                else:
                    login.decided = time.perf_counter()
                    future.set_result(message["step"])
        except ConnectionClosed as exc:
            failure = BenchFailure(f"waits socket closed: {exc}")
            for _, future in self.pending.values():
                if not future.done():
                    future.set_exception(failure)

    async def decide(self, login: Login) -> None:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[login.token] = (login, future)
        login.waits += 1
        await self.sockets[login.index % self.count].send(json.dumps({
            "token": login.token, "service": "bench", "client_address": login.address}))
        step = await future
        login.outcome = step["outcome"]
        if login.outcome != "accept":
            raise BenchFailure(f"wait for login {login.index}: {login.outcome} "
                               f"({step['message']})")


async def approve(client: httpx.AsyncClient, login: Login) -> None:
    device = login.device
    body = {"answer": device.approval(login.push_id, login.number)}
    headers = {"Authorization": f"Bearer {device.bearer()}"}
    login.sent = time.perf_counter()
    answer = await call(client, "POST", f"/v1/device/pushes/{login.push_id}",
                        f"approval of login {login.index}", retry=True, json=body,
                        headers=headers)
    login.answered = time.perf_counter()
    status = answer["status"]
    if status != "approved":
        raise BenchFailure(f"approval of login {login.index}: {status}")


async def match_pushes(client: httpx.AsyncClient, logins: list[Login],
                       devices: list[Device]) -> None:
    """Each login's push id, from its device's pending list (matched by client address)."""
    by_address = {login.address: login for login in logins}
    for device in devices:
        listed = await call(client, "GET", "/v1/device/pushes", "device pushes", headers={
            "Authorization": f"Bearer {device.bearer()}"})
        for push in listed["pushes"]:
            login = by_address.get(push["client"])
            if login is None or login.device is not device:
                continue  # a leftover of an earlier round, or not ours
            if login.number not in push["choices"]:
                raise BenchFailure(f"push {push['id']}: the number shown on the login screen "
                                   "is not among the device's choices")
            login.push_id = push["id"]
    missing = [login.index for login in logins if not login.push_id]
    if missing:
        raise BenchFailure(f"{len(missing)} logins have no pending push on their device "
                           f"(first: {missing[:5]})")


async def bounded(concurrency: int, jobs: Sequence[Callable[[], Awaitable[None]]],
                  timeout: float) -> int:
    """Run jobs with at most `concurrency` in flight, for at most `timeout` seconds; returns
    how many finished. The first job that fails stops the run."""
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    tasks = [asyncio.ensure_future(run(job)) for job in jobs]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        return sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception() is None)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def api_client(base: str, auth: str | None, connections: int,
               read_timeout: float = 60.0) -> httpx.AsyncClient:
    # uvicorn closes a connection idle for 5 s, which is also httpx's default expiry: reusing one
    # at that moment meets a reset. Expire ours earlier, as an adapter should.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                          keepalive_expiry=KEEPALIVE_EXPIRY)
    headers = {"Authorization": auth} if auth else {}
    return httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                             timeout=httpx.Timeout(30.0, read=read_timeout))


async def pending_waiters(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(PENDING_GAUGE + " "):
            return int(float(line.split()[1]))
    raise BenchFailure(f"/metrics has no {PENDING_GAUGE} gauge")


async def settled_rss(pid: int, seconds: float = 15.0) -> int:
    """RSS once it changed by under 0.5% over 2 s (or after `seconds`)."""
    samples = [rss_kb(pid)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        samples.append(rss_kb(pid))
        if len(samples) >= 5 and abs(samples[-1] - samples[-5]) <= 0.005 * samples[-1]:
            break
    return samples[-1]


# -- one round --------------------------------------------------------------------------------


@dataclass
class Round:
    n: int
    baseline_kb: int = 0
    started_kb: int = 0  # after the N dialogues were begun and answered
    pending_kb: int = 0  # with the N waits held
    pending_seen: int = 0  # the most waits the service reported at once
    idle_cpu: float = 0.0  # service CPU (share of one CPU) while N waits are held, nothing else
    threads: int = 0
    start_seconds: float = 0.0
    hold_seconds: float = 0.0
    approve_seconds: float = 0.0
    approved: int = 0
    accepted: int = 0
    rewaits: int = 0
    paced: list[Login] = field(default_factory=list)  # approved one at a time
    rated: list[Login] = field(default_factory=list)  # approved at a fixed rate
    burst: list[Login] = field(default_factory=list)  # approved `concurrency` at a time
    burst_rate: float = 0.0  # decisions per second during the burst
    problems: list[str] = field(default_factory=list)
    bench_lag_ms: list[float] = field(default_factory=list)
    resets: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def hold_waits(client: httpx.AsyncClient, waits: list[asyncio.Task[None]], count: int,
                     timeout: float) -> int:
    """Until the service reports `count` pending waiters, or their number stopped growing for
    PLATEAU_SECONDS, or `timeout`; returns the most seen. A failed wait stops the run."""
    deadline = time.monotonic() + timeout
    most, grew = 0, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - grew < PLATEAU_SECONDS:
        failed = [t for t in waits if t.done() and not t.cancelled() and t.exception()]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        try:
            seen = await pending_waiters(client)
        except httpx.HTTPError as exc:
            raise BenchFailure(f"/metrics: {type(exc).__name__}") from exc
        if seen > most:
            most, grew = seen, time.monotonic()
        if seen >= count:
            break
        await asyncio.sleep(0.5)
    return most


async def run_logins(base: str, auth: str, devices: list[Device], first: int, count: int,
                     args: argparse.Namespace, result: Round, pid: int) -> None:
    """`count` push logins: start them, hold their waits, approve them all (the first
    `args.paced` one at a time, the rest `args.concurrency` at a time), collect the outcomes.
    What does not go as it should is added to `result.problems`."""
    concurrency, timeout = args.concurrency, args.phase_timeout
    resets = RESETS.copy()
    logins = [Login(first + i, devices[(first + i) % len(devices)], client_address(first + i))
              for i in range(count)]
    async with api_client(base, auth, concurrency) as client, \
            api_client(base, None, concurrency, read_timeout=DECISION_GRACE) as device_client:
        began = time.perf_counter()
        started = await bounded(concurrency, [partial(start_login, client, login)
                                              for login in logins], timeout)
        if started < count:
            raise BenchFailure(f"begin and answer: only {started:,} of {count:,} logins "
                               f"started in {timeout:.0f} s")
        await match_pushes(device_client, logins, devices)
        result.start_seconds = time.perf_counter() - began
        result.started_kb = await settled_rss(pid, 5.0)

        by_socket = args.waits == "socket"
        shards = [] if by_socket else [
            api_client(base, auth, WAIT_SHARD, read_timeout=WAIT_TIMEOUT + 120)
            for _ in range(0, count, WAIT_SHARD)]
        sockets = SocketWaits(base, auth, args.sockets)
        waits: list[asyncio.Task[None]] = []
        try:
            if by_socket:
                await sockets.__aenter__()
            held = time.perf_counter()
            for i, login in enumerate(logins):
                if by_socket:
                    waits.append(asyncio.create_task(sockets.decide(login)))
                else:
                    waits.append(asyncio.create_task(
                        wait_decision(shards[i // WAIT_SHARD], login)))
                if i % WAIT_SHARD == WAIT_SHARD - 1:
                    await asyncio.sleep(0.05)  # do not overrun the listen backlog or the rate
            result.pending_seen = await hold_waits(client, waits, count, timeout)
            result.hold_seconds = time.perf_counter() - held
            result.pending_kb = await settled_rss(pid)
            result.threads = read_status(pid)["Threads"]
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(5.0)
            result.idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)

            approving = time.perf_counter()
            with loop_lag() as lags:
                await approve_all(device_client, logins, waits, args, result)
            result.approve_seconds = time.perf_counter() - approving
            result.bench_lag_ms = lags
            failed = [t.exception() for t in waits
                      if t.done() and not t.cancelled() and t.exception() is not None]
            if failed:
                result.problems.append(f"{len(failed):,} waits failed, first: {failed[0]}")
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            for shard in shards:
                await shard.aclose()
            await sockets.__aexit__()

    result.resets = RESETS - resets
    result.accepted = sum(1 for login in logins if login.outcome == "accept")
    result.rewaits = sum(max(0, login.waits - 1) for login in logins)
    if result.accepted != count:
        result.problems.append(f"{result.accepted:,} of {count:,} logins were accepted")


async def approve_all(client: httpx.AsyncClient, logins: list[Login],
                      waits: list[asyncio.Task[None]], args: argparse.Namespace,
                      result: Round) -> None:
    """The first `args.paced` logins one at a time (each decided before the next is approved,
    for at most `args.paced_seconds`), then the rest `args.concurrency` at a time, for at most
    `args.approve_seconds`; then up to DECISION_GRACE for the last decisions. What goes wrong
    is added to `result.problems`, and what was measured until then is kept."""
    task_of = {login.index: task for login, task in zip(logins, waits, strict=True)}
    paced_until = time.monotonic() + args.paced_seconds
    try:
        for login in logins[:args.paced]:
            if time.monotonic() > paced_until:
                break
            try:
                await asyncio.wait_for(approve(client, login), DECISION_GRACE)
                await asyncio.wait_for(asyncio.shield(task_of[login.index]), DECISION_GRACE)
            except TimeoutError:
                raise BenchFailure(f"login {login.index} was not decided within "
                                   f"{DECISION_GRACE:.0f} s of its approval") from None
            result.paced.append(login)
        rated = logins[len(result.paced):len(result.paced) + args.rate_count]
        await approve_at_rate(client, rated, task_of, args.rate, result)
        rest = logins[len(result.paced) + len(result.rated):]
        burst_began = time.perf_counter()
        sent = await bounded(args.concurrency, [partial(approve, client, login)
                                                for login in rest], args.approve_seconds)
        if sent < len(rest):
            result.problems.append(f"only {len(result.paced) + sent:,} of {len(logins):,} "
                                   f"approvals were answered within the time allowed "
                                   f"({args.approve_seconds:.0f} s at {args.concurrency} "
                                   "at a time)")
    except BenchFailure as exc:
        result.problems.append(str(exc))
    earlier = {login.index for login in result.paced + result.rated}
    result.burst = [login for login in logins if login.answered and login.index not in earlier]
    result.approved = sum(1 for login in logins if login.answered)
    pending = [task_of[login.index] for login in result.burst]
    if pending:
        _, late = await asyncio.wait(pending, timeout=DECISION_GRACE)
        if late:
            result.problems.append(f"{len(late):,} approved logins were still not decided "
                                   f"{DECISION_GRACE:.0f} s after the last approval")
        decided = [login.decided for login in result.burst if login.outcome == "accept"]
        if decided:
            result.burst_rate = len(decided) / (max(decided) - burst_began)


async def approve_at_rate(client: httpx.AsyncClient, logins: list[Login],
                          task_of: dict[int, asyncio.Task[None]], rate: float,
                          result: Round) -> None:
    """Approvals sent on a fixed schedule, `rate` per second, whatever the responses (an open
    loop, as users tapping their phones are): the latency in a service that is busy, not
    overrun. Returns once all of them are decided (or DECISION_GRACE passed)."""
    if not logins:
        return
    began = time.monotonic()
    sent: list[asyncio.Task[None]] = []
    for k, login in enumerate(logins):
        delay = began + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(approve(client, login)))
    waiting = sent + [task_of[login.index] for login in logins]
    _, late = await asyncio.wait(waiting, timeout=DECISION_GRACE)
    for task in sent:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if late:
        raise BenchFailure(f"{len(late):,} approvals at {rate:g}/s were not answered and "
                           f"decided within {DECISION_GRACE:.0f} s")
    result.rated = list(logins)


@contextlib.contextmanager
def loop_lag(interval: float = 0.1) -> Iterator[list[float]]:
    """How late this process's own event loop runs a 100 ms timer (ms), while in the block:
    the share of a measured latency that is the bench's, not the service's."""
    lags: list[float] = []

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append((time.perf_counter() - before - interval) * 1000)

    task = asyncio.ensure_future(tick())
    try:
        yield lags
    finally:
        task.cancel()


async def warm_up(base: str, auth: str, devices: list[Device], first: int, count: int,
                  concurrency: int, timeout: float) -> None:
    """Full logins at the bench's concurrency, before the baseline, so that worker threads, the
    store's connections and the allocator reach their working size. Only a few waits are held
    (the rest ask after the approval), so that the baseline does not already hold the memory
    of many waiting requests for the measured ones to reuse. All must be accepted."""
    logins = [Login(first + i, devices[(first + i) % len(devices)], client_address(first + i))
              for i in range(count)]
    held = logins[:WARMUP_HELD]
    async with api_client(base, auth, concurrency) as client, \
            api_client(base, None, concurrency) as device_client:
        jobs = [partial(start_login, client, login) for login in logins]
        if await bounded(concurrency, jobs, timeout) < count:
            raise BenchFailure("warm-up: the logins did not start in time")
        await match_pushes(device_client, logins, devices)
        waits = [asyncio.create_task(wait_decision(client, login)) for login in held]
        try:
            await hold_waits(client, waits, len(held), timeout)
            jobs = [partial(approve, device_client, login) for login in logins]
            if await bounded(concurrency, jobs, timeout) < count:
                raise BenchFailure("warm-up: the approvals did not finish in time")
            jobs = [partial(wait_decision, client, login) for login in logins[len(held):]]
            if await bounded(concurrency, jobs, timeout) < count - len(held):
                raise BenchFailure("warm-up: the decisions did not arrive in time")
            await asyncio.wait_for(asyncio.gather(*waits), DECISION_GRACE)
        except TimeoutError:
            raise BenchFailure("warm-up: the held waits were not decided in time") from None
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    accepted = sum(1 for login in logins if login.outcome == "accept")
    if accepted != count:
        raise BenchFailure(f"warm-up: {accepted} of {count} logins were accepted")


async def idle_connections(base_port: int, pid: int, n: int) -> int:
    """RSS growth (kB) of the service for `n` TCP connections that send nothing."""
    baseline = await settled_rss(pid, 5.0)
    writers: list[asyncio.StreamWriter] = []
    try:
        for i in range(n):
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", base_port), 30)
            writers.append(writer)
            if i % WAIT_SHARD == WAIT_SHARD - 1:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        return await settled_rss(pid) - baseline
    finally:
        for writer in writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


# -- report -----------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine_line() -> str:
    """CPUs and their model, kernel, Python and the load average now: every bench's first line."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"machine: {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}; load average before the run {load}")


def machine() -> list[str]:
    libs = ", ".join(f"{p} {package_version(p)}" for p in
                     ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "anyio", "httpx",
                      "SQLAlchemy"))
    return [machine_line(),
            f"libraries: {libs}",
            "the bench (client side) and the service run on this same machine and share its "
            "CPUs: latencies include the client's own delay in noticing a response"]


def distribution(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, 50):,.1f} ms, p99 {percentile(values, 99):,.1f} ms, "
            f"max {max(values):,.1f} ms")


def latency_lines(label: str, logins: list[Login]) -> list[str]:
    """approval sent -> accept, and the approval request alone, for logins that were decided."""
    decided = [login for login in logins if login.outcome == "accept"]
    total = [(login.decided - login.sent) * 1000 for login in decided]
    request = [(login.answered - login.sent) * 1000 for login in decided]
    return [f"  {label}: {len(decided):,} logins",
            f"    approval sent -> wait returned accept: {distribution(total)}",
            f"    approval request alone (sent -> response): {distribution(request)}"]


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def report(result: Round, conn_kb: int | None, concurrency: int,
           rate: float) -> list[str]:
    n = result.n
    grown = result.pending_kb - result.baseline_kb
    lines = [
        f"N = {n:,}: {result.accepted:,} of {n:,} logins accepted",
        f"  begin+answer: {result.start_seconds:.1f} s ({n / result.start_seconds:,.0f} logins/s)"
        f"; waits pending at once: {result.pending_seen:,} of {n:,}, after "
        f"{result.hold_seconds:.1f} s; approvals and decisions: {result.approve_seconds:.1f} s; "
        f"waits re-sent after timing out still pending: {result.rewaits:,}",
        f"  service RSS: baseline {result.baseline_kb / 1024:.1f} MB, after begin+answer "
        f"{result.started_kb / 1024:.1f} MB, with the waits held "
        f"{result.pending_kb / 1024:.1f} MB ({result.threads} threads)",
        f"  memory per pending login (RSS growth / N): {grown / n:.1f} KB "
        f"(dialogues created: {(result.started_kb - result.baseline_kb) / n:.1f} KB; "
        f"waits held: {(result.pending_kb - result.started_kb) / n:.1f} KB); "
        f"growth per wait pending at the measurement: {grown / max(1, result.pending_seen):.1f} KB",
    ]
    if conn_kb is not None:
        lines.append(f"    an idle TCP connection alone, in a separate service process: "
                     f"{conn_kb / n:.1f} KB; the rest: {(grown - conn_kb) / n:.1f} KB")
    lines.append(f"  service CPU while the waits are held (no approvals yet; re-checks and "
                 f"waits sent again go on): "
                 f"{result.idle_cpu * 100:.0f}% of one CPU")
    lines += latency_lines("approved one at a time (the others still pending)", result.paced)
    lines += latency_lines(f"approved at {rate:g} per second (open loop; the others still "
                           "pending)", result.rated)
    lines += latency_lines(f"approved {concurrency} at a time (a burst: the latency is the "
                           "queue)", result.burst)
    if result.burst_rate:
        lines.append(f"    decisions per second during the burst (the service's capacity on "
                     f"this machine): {result.burst_rate:,.0f}")
    scaled = grown / 1024 * 10_000 / n
    lines.append(f"  goal memory, 10,000 pending in < {GOAL_MB_PER_10K:.0f} MB: "
                 f"{scaled:,.1f} MB per 10,000 at this N: {verdict(scaled < GOAL_MB_PER_10K)}")
    for label, logins in (("one at a time", result.paced),
                          (f"at {rate:g} per second", result.rated)):
        total = [(login.decided - login.sent) * 1000 for login in logins
                 if login.outcome == "accept"]
        if total:
            p99 = percentile(total, 99)
            lines.append(f"  goal latency, p99 < {GOAL_P99_MS:.0f} ms, approved {label}: "
                         f"{p99:,.1f} ms: {verdict(p99 < GOAL_P99_MS)}")
    if result.bench_lag_ms:
        lines.append(f"  the bench's own event loop, late by (while approving): "
                     f"{distribution(result.bench_lag_ms)}")
    lines.append(f"  connections reset or closed under a request, sent again: "
                 f"{dict(result.resets) or 'none'}")
    bad = {k: v for k, v in result.statuses.items() if not k.startswith("2")}
    lines.append(f"  service log: {sum(result.statuses.values()):,} requests; not 2xx: "
                 f"{bad or 'none'}; tracebacks: {result.tracebacks}")
    for problem in result.problems:
        lines.append(f"  FAILED: {problem}")
    return lines


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C, so the `finally` blocks stop the service."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_home(root: Path, port: int) -> Path:
    home = root / "home"
    subprocess.run([console_script("unified-mfa"), "--home", str(home), "init",
                    "--public-url", f"http://127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    with open(home / "unified-mfa.toml", "a") as settings:
        settings.write(SETTINGS_EXTRA)
    return home


def measure(home: Path, base: str, devices: list[Device], auth: str, n: int, first: int,
            args: argparse.Namespace) -> Round:
    result = Round(n)
    service = Service(home, base, f"n{n}")
    try:
        service.wait_healthy()
        warmup = 2 * args.concurrency
        asyncio.run(warm_up(base, auth, devices, first, warmup, args.concurrency,
                            args.phase_timeout))
        time.sleep(1.0)
        result.baseline_kb = asyncio.run(settled_rss(service.pid, 5.0))
        asyncio.run(run_logins(base, auth, devices, first + warmup, n, args, result,
                               service.pid))
    finally:
        service.stop()
    result.statuses, result.tracebacks = service.log_summary()
    return result


def measure_connections(home: Path, base: str, port: int, n: int) -> int:
    service = Service(home, base, f"idle{n}")
    try:
        service.wait_healthy()
        return asyncio.run(idle_connections(port, service.pid, n))
    finally:
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000",
                        help="pending logins per round, comma-separated (default 1000,10000)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100,
                        help="begin/answer and approval requests in flight (default 100)")
    parser.add_argument("--phase-timeout", type=float, default=600.0,
                        help="seconds any one phase may take before the run fails "
                        "(default 600)")
    parser.add_argument("--paced", type=int, default=200,
                        help="approve this many logins one at a time first (default 200)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="then approve at this many per second, open loop (default 50)")
    parser.add_argument("--rate-count", type=int, default=500,
                        help="logins approved at --rate (default 500)")
    parser.add_argument("--approve-seconds", type=float, default=300.0,
                        help="stop approving after this long (default 300)")
    parser.add_argument("--paced-seconds", type=float, default=60.0,
                        help="stop approving one at a time after this long (default 60)")
    parser.add_argument("--waits", choices=("socket", "requests"), default="socket",
                        help="how the logins wait: over waits sockets (as an adapter holding "
                        "many logins does), or one POST /v1/auth/wait long-poll and "
                        "connection each (default socket)")
    parser.add_argument("--sockets", type=int, default=4,
                        help="waits sockets, as adapter nodes (default 4)")
    parser.add_argument("--no-idle", action="store_true",
                        help="skip measuring idle connections in a separate process")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    limit, counts = raise_fd_limit(counts)
    for line in machine():
        print(line)
    print(f"open-file limit (soft, inherited by the service): {limit}")

    root = Path(tempfile.mkdtemp(prefix="unified-mfa-push-bench-"))
    failed = False
    try:
        with stop_on_signals():
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            home = make_home(root, port)
            t0 = time.perf_counter()
            devices, auth = setup(home, args.users)
            print(f"{args.users} users with a registered push device in "
                  f"{time.perf_counter() - t0:.1f} s; one service process per N "
                  f"(uvicorn, asyncio, SQLite store); waits: "
                  + (f"over {args.sockets} waits sockets\n" if args.waits == "socket" else
                     "one POST /v1/auth/wait long-poll and connection per login\n"))
            # The bench's own memory is not measured, and a full collection over the objects of
            # 10,000 requests in flight would pause its loop for seconds: collect between rounds.
            gc.disable()
            first = 0
            for n in counts:
                gc.collect()
                try:
                    result = measure(home, base, devices, auth, n, first, args)
                except BenchFailure as exc:
                    print(f"N = {n:,}: FAILED: {exc}", file=sys.stderr)
                    failed = True
                    continue
                finally:
                    first += n + 2 * args.concurrency
                skip_idle = args.no_idle or args.waits == "socket"
                conn_kb = None if skip_idle else measure_connections(home, base, port, n)
                lines = report(result, conn_kb, args.concurrency, args.rate)
                print("\n".join(lines) + "\n", flush=True)
                failed = failed or bool(result.problems)
            return 1 if failed else 0
    except KeyboardInterrupt:
        print("interrupted; the service was stopped", file=sys.stderr)
        return 130
    except BaseException:
        failed = True
        raise
    finally:
        logs = sorted(root.glob("home/serve-*.log"))
        if failed and logs:
            kept = Path(tempfile.mkdtemp(prefix="unified-mfa-push-bench-logs-"))
            for log in logs:
                shutil.copy(log, kept)
            print(f"service logs kept in {kept}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
