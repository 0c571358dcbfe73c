"""Verified TOTP codes per second through the core, with replay protection, against bare pyotp.

What is measured: `MFA.authenticate_code`, the complete check an adapter makes when a user sends
a password and a code together (RADIUS, PAM). One call is two store transactions: `begin` finds
the account, reads the policy and the user's factors and creates a dialogue row; `answer` claims
and rotates the dialogue token, decrypts the seed, matches the code in the +-window, moves the
factor's `last_step` forward with a conditional UPDATE (replay protection, S01), clears the
failure counter (S02), writes the audit record and deletes the dialogue. Every verification uses
a new, valid code, so replay protection accepts it and the whole accept path is measured; a run
in which any code is refused stops with an error, because a benchmark that quietly times
rejections measures something else.

Why against bare `pyotp.TOTP(secret).verify(code)`: that is the floor, the arithmetic alone with
no state. The ratio says what state costs: durable replay protection, throttling, the audit
trail and a resumable dialogue that any node can continue. It is not a target to reach; it shows
where the time goes and whether a change made the hot path cheaper or dearer. pyotp is also
timed with valid_window=1, the window the core checks by default (three steps instead of one).

How: N users, each with a confirmed Protect TOTP factor, live on a fake clock. Each round moves
the clock one TOTP period forward and every user logs in once with the code of that period.
Codes are computed before the timed section. A loop runs for at most --seconds per backend, or
until the precomputed rounds are used up. Next to wall time: the CPU time of this process (the
core itself, SQLAlchemy and the database driver; for SQLite also the database engine) and, for
a PostgreSQL server on this host, the CPU time of the backend process serving the core. What
is left of the wall time is waiting: for commits to reach the disk, and for the scheduler.

PostgreSQL: --pg-url, else $UNIFIED_MFA_TEST_PG_URL (both get a fresh schema that is dropped at
the end), else a throwaway local cluster started here with PostgreSQL's default durability
(fsync and synchronous_commit on, as a deployment has) and stopped at exit. PostgreSQL is also
measured with synchronous_commit=off for the session, to show how much of its time is the WAL
flush at each commit. Without PostgreSQL, SQLite is still measured.

    .venv/bin/python bench/core_totp.py [--users N] [--seconds S] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyotp
from sqlalchemy import create_engine, event, make_url, text

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, Outcome, RequestContext
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.home import init_home
from pam_unified_mfa.store.database import normalise_url
from pam_unified_mfa.store.prepared import Prepared

START = 1_800_000_015.0  # a fixed instant in the middle of a 30 s TOTP step
CTX = RequestContext(adapter="radius", client="bench")
PG_PORTS = range(54329, 54400)  # the range scripts/test uses


class BenchError(Exception):
    """The measurement is invalid (a refused code, a setup that did not work)."""


class PostgresUnavailable(Exception):
    """PostgreSQL could not be started or reached; the bench goes on with SQLite."""


class FakeClock:
    """The core's clock, moved by hand: each round is one TOTP period later."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- machine facts ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """Other work on the machine slows every row alike; the load says how much there was."""
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "unknown"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a local process has used, from /proc; None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_backend(mfa: MFA) -> int | None:
    """The pid of the PostgreSQL backend serving the core, when the server runs on this host.

    The bench drives the core from one thread, so the pool holds one connection and one backend
    does all the server-side work; its CPU time is the server's share of a verification.
    """
    if mfa.store.is_sqlite or make_url(mfa.store.url).host not in (None, "127.0.0.1",
                                                                     "localhost", "::1"):
        return None
    with mfa.store.session() as session:
        pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
    return pid if process_cpu(pid) is not None else None


def server_version(url: str) -> str:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


# -- PostgreSQL -------------------------------------------------------------------------------


def with_pg_options(url: str, *settings: str) -> str:
    """Add `-c name=value` server settings to a URL's libpq `options` parameter."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    extra = " ".join(f"-c {s}" for s in settings)
    query["options"] = f"{query['options']} {extra}" if query.get("options") else extra
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pg_bin() -> Path:
    def key(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=key)
    usable = [p for p in candidates if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    if not usable:
        raise PostgresUnavailable("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return usable[-1]


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A throwaway cluster on 127.0.0.1, as scripts/test starts one; stopped and removed at exit.

    initdb and postgres refuse to run as root, so as root they run as the `postgres` user.
    """
    pg_bin = _pg_bin()
    workdir = Path(tempfile.mkdtemp(prefix="unified-mfa-bench-pg."))
    data, log = workdir / "data", workdir / "postgres.log"
    as_pg: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, user="postgres", group="postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    started = False

    def run(*args: str) -> None:
        done = subprocess.run([*as_pg, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: "
                                      f"{(done.stderr or done.stdout).strip()[-600:]}")

    try:
        port = next((p for p in PG_PORTS if _port_is_free(p)), None)
        if port is None:
            raise PostgresUnavailable(f"no free TCP port in {PG_PORTS.start}-{PG_PORTS.stop - 1}")
        run(str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
            "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256")
        try:
            run(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                "-o", f"-c listen_addresses=127.0.0.1 -c port={port} "
                      f"-c unix_socket_directories={workdir}", "start")
        except PostgresUnavailable:
            tail = log.read_text(encoding="utf-8", errors="replace")[-600:] if log.exists() else ""
            raise PostgresUnavailable(f"the server did not start: {tail.strip()}") from None
        started = True
        password = secrets.token_hex(16)
        admin = create_engine(
            f"postgresql+psycopg://postgres@/postgres?host={workdir}&port={port}",
            isolation_level="AUTOCOMMIT",
        )
        try:
            with admin.connect() as connection:
                connection.execute(text(f"CREATE ROLE bench LOGIN PASSWORD '{password}'"))
                connection.execute(text("CREATE DATABASE unified_mfa_bench OWNER bench"))
        except Exception as exc:
            raise PostgresUnavailable(f"cannot create the bench database: {exc}") from None
        finally:
            admin.dispose()
        yield f"postgresql://bench:{password}@127.0.0.1:{port}/unified_mfa_bench"
    finally:
        if started:
            stop = [*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "stop"]
            if subprocess.run([*stop, "-m", "fast"], capture_output=True,
                              check=False).returncode != 0:
                subprocess.run([*stop, "-m", "immediate"], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A fresh schema in someone else's database, dropped at the end: nothing is left behind."""
    schema = f"unified_mfa_bench_{secrets.token_hex(4)}"
    engine = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise PostgresUnavailable(f"cannot use {redact(url)}: {reason}") from None
    try:
        yield with_pg_options(url, f"search_path={schema}")
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# -- the measurement --------------------------------------------------------------------------


@dataclass
class User:
    name: str
    secret: str
    last_step: int  # the newest step the core has accepted for this user's factor


@dataclass
class Result:
    label: str
    count: int
    wall: float
    cpu: float | None
    server_cpu: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0


@dataclass
class Population:
    """One store with N users with confirmed TOTP factors, and the clock they live on."""

    url: str
    home: Path
    clock: FakeClock
    users: list[User] = field(default_factory=list)
    sql_per_verification: float = 0.0
    tx_per_verification: float = 0.0

    @property
    def params(self) -> totp.TotpParams:
        return totp.TotpParams()

    def open(self, url: str | None = None) -> MFA:
        return MFA.open(self.home, store=url or self.url, clock=self.clock)

    def enroll(self, count: int) -> None:
        init_home(self.home, store=self.url)
        mfa = self.open()
        try:
            params = mfa.settings.totp.params()
            if params != self.params:
                raise BenchError(f"unexpected TOTP settings {params}")
            for i in range(count):
                name = f"bench{i:05d}"
                mfa.add_user(name)
                secret = parse_uri(mfa.enroll(name).uri).totp_secret
                if secret is None:
                    raise BenchError("the enrollment URI holds no TOTP secret")
                code = totp.code_at(secret, params, self.clock())
                step = mfa.authenticate_code(name, code, CTX)
                if step.outcome is not Outcome.ACCEPT:
                    raise BenchError(f"first code of {name} refused: {step.message}")
                claimed = totp.match_step(secret, params, code, self.clock(),
                                          mfa.settings.totp.window)
                assert claimed is not None
                self.users.append(User(name, secret, claimed))
        finally:
            mfa.close()

    def plan(self, rounds: int, window: int) -> list[tuple[float, list[tuple[User, str]]]]:
        """The next `rounds` rounds: the clock of each and every user's code for it.

        A code can also equal the code of a neighbouring step; the core then records the later
        step (totp.match_step), and the same user's next code would be a genuine replay. Such a
        login is left out of the plan rather than counted as a refusal.
        """
        planned: list[tuple[float, list[tuple[User, str]]]] = []
        last = {u.name: u.last_step for u in self.users}
        now = self.clock.now
        for _ in range(rounds):
            now += self.params.period
            logins = []
            for user in self.users:
                code = totp.code_at(user.secret, self.params, now)
                step = totp.match_step(user.secret, self.params, code, now, window)
                if step is not None and step > last[user.name]:
                    last[user.name] = step
                    logins.append((user, code))
            planned.append((now, logins))
        return planned

    def run_round(self, mfa: MFA, now: float, logins: list[tuple[User, str]],
                  deadline: float = math.inf) -> tuple[int, bool]:
        """Log every planned user in once; (accepted count, deadline reached)."""
        self.clock.now = now
        authenticate = mfa.authenticate_code
        accepted = 0
        for user, code in logins:
            step = authenticate(user.name, code, CTX)
            if step.outcome is not Outcome.ACCEPT:
                raise BenchError(f"a valid code of {user.name} was refused "
                                 f"({step.outcome}: {step.message}); the run measures nothing")
            accepted += 1
            if time.perf_counter() >= deadline:
                return accepted, True
        return accepted, False

    def count_statements(self, mfa: MFA) -> None:
        """Run one untimed round with SQL counting on: statements and transactions per login."""
        statements = transactions = 0

        def on_execute(*_args: Any) -> None:
            nonlocal statements
            statements += 1

        def on_commit(*_args: Any) -> None:
            nonlocal transactions
            transactions += 1

        # Prepared statements run on the DBAPI cursor, past SQLAlchemy's events: counted here.
        prepared_cursor = Prepared._cursor

        def counted_cursor(prepared: Prepared, *args: Any) -> Any:
            on_execute()
            return prepared_cursor(prepared, *args)

        engine = mfa.store.engine
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)
        Prepared._cursor = counted_cursor  # type: ignore[method-assign,assignment]
        try:
            (now, logins), = self.plan(1, mfa.settings.totp.window)
            done, _ = self.run_round(mfa, now, logins)
            self.sync_last_steps(logins, now, mfa.settings.totp.window)
        finally:
            Prepared._cursor = prepared_cursor  # type: ignore[method-assign]
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "commit", on_commit)
        self.sql_per_verification = statements / done
        self.tx_per_verification = transactions / done

    def sync_last_steps(self, logins: list[tuple[User, str]], now: float, window: int) -> None:
        for user, code in logins:
            step = totp.match_step(user.secret, self.params, code, now, window)
            if step is not None:
                user.last_step = max(user.last_step, step)

    def measure(self, label: str, seconds: float, url: str | None = None) -> Result:
        mfa = self.open(url)
        try:
            window = mfa.settings.totp.window
            # Warm-up round (also sizes the plan): connections, caches, statement compilation.
            warm = time.perf_counter()
            (now, logins), = self.plan(1, window)
            self.run_round(mfa, now, logins)
            self.sync_last_steps(logins, now, window)
            per_round = max(time.perf_counter() - warm, 1e-6)
            rounds = min(max(3, math.ceil(4 * seconds / per_round) + 1), 100_000)
            planned = self.plan(rounds, window)

            count = 0
            executed: list[tuple[float, list[tuple[User, str]]]] = []
            over = False
            backend = local_backend(mfa)
            server_start = process_cpu(backend) if backend else None
            cpu_start = time.process_time()
            start = time.perf_counter()
            deadline = start + seconds
            for now, logins in planned:
                done, over = self.run_round(mfa, now, logins, deadline)
                count += done
                executed.append((now, logins[:done]))
                if over:
                    break
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            server_cpu = None
            if backend and server_start is not None:
                server_end = process_cpu(backend)
                # The same backend must still serve the core, or its time is not the server's.
                if server_end is not None and local_backend(mfa) == backend:
                    server_cpu = server_end - server_start
            # Bring the users' replay state in line with what the core now holds.
            for now, logins in executed:
                self.sync_last_steps(logins, now, window)
            note = "" if over else f"stopped after all {rounds} planned rounds"
            return Result(label, count, wall, cpu, server_cpu, note)
        finally:
            mfa.close()

    def codes(self, rounds: int) -> list[tuple[str, str, float]]:
        """(secret, code, time) triples for the baseline, from a plan that is not executed."""
        return [(user.secret, code, now)
                for now, logins in self.plan(rounds, 1) for user, code in logins]


def bare_pyotp(codes: list[tuple[str, str, float]], seconds: float, window: int) -> Result:
    """The floor: pyotp alone, a new TOTP object per check, no state, no replay protection."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    cpu_start = time.process_time()
    done = False
    while not done:
        for secret, code, now in codes:
            if not pyotp.TOTP(secret).verify(code, for_time=now, valid_window=window):
                raise BenchError("bare pyotp refused a valid code: the codes are wrong")
            count += 1
            if time.perf_counter() >= deadline:
                done = True
                break
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    label = "bare pyotp" if window == 0 else f"bare pyotp, valid_window={window}"
    return Result(label, count, wall, cpu)


# -- output ----------------------------------------------------------------------------------


def print_table(results: list[Result], baseline: Result) -> None:
    def per(seconds: float | None, count: int) -> str:
        return f"{seconds / count * 1e6:,.1f}" if seconds is not None and count else "-"

    header = ("measured", "verifications", "per second", "µs wall", "µs CPU bench",
              "µs CPU server", "vs bare pyotp")
    rows = [header]
    for r in results:
        rows.append((r.label, f"{r.count:,}", f"{r.rate:,.0f}", per(r.wall, r.count),
                     per(r.cpu, r.count), per(r.server_cpu, r.count),
                     f"{r.rate / baseline.rate:.4f}x" if baseline.rate else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("(all per verification. CPU bench: time.process_time of this process, which runs the "
          "core.\n CPU server: the PostgreSQL backend serving it, from /proc, when it is local.)")
    print()
    for r in results:
        if r.label.startswith("core") and baseline.rate and r.rate:
            print(f"{r.label}: {r.rate:,.0f}/s = {r.rate / baseline.rate:.4f}x of bare pyotp "
                  f"({baseline.rate / r.rate:,.0f} times slower)")
        if r.note:
            print(f"  note: {r.label}: {r.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=200, help="users with a TOTP factor (200)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="time budget of each measured loop (5)")
    parser.add_argument("--pg-url", help="PostgreSQL to measure (a scratch schema is used); "
                        "default $UNIFIED_MFA_TEST_PG_URL, else a throwaway local cluster")
    args = parser.parse_args(argv)
    if args.users < 1 or args.seconds <= 0:
        parser.error("--users and --seconds must be positive")

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # so the throwaway cluster is stopped on the way out

    signal.signal(signal.SIGTERM, terminate)

    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"{cpu_model()}, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"SQLAlchemy {package_version('sqlalchemy')}, psycopg {package_version('psycopg')}, "
          f"pyotp {package_version('pyotp')}")
    print(f"users: {args.users}, time budget per loop: {args.seconds:g} s, "
          f"load average before: {load_average()}")
    print()

    results: list[Result] = []
    stats: list[str] = []
    with contextlib.ExitStack() as stack:
        scratch = tempfile.TemporaryDirectory(prefix="unified-mfa-bench.")
        workdir = Path(stack.enter_context(scratch))

        def populate(label: str, url: str) -> Population:
            population = Population(url, workdir / label, FakeClock())
            began = time.perf_counter()
            population.enroll(args.users)
            mfa = population.open()
            try:
                population.count_statements(mfa)
            finally:
                mfa.close()
            stats.append(f"{label}: {args.users} users enrolled in "
                         f"{time.perf_counter() - began:.1f} s; one verification = "
                         f"{population.tx_per_verification:g} transactions, "
                         f"{population.sql_per_verification:g} SQL statements "
                         f"besides BEGIN and COMMIT")
            return population

        sqlite_pop = populate("sqlite", f"sqlite:///{workdir / 'store.db'}")
        print("measuring core on SQLite ...", flush=True)
        results.append(sqlite_pop.measure("core on SQLite", args.seconds))

        pg_url: str | None = args.pg_url or os.environ.get("UNIFIED_MFA_TEST_PG_URL")
        try:
            if pg_url:
                source = f"given server {redact(pg_url)}"
                url = stack.enter_context(scratch_schema(pg_url))
            else:
                print("starting a throwaway PostgreSQL cluster ...", flush=True)
                url = stack.enter_context(local_postgres())
                source = "throwaway local cluster, default durability settings"
            pg_version = server_version(url)
        except PostgresUnavailable as exc:
            print(f"PostgreSQL NOT MEASURED: {exc}", flush=True)
            stats.append(f"PostgreSQL NOT MEASURED: {exc}")
        else:
            stats.append(f"PostgreSQL {pg_version} ({source})")
            pg_pop = populate("postgresql", url)
            print("measuring core on PostgreSQL ...", flush=True)
            results.append(pg_pop.measure("core on PostgreSQL", args.seconds))
            print("measuring core on PostgreSQL, synchronous_commit=off ...", flush=True)
            results.append(pg_pop.measure(
                "core on PostgreSQL, synchronous_commit=off", args.seconds,
                with_pg_options(url, "synchronous_commit=off")))

        print("measuring bare pyotp ...", flush=True)
        codes = sqlite_pop.codes(max(1, math.ceil(20_000 / args.users)))
        baseline = bare_pyotp(codes, args.seconds, 0)
        windowed = bare_pyotp(codes, args.seconds, 1)

    print()
    for line in stats:
        print(line)
    print(f"load average after: {load_average()}")
    print()
    print_table([*results, baseline, windowed], baseline)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
