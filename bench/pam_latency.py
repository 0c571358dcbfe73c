"""Time added per PAM authentication by `pam_unified_mfa.so` (with `unified-mfa pamd`) against
Debian's `pam_google_authenticator.so`, for the same TOTP check, both over `pam_unix` alone.

What is measured: the wall time of one `pamtester SERVICE USER authenticate` process, from
spawning it to its exit, with the password and the TOTP code fed on its stdin. Three throwaway
PAM services stack the same password check:

- `unix`:   `auth required pam_unix.so`
- `google`: `pam_unix.so`, then `pam_google_authenticator.so` (the user's ~/.google_authenticator)
- `ours`:   `pam_unix.so`, then `pam_unified_mfa.so socket=…` (the daemon on a temporary socket,
  its store SQLite in a temporary home)

So every figure includes starting pamtester, loading libpam and the stack's modules, and
pam_unix's password hash; the MFA modules' share is the difference of the medians over `unix`.
The product goal is no more than 3 ms added over pam_unix alone; the bench prints whether the
measured median difference meets it, and the ratio of the two MFA modules' added times.

Fairness: replay protection is on in both. Our core refuses a code twice (S01), and
`pam_google_authenticator` with `DISALLOW_REUSE` does the same, so every user logs in once per
service with the code of the current time step: N throwaway Linux users (default 200), each
with a password, a ~/.google_authenticator file (`" TOTP_AUTH`, `" WINDOW_SIZE 3`,
`" DISALLOW_REUSE`, `" RATE_LIMIT 3 30`: what `google-authenticator -t -d -w 3 -r 3 -R 30`
writes, the same ±1 step window and a throttle as ours) and a confirmed TOTP factor in our store
(confirmed with the previous step's code, so the current one is fresh). The three services run
interleaved, user by user and in rotating order, so that drift in the machine's load spreads over
all three. A few extra users warm up each service first (not counted). Every login must succeed,
or the bench stops with exit status 1.

Needs root, pamtester, build-essential and libpam0g-dev (to build the module); installs
libpam-google-authenticator with apt-get when it is missing. Every step has a timeout; users,
/etc/pam.d files, the daemon and the temporary directories are removed at exit, also on Ctrl-C or
SIGTERM.

    sudo .venv/bin/python bench/pam_latency.py [--users 200]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pam_unified_mfa import totp  # noqa: E402
from pam_unified_mfa.core import MFA, RequestContext  # noqa: E402
from pam_unified_mfa.enrollment_uri import parse_uri  # noqa: E402
from pam_unified_mfa.pamd import protocol as p  # noqa: E402

PAM_D = Path("/etc/pam.d")
UNIFIED_MFA = Path(sys.executable).with_name("unified-mfa")
STEP_TIMEOUT = 30.0
GOAL_MS = 3.0
WARMUP = 5
GA_OPTIONS = ('" TOTP_AUTH', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" RATE_LIMIT 3 30')


class Failed(Exception):
    """The bench cannot measure what it claims: stop with exit status 1."""


@dataclass
class User:
    name: str
    password: str
    ga_secret: str
    our_secret: str = ""


@dataclass
class Setup:
    tag: str
    work: Path
    users: list[User] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)
    pam_files: list[Path] = field(default_factory=list)
    pamd: subprocess.Popen[bytes] | None = None


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT * 4,
                            check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise Failed(f"{' '.join(command[:3])}: exit {result.returncode}: "
                     f"{(result.stderr or result.stdout).strip()[-500:]}")
    return result  # type: ignore[no-any-return]


def ensure_google_authenticator() -> None:
    if Path("/lib/x86_64-linux-gnu/security/pam_google_authenticator.so").exists() or \
            shutil.which("google-authenticator"):
        return
    print("installing libpam-google-authenticator (apt-get) …", flush=True)
    run(["apt-get", "install", "-y", "libpam-google-authenticator"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def package_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "?"


def code_now(secret: str, offset_steps: int = 0) -> str:
    params = totp.TotpParams()
    return totp.code_at(secret, params, time.time() + offset_steps * params.period)


# -- setting up -------------------------------------------------------------------------------


def add_users(setup: Setup, count: int) -> None:
    homes = setup.work / "homes"
    homes.mkdir()
    # Traversable: pam_google_authenticator reads ~/.google_authenticator as the user.
    for directory in (setup.work, homes):
        os.chmod(directory, 0o711)  # noqa: S103
    for i in range(count):
        user = User(f"{setup.tag}{i:04d}", secrets.token_urlsafe(12),
                    base64.b32encode(secrets.token_bytes(20)).decode("ascii"))
        run(["useradd", "--create-home", "--home-dir", str(homes / user.name),
             "--shell", "/bin/sh", user.name])
        setup.users.append(user)
        ga_file = homes / user.name / ".google_authenticator"
        ga_file.write_text("\n".join((user.ga_secret, *GA_OPTIONS)) + "\n", encoding="ascii")
        os.chmod(ga_file, 0o400)
        shutil.chown(ga_file, user.name, user.name)
    run(["chpasswd"], input="".join(f"{u.name}:{u.password}\n" for u in setup.users))


def enroll_users(home: Path, users: list[User]) -> None:
    """Each user with a confirmed TOTP factor, confirmed with the previous step's code."""
    mfa = MFA.open(home)
    try:
        ctx = RequestContext(adapter="cli", client="bench")
        for user in users:
            mfa.add_user(user.name)
            secret = parse_uri(mfa.enroll(user.name, "totp").uri).totp_secret
            if secret is None:
                raise Failed("the TOTP enrollment URI carries no secret")
            user.our_secret = secret
            if not mfa.authenticate_code(user.name, code_now(user.our_secret, -1), ctx).granted:
                raise Failed(f"could not confirm the TOTP factor of {user.name}")
    finally:
        mfa.close()


def start_pamd(setup: Setup, home: Path) -> Path:
    sock = setup.work / "run" / "pamd.sock"
    log = (setup.work / "pamd.log").open("wb")
    setup.pamd = subprocess.Popen([str(UNIFIED_MFA), "pamd", "--home", str(home), "--socket",
                                   str(sock)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + STEP_TIMEOUT
    while not sock.exists():
        if setup.pamd.poll() is not None or time.monotonic() > deadline:
            raise Failed("unified-mfa pamd did not start: "
                         + (setup.work / "pamd.log").read_text(errors="replace")[-500:])
        time.sleep(0.05)
    return sock


def add_service(setup: Setup, key: str, second: str | None) -> None:
    name = f"{setup.tag}-{key}"
    path = PAM_D / name
    lines = ["auth     required pam_unix.so"]
    if second:
        lines.append(f"auth     required {second}")
    lines += ["account  required pam_permit.so", "session  required pam_permit.so",
              "password required pam_deny.so"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    setup.pam_files.append(path)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    setup.services[key] = name


# -- measuring --------------------------------------------------------------------------------


def login(service: str, user: User, key: str) -> float:
    """One `pamtester … authenticate`: milliseconds from spawn to exit; it must succeed."""
    given = f"{user.password}\n"
    if key != "unix":
        given += code_now(user.ga_secret if key == "google" else user.our_secret) + "\n"
    start = time.perf_counter()
    result = subprocess.run(["pamtester", service, user.name, "authenticate"], input=given,
                            capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        raise Failed(f"{key}: login of {user.name} refused: {result.stderr.strip()[-300:]}")
    return elapsed


def daemon_login(sock: Path, user: User) -> float:
    """The daemon's share alone: one dialogue over its socket, as the module speaks it, without
    pamtester, libpam or pam_unix. Milliseconds from connecting to the verdict."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(STEP_TIMEOUT)
        conn.connect(str(sock))
        reader = conn.makefile("rb")
        # The opening in one write, as the module sends it (docs/pam-protocol.md).
        conn.sendall(b"".join((p.encode(p.HELLO, p.VERSION), p.encode(p.USER, user.name),
                               p.encode(p.SERVICE, "bench"), p.encode(p.FAILMODE, "secure"),
                               p.encode(p.BEGIN))))
        reader.readline()
        if p.decode(reader.readline()).verb != p.PROMPT:
            raise Failed(f"daemon: no prompt for {user.name}")
        conn.sendall(p.encode(p.ANSWER, code_now(user.our_secret)))
        verdict = p.decode(reader.readline())
        reader.close()
    elapsed = (time.perf_counter() - start) * 1000
    if verdict.verb != p.ACCEPT:
        raise Failed(f"daemon: login of {user.name} not accepted: {verdict}")
    return elapsed


def cpu_ms(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc), in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(setup: Setup, count: int) -> dict[str, list[float]]:
    keys = list(setup.services)
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i, user in enumerate(setup.users):
        order = keys[i % len(keys):] + keys[:i % len(keys)]
        for key in order:
            elapsed = login(setup.services[key], user, key)
            if i >= WARMUP:
                times[key].append(elapsed)
        done = i + 1 - WARMUP
        if done > 0 and done % 50 == 0:
            print(f"  {done}/{count} users", flush=True)
    return times


# -- cleaning up ------------------------------------------------------------------------------


def cleanup(setup: Setup) -> None:
    if setup.pamd is not None and setup.pamd.poll() is None:
        setup.pamd.terminate()
        try:
            setup.pamd.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            setup.pamd.kill()
            setup.pamd.wait(STEP_TIMEOUT)
    for path in setup.pam_files:
        path.unlink(missing_ok=True)
    for user in setup.users:
        subprocess.run(["userdel", "--remove", user.name], capture_output=True, check=False,
                       timeout=STEP_TIMEOUT)
    shutil.rmtree(setup.work, ignore_errors=True)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def bench_setup() -> Iterator[Setup]:
    setup = Setup(f"umfab{secrets.token_hex(2)}", Path(tempfile.mkdtemp(prefix="umfa-bench-")))
    old = signal.signal(signal.SIGTERM, _stop)
    try:
        yield setup
    finally:
        cleanup(setup)
        signal.signal(signal.SIGTERM, old)


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, load {load[0]:.2f} at the end; pamtester "
            f"{package_version('pamtester')}, libpam-google-authenticator "
            f"{package_version('libpam-google-authenticator')}, libpam-modules "
            f"{package_version('libpam-modules')}")


def report(times: dict[str, list[float]], daemon: list[float], cpu: dict[str, float]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'service':<8} {'logins':>6} {'median ms':>10} {'p90 ms':>8} {'added ms':>9}")
    for key, values in times.items():
        added = "" if key == "unix" else f"{med[key] - med['unix']:9.2f}"
        print(f"{key:<8} {len(values):>6} {med[key]:>10.2f} {percentile(values, 0.9):>8.2f} "
              f"{added:>9}")
    ours = med["ours"] - med["unix"]
    google = med["google"] - med["unix"]
    print(f"\nadded over pam_unix (median): ours {ours:.2f} ms, google {google:.2f} ms")
    # The same user's logins run back to back: the median of the per-user differences is less
    # disturbed by load that changes during the run than the difference of the medians.
    paired = {k: statistics.median(a - b for a, b in zip(times[k], times["unix"], strict=True))
              for k in ("ours", "google")}
    print(f"added over pam_unix (median of per-user differences): ours {paired['ours']:.2f} ms, "
          f"google {paired['google']:.2f} ms")
    if google > 0:
        print(f"ratio of the added times ours/google: {ours / google:.2f}")
    print(f"ratio of the whole logins ours/google: {med['ours'] / med['google']:.3f}")
    print(f"the daemon's dialogue alone over its socket (no pamtester, libpam or pam_unix): "
          f"median {statistics.median(daemon):.2f} ms, p90 {percentile(daemon, 0.9):.2f} ms "
          f"({len(daemon)} logins)")
    print("the daemon's CPU per login: " + ", ".join(f"{v:.2f} ms {k}" for k, v in cpu.items()))
    print(f"goal: at most {GOAL_MS:g} ms added over pam_unix: "
          f"{'met' if ours <= GOAL_MS else 'NOT met'} ({ours:.2f} ms)")
    print(f"machine: {machine()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200,
                        help="measured logins per service, one user each (default 200)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("pam_latency: needs root (Linux users, /etc/pam.d files)", file=sys.stderr)
        return 1
    if args.users < 10:
        print("pam_latency: --users must be at least 10", file=sys.stderr)
        return 1
    try:
        ensure_google_authenticator()
        if not shutil.which("pamtester"):
            raise Failed("pamtester is not installed (Debian package pamtester)")
        with bench_setup() as setup:
            build = setup.work / "build"
            run(["make", "-C", str(ROOT / "pam_unified_mfa" / "pam"), f"OUT={build}"])
            print(f"adding {args.users + WARMUP} users …", flush=True)
            add_users(setup, args.users + WARMUP)
            home = setup.work / "home"
            run([str(UNIFIED_MFA), "init", "--home", str(home)])
            enroll_users(home, setup.users)
            # Store-only users for the daemon's share (one login each, S01): no Linux account.
            direct = [User(f"{setup.tag}d{i:04d}", "", "") for i in range(args.users + WARMUP)]
            enroll_users(home, direct)
            sock = start_pamd(setup, home)
            add_service(setup, "unix", None)
            add_service(setup, "google", "pam_google_authenticator.so")
            add_service(setup, "ours", f"{build / 'pam_unified_mfa.so'} socket={sock}")
            print(f"measuring {args.users} logins per service (after {WARMUP} warm-up) …",
                  flush=True)
            assert setup.pamd is not None
            # The daemon's CPU per login, with pamtester and pam_unix around it and alone: the
            # difference is what the other processes' use of the CPU caches costs it.
            before = cpu_ms(setup.pamd.pid)
            times = measure(setup, args.users)
            cpu = {"in the pamtester logins": (cpu_ms(setup.pamd.pid) - before)
                   / (args.users + WARMUP)}
            before = cpu_ms(setup.pamd.pid)
            daemon = [daemon_login(sock, user) for user in direct][WARMUP:]
            cpu["alone"] = (cpu_ms(setup.pamd.pid) - before) / (args.users + WARMUP)
        report(times, daemon, cpu)
    except Failed as exc:
        print(f"pam_latency: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pam_latency: interrupted; cleaned up", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
