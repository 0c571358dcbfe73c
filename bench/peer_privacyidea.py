"""TOTP validations per second through privacyIDEA's `/validate/check` and through our auth API,
same machine, same run, same store type (SQLite).

What is measured: one load generator drives both servers the same way, --concurrency
validations in flight, one server after the other and then again (--runs, interleaved), each
for --warmup uncounted seconds and a --seconds window. The generator is wrk (Debian's `wrk`
package; --generator wrk, the default), which spends a small fraction of the CPU that a
Python client would take from the servers on the same CPUs; every request carries its own
body (bench/wrk_load.py, bench/wrk_validate.lua). With --our-calls begin-answer, whose second
request needs the first one's reply, it is this process on uvloop with lean_http's client
(--generator lean).

- **privacyIDEA** (the PyPI package, pinned below) under gunicorn with 2 sync workers
  (--their-workers) on 127.0.0.1, on an SQLite database, as its own tools set it up:
  `pi-manage setup` makes the encryption key, the audit signing keys and the tables; a
  `passwdresolver` reads a passwd-style file of the bench users; a realm holds it;
  `pi-manage token import` enrolls one TOTP token per user with a known seed and no PIN, so
  that `pass` is the code alone. A validation is one `POST /validate/check` with `user`,
  `realm` and `pass`; it counts when `result.value` is true. Everything else is privacyIDEA's
  default: the SQL audit entry per request, the signed response, INFO logging, SQLite's
  rollback journal.
- **Ours**: `unified-mfa serve` on a throwaway home with the embedded SQLite store, users with a
  confirmed TOTP factor, and an API client with a secret (HTTP Basic). A validation is what a
  gateway with the code makes: `POST /v1/auth/check` with the user and the code, which must
  answer `accept` (`--our-calls begin-answer`: `POST /v1/auth/begin`, which must answer
  `prompt`, then `POST /v1/auth/answer` with the code, as an adapter that prompts). The client
  rate limit is raised so that the bench measures validations, not 429s. One serve process,
  or --our-processes of them on the same home, each on its own port, with the requests shared
  among them (two nodes on one store, as a gateway with a list of servers uses them).

Both refuse a code for a time step the token has already used (privacyIDEA: "previous otp used
again"; ours: S01), so each validation uses the current step's code of a user who has not
validated on that server during this step. privacyIDEA records the drift of each accepted code,
so a next step's code would move its token's clock: only the current step is used, on both
sides. Before a window starts with fewer than half of its users fresh, the bench waits for the
next step (not timed). wrk gets the codes of every fresh user, made before the warm-up and
shared between the warm-up and the window in proportion to their lengths; one wrk thread per
server process, each sending to its own. If the fresh codes run out inside a window, the
window says so and the run is not valid (raise --users or --their-users).

Per window and server: validations per second; server CPU per validation (user + system time
from /proc/PID/stat of the server processes: gunicorn's master and workers, or the serve
processes, read at the window's edges); how many CPUs the server kept busy; the generator's own
CPU per validation; p50 and p99 of a validation as the generator saw it. Then the ratios within
each run and whether the issue's goals hold: at least 100 times privacyIDEA's rate, under 1 ms
of server CPU per validation. Nothing is asserted about speed; the bench exits with status 1 when
a figure would not mean what it says: a validation that is not accepted, a wrong code that is
not refused, a gunicorn worker replaced during a window, fresh codes that ran out inside a
window, a server that does not start.

privacyIDEA is installed once into its own virtual environment under --cache (default
/var/cache/unified-mfa-bench as root, else ~/.cache/unified-mfa-bench); its configuration,
keys, database and logs are made at run time in a temporary directory that is removed at the
end (--keep keeps it), also on Ctrl-C or SIGTERM, and both servers are stopped.

    .venv/bin/python bench/peer_privacyidea.py [--seconds 10] [--warmup 3] [--runs 2]
        [--concurrency 8] [--users N] [--their-users 600] [--their-workers 2]
        [--our-processes 1] [--our-calls check|begin-answer] [--generator wrk|lean]
        [--cache DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvloop

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lean_http import (  # sibling modules, found through the line above
    Client,
    LeanClient,
    LeanHTTPError,
    Spread,
)
from push_pending import (
    BenchFailure,
    Service,
    _die_with_parent,
    cpu_seconds,
    free_port,
    machine_line,
    make_home,
    package_version,
    percentile,
    stop_on_signals,
)
from push_pending import setup as add_api_client
from radius_throughput import PARAMS, TotpUser, add_totp_users, current_step
from wrk_load import Spelling, deal, wrk_path
from wrk_load import run as run_wrk

PRIVACYIDEA = "privacyidea==3.14"
GUNICORN = "gunicorn==27.0.1"
REALM = "bench"
RESOLVER = "benchfiles"
GOAL_RATE_RATIO = 100.0  # ours / privacyIDEA's validations per second
GOAL_CPU_MS = 1.0  # our server CPU per validation
USERS_PER_PROCESS = 26_000
START_TIMEOUT = 60.0
SETUP_TIMEOUT = 900.0  # pip install, or importing thousands of tokens on a busy machine
THEIRS = "privacyIDEA /validate/check"
OURS = "unified-mfa auth API"

Check = Callable[[TotpUser, str], Awaitable[str | None]]  # None: accepted; else why not


# -- privacyIDEA: its own virtual environment, configuration and gunicorn ---------------------


def default_cache() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/unified-mfa-bench")
    return Path.home() / ".cache" / "unified-mfa-bench"


def run_tool(command: Sequence[str | Path], env: dict[str, str] | None = None) -> str:
    """A setup command that must succeed; its output, or its tail in the failure."""
    what = f"{Path(str(command[0])).name} {' '.join(map(str, command[1:3]))}"
    try:
        done = subprocess.run([str(c) for c in command], env=env, capture_output=True,
                              text=True, timeout=SETUP_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"{what} took more than {SETUP_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise BenchFailure(f"{what} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def privacyidea_venv(cache: Path) -> Path:
    """privacyIDEA and gunicorn in a virtual environment of their own, made once: its
    dependencies must not meet ours. A marker written last tells a finished install from one
    cut short."""
    venv = cache / PRIVACYIDEA.replace("==", "-")
    marker = venv / ".installed"
    wanted = f"{PRIVACYIDEA} {GUNICORN}\n"
    if marker.is_file() and marker.read_text() == wanted:
        return venv
    print(f"installing {PRIVACYIDEA} and {GUNICORN} into {venv} …", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    run_tool([sys.executable, "-m", "venv", venv])
    run_tool([venv / "bin" / "pip", "install", "--quiet", PRIVACYIDEA, GUNICORN])
    marker.write_text(wanted)
    return venv


def their_versions(venv: Path) -> str:
    script = ("import importlib.metadata as m, sqlite3; print(', '.join(f'{p} {m.version(p)}' "
              "for p in ('privacyIDEA', 'gunicorn', 'Flask', 'SQLAlchemy')) + f', SQLite "
              "{sqlite3.sqlite_version}')")
    return run_tool([venv / "bin" / "python", "-c", script]).strip()


def their_users(count: int) -> list[TotpUser]:
    """Users with a random seed each; -1: no step used yet."""
    return [TotpUser(f"pi{i:05d}", base64.b32encode(secrets.token_bytes(20)).decode(), -1)
            for i in range(count)]


def prepare_privacyidea(venv: Path, work: Path, users: Sequence[TotpUser]) -> dict[str, str]:
    """pi.cfg, keys, tables, resolver, realm and the users' tokens; returns the environment
    that points privacyIDEA's tools and gunicorn at this configuration."""
    work.mkdir(parents=True)
    config = work / "pi.cfg"
    config.write_text(
        f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{work / 'privacyidea.sqlite'}'\n"
        f"SECRET_KEY = '{secrets.token_hex(32)}'\n"
        f"PI_PEPPER = '{secrets.token_hex(16)}'\n"
        f"PI_ENCFILE = '{work / 'enckey'}'\n"
        f"PI_AUDIT_KEY_PRIVATE = '{work / 'audit-private.pem'}'\n"
        f"PI_AUDIT_KEY_PUBLIC = '{work / 'audit-public.pem'}'\n"
        f"PI_LOGFILE = '{work / 'privacyidea.log'}'\n"
        "PI_LOGLEVEL = 20\n"  # INFO, the production default
        f"PI_NODE_UUID = '{uuid.uuid4()}'\n"  # else it would read or write /etc/privacyidea
        "PI_NODE = 'bench'\n"
        "PI_BASE_URL = 'http://127.0.0.1'\n")  # else a warning per worker start
    env = {**os.environ, "PRIVACYIDEA_CONFIGFILE": str(config)}
    manage = venv / "bin" / "pi-manage"
    for step in (["setup", "create_enckey"], ["setup", "create_audit_keys"],
                 ["setup", "create_tables"]):
        run_tool([manage, *step], env)
    passwd = work / "users"
    passwd.write_text("".join(f"{u.name}:x:{10000 + i}:{10000 + i}:Bench:/nonexistent:"
                              "/usr/sbin/nologin\n" for i, u in enumerate(users)))
    resolver = work / "resolver.conf"
    resolver.write_text(repr({"fileName": str(passwd)}))
    run_tool([manage, "config", "resolver", "create", RESOLVER, "passwdresolver", resolver], env)
    run_tool([manage, "config", "realm", "create", REALM, RESOLVER], env)
    run_tool([manage, "config", "realm", "set_default", REALM], env)
    tokens = work / "tokens.csv"  # version 2: the first three columns assign the token
    tokens.write_text("# version: 2\n" + "".join(
        f"{u.name}, {RESOLVER}, {REALM}, BENCH{i:05d}, {base64.b32decode(u.secret).hex()}, "
        f"totp, {PARAMS.digits}, {PARAMS.period}\n" for i, u in enumerate(users)))
    run_tool([manage, "token", "import", tokens], env)
    (work / "wsgi.py").write_text(
        "from privacyidea.app import create_app\n"
        f"application = create_app(config_name='production', config_file={str(config)!r}, "
        "silent=True)\n")
    return env


def children(parent: int) -> list[int]:
    """The live child processes of `parent` (gunicorn's workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return sorted(found)


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def pids(self) -> list[int]:
        """The master and its workers: all of them serve (the master only supervises)."""
        return [self.process.pid, *children(self.process.pid)]


@contextlib.contextmanager
def running_gunicorn(venv: Path, work: Path, env: dict[str, str],
                     workers: int) -> Iterator[Gunicorn]:
    """privacyIDEA under gunicorn with sync workers on a free loopback port, until the block
    ends; up when all the workers run and one answers the liveness probe."""
    url = f"http://127.0.0.1:{free_port()}"
    log = work / "gunicorn.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "--workers", str(workers), "--bind",
             url.removeprefix("http://"), "--chdir", str(work), "--no-control-socket",
             "wsgi:application"],
            env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)
    server = Gunicorn(process, url, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"gunicorn did not start: {log.read_text()[-800:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (len(server.pids()) == workers + 1 and
                        httpx.get(f"{url}/healthz/livez", timeout=5).status_code == 200):
                    break
            time.sleep(0.2)  # waiting for real processes to bind and import
        yield server
    finally:
        if process.poll() is None:
            process.terminate()  # gunicorn stops its workers on SIGTERM
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only its processes
                process.wait(10)


# -- the validations, one check per side ------------------------------------------------------


def their_check(client: Client) -> Check:
    """privacyIDEA's validation: one request with the user and the code (the PIN is empty)."""
    async def check(user: TotpUser, code: str) -> str | None:
        form = urlencode({"user": user.name, "realm": REALM, "pass": code}).encode()
        reply = await client.post("/validate/check", form, "application/x-www-form-urlencoded")
        if reply.status != 200:
            return f"HTTP {reply.status}"
        result = reply.json().get("result", {})
        if result.get("value") is not True:
            return str(reply.json().get("detail", {}).get("message", result))[:80]
        return None

    return check


def our_check(client: Client, calls: str = "check") -> Check:
    """Ours, as a remote adapter makes it: `POST /v1/auth/check` with the user and the code
    (the counterpart of /validate/check), or with `calls="begin-answer"` the two-step dialogue
    an adapter that prompts makes: `begin` (a prompt), then `answer` with the code."""
    async def one_call(user: TotpUser, code: str) -> str | None:
        reply = await client.post_json("/v1/auth/check", {
            "user": user.name, "code": code, "service": "bench"})
        if reply.status != 200:
            return f"check: HTTP {reply.status}"
        outcome = reply.json()["outcome"]
        return None if outcome == "accept" else f"check: {outcome}"

    async def two_calls(user: TotpUser, code: str) -> str | None:
        reply = await client.post_json("/v1/auth/begin", {"user": user.name, "service": "bench"})
        if reply.status != 200:
            return f"begin: HTTP {reply.status}"
        step = reply.json()
        if step["outcome"] != "prompt":
            return f"begin: {step['outcome']}"
        reply = await client.post_json("/v1/auth/answer", {
            "token": step["token"], "answer": code, "service": "bench"})
        if reply.status != 200:
            return f"answer: HTTP {reply.status}"
        outcome = reply.json()["outcome"]
        return None if outcome == "accept" else f"answer: {outcome}"

    return one_call if calls == "check" else two_calls


# The same validations as wrk sends them (wrk_load.py); `accepted` is what the checks above
# read in the reply of an accepted one.
THEIR_SPELLING = Spelling(
    "/validate/check", "application/x-www-form-urlencoded", '"value":%s*true',
    lambda user, code: urlencode({"user": user, "realm": REALM, "pass": code}))
OUR_SPELLING = Spelling(
    "/v1/auth/check", "application/json", '"outcome":%s*"accept"',
    lambda user, code: json.dumps({"user": user, "code": code, "service": "bench"}))


def wrong_code(user: TotpUser) -> str:
    """A code valid in no step that either server could take (privacyIDEA: +-3 steps)."""
    valid = {totp.code_at(user.secret, PARAMS, (current_step() + k) * PARAMS.period)
             for k in range(-4, 5)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


# -- the load generator, the same for both -----------------------------------------------------


@dataclass
class Pool:
    """Whose code is fresh: each user once per time step on one server (replay protection)."""

    users: list[TotpUser]
    cursor: int = 0

    def take(self) -> tuple[TotpUser, int] | None:
        step = current_step()
        for _ in range(len(self.users)):
            user = self.users[self.cursor]
            self.cursor = (self.cursor + 1) % len(self.users)
            if user.last_step < step:
                user.last_step = step  # sent is spent, answered or not
                return user, step
        return None

    def take_all(self) -> list[tuple[TotpUser, int]]:
        """Every user whose code is fresh now, each spent by being taken."""
        taken = []
        while (login := self.take()) is not None:
            taken.append(login)
        return taken

    def fresh(self) -> int:
        step = current_step()
        return sum(1 for u in self.users if u.last_step < step)

    def wait_if_short(self) -> None:
        """Before a window: with fewer than half the users fresh, wait for the next step."""
        if self.fresh() < len(self.users) / 2:
            time.sleep(max((current_step() + 1) * PARAMS.period - time.time() + 0.05, 0.0))


@dataclass
class Window:
    """One measured window against one server."""

    side: str
    run: int
    seconds: float = 0.0
    accepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # warm-up and window alike
    latencies_ms: list[float] = field(default_factory=list)
    percentiles_ms: tuple[float, float] | None = None  # p50 and p99, when wrk measured them
    server_cpu: float = 0.0  # s over the window, all server processes
    bench_cpu: float = 0.0  # s over the window, this process
    ran_out: bool = False  # the fresh codes ran out before --seconds

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def cpu_ms(self) -> float:
        return self.server_cpu / self.accepted * 1000 if self.accepted else float("nan")

    def bench_ms(self) -> float:
        return self.bench_cpu / self.accepted * 1000 if self.accepted else float("nan")

    def busy(self) -> float:
        return self.server_cpu / self.seconds if self.seconds else float("nan")

    def p50_p99(self) -> tuple[float, float]:
        if self.percentiles_ms is not None:
            return self.percentiles_ms
        if not self.latencies_ms:
            return float("nan"), float("nan")
        return percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)


async def drive(check: Check, pool: Pool, concurrency: int, warmup: float, seconds: float,
                pids: Callable[[], list[int]], result: Window) -> None:
    """`concurrency` validations in flight, each with a fresh code, as fast as the server
    answers; only those that finish inside the window count. The server's and this process's
    CPU are read at the window's edges."""
    counting = False
    stopping = False
    ran_out = asyncio.Event()

    async def worker() -> None:
        while not stopping:
            login = pool.take()
            if login is None:
                ran_out.set()
                return
            user, step = login
            code = totp.code_at(user.secret, PARAMS, step * PARAMS.period)
            started = time.perf_counter()
            try:
                why = await check(user, code)
            except (LeanHTTPError, ValueError, KeyError) as exc:  # ValueError: not JSON
                why = type(exc).__name__
            if why is not None:
                result.failures[why] += 1
            elif counting:
                result.accepted += 1
                result.latencies_ms.append((time.perf_counter() - started) * 1000)

    async def until(timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ran_out.wait(), timeout)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await until(warmup)
        if ran_out.is_set():
            raise BenchFailure(f"{result.side}: the fresh codes ran out during the warm-up")
        processes = pids()
        server, bench, start = (sum(map(cpu_seconds, processes)), time.process_time(),
                                time.perf_counter())
        counting = True
        await until(seconds)
        counting = False
        result.seconds = time.perf_counter() - start
        result.bench_cpu = time.process_time() - bench
        if pids() != processes:
            raise BenchFailure(f"{result.side}: a server process was replaced in the window")
        result.server_cpu = sum(map(cpu_seconds, processes)) - server
        result.ran_out = ran_out.is_set()
        stopping = True
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


@dataclass(frozen=True)
class Side:
    """One server as the generator drives it."""

    label: str
    bases: tuple[str, ...]  # several: the requests are shared among them
    auth: str | None  # the Authorization header, if the server wants one
    make_check: Callable[[Client], Check]
    spelling: Spelling  # the same validation, as wrk sends it
    pool: Pool
    pids: Callable[[], list[int]]  # the processes whose CPU is the server's

    def window(self, run: int, args: argparse.Namespace, work: Path) -> Window:
        if args.generator == "wrk":
            return self.wrk_window(run, args, work)
        result = Window(self.label, run)

        async def go() -> None:
            client = self.client()
            try:
                await drive(self.make_check(client), self.pool, args.concurrency, args.warmup,
                            args.seconds, self.pids, result)
            finally:
                client.close()

        uvloop.run(go())
        return result

    def wrk_window(self, run: int, args: argparse.Namespace, work: Path) -> Window:
        """The warm-up and the window as two wrk runs, with the codes of every fresh user
        made before them; the server's and the generator's CPU are read at the window's
        edges (wrk's own from its resource usage)."""
        result = Window(self.label, run)
        bodies = [self.spelling.body(user.name, totp.code_at(user.secret, PARAMS,
                                                             step * PARAMS.period))
                  for user, step in self.pool.take_all()]
        warm_files, window_files = deal(bodies, len(self.bases), args.warmup, args.seconds,
                                        work)
        warm = run_wrk(self.spelling, self.bases, self.auth, args.concurrency, args.warmup,
                       warm_files)
        result.failures.update(warm.failures)
        if warm.ran_out:
            raise BenchFailure(f"{self.label}: the fresh codes ran out during the warm-up")
        processes = self.pids()
        server, bench = sum(map(cpu_seconds, processes)), time.process_time()
        outcome = run_wrk(self.spelling, self.bases, self.auth, args.concurrency,
                          args.seconds, window_files)
        result.bench_cpu = time.process_time() - bench + outcome.cpu
        if self.pids() != processes:
            raise BenchFailure(f"{self.label}: a server process was replaced in the window")
        result.server_cpu = sum(map(cpu_seconds, processes)) - server
        result.seconds, result.accepted, result.ran_out = (outcome.seconds, outcome.accepted,
                                                           outcome.ran_out)
        result.failures.update(outcome.failures)
        result.percentiles_ms = (outcome.p50_ms, outcome.p99_ms)
        return result

    def client(self) -> Client:
        headers = {"Authorization": self.auth} if self.auth else None
        clients = [LeanClient(base, headers) for base in self.bases]
        return clients[0] if len(clients) == 1 else Spread(clients)

    def check_refusal(self) -> None:
        """A wrong code must be refused: a server that took anything would be timed doing
        less than a validation."""
        async def go() -> str | None:
            client = self.client()
            try:
                user = self.pool.users[0]
                return await self.make_check(client)(user, wrong_code(user))
            finally:
                client.close()

        if uvloop.run(go()) is None:
            raise BenchFailure(f"{self.label}: a wrong code was accepted")


# -- report -----------------------------------------------------------------------------------


def generator_version() -> str:
    done = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True,
                          check=False)
    return (done.stdout or done.stderr).split("[")[0].strip()  # "wrk debian/4.1.0-3+b2"


def machine_lines(venv: Path, workers: int, our_calls: str, processes: int,
                  generator: str) -> list[str]:
    ours = ", ".join(f"{p} {package_version(p)}" for p in
                     ("uvicorn", "fastapi", "SQLAlchemy"))
    return [machine_line(),
            f"theirs: {their_versions(venv)}; gunicorn with {workers} sync workers",
            f"ours: {ours}, SQLite {sqlite3.sqlite_version}; "
            + ("one serve process" if processes == 1 else
               f"{processes} serve processes on one home, each on its own port, requests shared "
               "among them")
            + "; a validation is "
            + ("one POST /v1/auth/check" if our_calls == "check"
               else "POST /v1/auth/begin, then /v1/auth/answer"),
            "the load generator ("
            + (f"{generator_version()}, one thread per server process, with "
               "bench/wrk_validate.lua" if generator == "wrk" else
               f"this process: uvloop {package_version('uvloop')}, httptools "
               f"{package_version('httptools')}")
            + ") and the servers share the machine's CPUs"]


def table(windows: Sequence[Window]) -> list[str]:
    header = (f"{'server':<36} {'run':>3} {'valid./s':>8} {'accepted':>8} {'failed':>6} "
              f"{'ms CPU srv':>10} {'srv CPUs':>8} {'ms CPU gen':>10} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'window s':>8}")
    lines = [header, "-" * len(header)]
    for w in windows:
        p50, p99 = w.p50_p99()
        lines.append(f"{w.side:<36} {w.run:>3} {w.rate:>8,.1f} {w.accepted:>8,} "
                     f"{sum(w.failures.values()):>6,} {w.cpu_ms():>10.2f} {w.busy():>8.2f} "
                     f"{w.bench_ms():>10.2f} {p50:>7.1f} {p99:>7.1f} {w.seconds:>8.1f}"
                     + (" (fresh codes ran out)" if w.ran_out else ""))
    return lines


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def summary(windows: Sequence[Window]) -> list[str]:
    lines: list[str] = []
    for w in windows:
        for why, count in w.failures.most_common():
            lines.append(f"{w.side}, run {w.run}: {count:,} not accepted: {why}")
    pairs = [(t, o) for t in windows for o in windows
             if t.side == THEIRS and o.side == OURS and t.run == o.run]
    rates, cpus = [], []
    for theirs, ours in pairs:
        rates.append(ours.rate / theirs.rate)
        cpus.append(ours.cpu_ms())
        lines.append(f"run {ours.run}: ours {ours.rate:,.1f}/s = {rates[-1]:.1f}x privacyIDEA's "
                     f"{theirs.rate:,.1f}/s; server CPU per validation {ours.cpu_ms():.2f} ms "
                     f"against {theirs.cpu_ms():.2f} ms ({theirs.cpu_ms() / ours.cpu_ms():.1f} "
                     "times less)")
    if pairs:
        lines.append(f"goal: at least {GOAL_RATE_RATIO:.0f}x privacyIDEA's rate: "
                     f"{min(rates):.1f}x to {max(rates):.1f}x over {len(pairs)} runs: "
                     f"{verdict(min(rates) >= GOAL_RATE_RATIO)}")
        lines.append(f"goal: under {GOAL_CPU_MS:g} ms of server CPU per validation: "
                     f"{min(cpus):.2f} to {max(cpus):.2f} ms over {len(pairs)} runs: "
                     f"{verdict(max(cpus) < GOAL_CPU_MS)}")
    return lines


# -- main -------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, work: Path) -> bool:
    """Set up both, run the interleaved windows, print; True when every figure is valid."""
    venv = privacyidea_venv(args.cache)
    for line in machine_lines(venv, args.their_workers, args.our_calls, args.our_processes,
                              args.generator):
        print(line, flush=True)
    port = free_port()
    home = make_home(work, port)  # raises [service] client_rate, among others
    started = time.monotonic()
    mfa = MFA.open(home)
    try:
        ours = Pool(add_totp_users(mfa, args.users))
    finally:
        mfa.close()
    _, auth = add_api_client(home, 0)
    print(f"ours: {args.users:,} users with a confirmed TOTP factor in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    theirs = Pool(their_users(args.their_users))
    env = prepare_privacyidea(venv, work / "privacyidea", theirs.users)
    print(f"theirs: {args.their_users:,} users with a TOTP token in "
          f"{time.monotonic() - started:.1f} s", flush=True)

    windows: list[Window] = []
    services: list[Service] = []
    try:
        for n in range(args.our_processes):  # the first on the public URL's port
            listen = f"127.0.0.1:{port if n == 0 else free_port()}"
            services.append(Service(home, f"http://{listen}", f"bench{n}", listen))
        for service in services:
            service.wait_healthy(START_TIMEOUT)
        with running_gunicorn(venv, work / "privacyidea", env, args.their_workers) as gunicorn:
            sides = [Side(THEIRS, (gunicorn.url,), None, their_check, THEIR_SPELLING, theirs,
                          gunicorn.pids),
                     Side(OURS, tuple(s.url for s in services), auth,
                          partial(our_check, calls=args.our_calls), OUR_SPELLING, ours,
                          lambda: [s.pid for s in services])]
            for side in sides:
                side.check_refusal()
            # What set-up made (the users, their codes' state) lives to the end: out of the
            # generator's collections, whose pauses would hold up every validation in flight.
            gc.freeze()
            print(f"\n{args.concurrency} validations in flight; {args.warmup:g} s of warm-up, "
                  f"then {args.seconds:g} s measured, per window\n", flush=True)
            print("\n".join(table([])), flush=True)
            for run in range(1, args.runs + 1):
                for side in sides:
                    side.pool.wait_if_short()
                    windows.append(side.window(run, args, work))
                    print(table(windows[-1:])[-1], flush=True)
    finally:
        for service in services:
            service.stop()
    print()
    print("\n".join(summary(windows)))
    statuses, tracebacks = Counter[str](), 0
    for service in services:
        more, traces = service.log_summary()
        statuses, tracebacks = statuses + more, tracebacks + traces
    bad = {k: v for k, v in statuses.items() if not k.startswith("2")}
    print(f"serve's log: {sum(statuses.values()):,} requests; not 2xx: {bad or 'none'}; "
          f"tracebacks: {tracebacks}")
    errors = sum(1 for line in (work / "privacyidea" / "privacyidea.log").read_text(
        errors="replace").splitlines() if "[ERROR]" in line or "[CRITICAL]" in line)
    print(f"privacyIDEA's log: {errors} ERROR or CRITICAL lines")
    return not any(w.failures or w.ran_out for w in windows) and not bad and not tracebacks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per window (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before each window, not counted (default 3)")
    parser.add_argument("--runs", type=int, default=2,
                        help="windows per server, interleaved (default 2)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="validations in flight, both servers (default 8)")
    parser.add_argument("--users", type=int, default=None,
                        help="our users: each gives one fresh code per 30 s (default 26,000 "
                        "per serve process)")
    parser.add_argument("--their-users", type=int, default=600,
                        help="privacyIDEA's users, likewise (default 600)")
    parser.add_argument("--our-calls", choices=("check", "begin-answer"), default="check",
                        help="our validation: one /v1/auth/check, or begin then answer")
    parser.add_argument("--generator", choices=("wrk", "lean"), default=None,
                        help="the load generator: wrk (the default for --our-calls check) "
                        "or this process with bench/lean_http.py (the only one for "
                        "begin-answer, whose second request needs the first's reply)")
    parser.add_argument("--their-workers", type=int, default=2,
                        help="gunicorn's sync workers for privacyIDEA (default 2)")
    parser.add_argument("--our-processes", type=int, default=1,
                        help="serve processes on our one home, each on its own port, "
                        "the requests shared among them (default 1)")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="where privacyIDEA's virtual environment is kept")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory: configuration, databases, logs")
    args = parser.parse_args()
    if args.generator is None:
        args.generator = "wrk" if args.our_calls == "check" else "lean"
    elif args.generator == "wrk" and args.our_calls != "check":
        parser.error("--our-calls begin-answer needs --generator lean")
    if args.users is None:  # a window and its warm-up take 13 s of fresh codes, at up to 2,000/s
        args.users = USERS_PER_PROCESS * args.our_processes
    work = Path(tempfile.mkdtemp(prefix="unified-mfa-pi-bench-"))
    try:
        with stop_on_signals():
            valid = measure(args, work)
    except BenchFailure as exc:
        print(f"peer_privacyidea: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("peer_privacyidea: interrupted; the servers were stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average after the run: {load}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
