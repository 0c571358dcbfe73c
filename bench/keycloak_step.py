"""Time and CPU that the Unified MFA step adds to a Keycloak login, against Keycloak's own OTP
step on the same realm, in the same run.

What is measured: password-grant logins (`grant_type=password` on the token endpoint, the code
in `otp=`), timed by this process from sending the request to reading the answer. One Keycloak
(the pinned version, `kc.sh start-dev`, as tests/keycloak_env.py sets it up), one realm, three
public clients, each bound (client flow override) to a copy of Keycloak's `direct grant` flow
whose conditional OTP subflow is removed:

- `password`:      username + password only: the baseline;
- `keycloak-otp`:  username + password + Keycloak's `direct-grant-validate-otp` (REQUIRED);
- `unified-mfa`:   username + password + our `unified-mfa-direct-grant` (REQUIRED), which makes
  two signed calls (`begin`, `answer`) to a local `unified-mfa serve` (SQLite store).

A step's added time is its flow's median minus the baseline's, with a 95% bootstrap interval.
Keycloak's step adds so little that its interval may include zero; the ratio of our added time
to its own then has only a lower bound, and the bench prints that. The token request is one
round trip over a kept-alive loopback connection, so what the client sees is the server's work
plus a constant that the differences cancel. CPU per login is read from /proc for Keycloak's
java process and for `unified-mfa serve`, per block of logins of one flow.

Fairness: both steps refuse a code twice (Keycloak's OTP policy "reusable" is off by default;
ours is S01), so every login uses the current step's code of a user who has not logged in with
that flow during this time step; the bench waits for the next step when it runs out of users.
Every user has a password and Keycloak's TOTP credential (Admin REST, a known secret) in
Keycloak and a confirmed TOTP factor in our store (confirmed with the previous step's code).
The flows run in blocks in rotating order, so drift in the machine's load spreads over all
three; warm-up logins (JIT) are not counted. Every measured login must get a token, or the bench
stops with exit status 1, and before the warm-up a wrong code must be refused by both steps,
so that neither flow is timed without its step having run.

By default the realm hashes passwords with one round of PBKDF2-SHA256 instead of Keycloak's
argon2: the argon2 hash (about 60 ms here) is the same in every flow, and its variance would
bury the fraction of a millisecond that Keycloak's step adds; `--password-hash keycloak` keeps
Keycloak's default.

Needs Maven, a JDK 17 and the Keycloak distribution (fetched once into the test cache, see
tests/keycloak_env.py). Keycloak, `unified-mfa serve` and the work directory are removed at
exit, also on Ctrl-C or SIGTERM (`--keep` keeps the directory with both logs).

    .venv/bin/python bench/keycloak_step.py [--logins 600] [--warmup 1000] [--users 800]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pam_unified_mfa import totp  # noqa: E402
from pam_unified_mfa.core import MFA, Outcome, RequestContext  # noqa: E402
from pam_unified_mfa.enrollment_uri import parse_uri  # noqa: E402
from pam_unified_mfa.home import init_home  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.keycloak_env import (  # noqa: E402
    KeycloakAdmin,
    build_provider_jar,
    keycloak_version,
    running_keycloak,
)

UNIFIED_MFA = Path(sys.executable).with_name("unified-mfa")
REALM = "bench"
BRIDGE_CLIENT = "keycloak-bench"
PASSWORD = "correct horse battery staple"  # noqa: S105 - the bench users' password
PARAMS = totp.TotpParams()  # Keycloak's default OTP policy too: HmacSHA1, 6 digits, 30 s
# Flow (and client) name -> the step added after the password; the order of the table.
FLOWS = {"password": None, "keycloak-otp": "direct-grant-validate-otp",
         "unified-mfa": "unified-mfa-direct-grant"}
LABELS = {"password": "password only (baseline)", "keycloak-otp": "+ Keycloak's OTP step",
          "unified-mfa": "+ Unified MFA step"}
HASHES = {"pbkdf2-1": "hashAlgorithm(pbkdf2-sha256) and hashIterations(1)", "keycloak": None}
TIMEOUT = 60.0
T = TypeVar("T")


class Failed(Exception):
    """The bench cannot measure what it claims: stop with exit status 1."""


@dataclass
class User:
    name: str
    keycloak_secret: str  # base32 of the raw secret Keycloak holds
    our_secret: str = ""
    last_step: dict[str, int] = field(default_factory=dict)  # flow -> TOTP step last used


@dataclass(frozen=True)
class Block:
    """The servers' CPU over one block of logins of one flow (CPU is read per block: /proc
    counts 10 ms ticks, too coarse for one login)."""

    keycloak_ms: float
    serve_ms: float
    logins: int


@dataclass
class Samples:
    """One flow's measured logins: wall times and the servers' CPU over its blocks."""

    ms: list[float] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def cpu(self, which: str = "both") -> float:
        """CPU per login, of Keycloak, of serve or of both."""
        return server_cpu(self.blocks, which)


def server_cpu(blocks: Sequence[Block], which: str = "both") -> float:
    keycloak = sum(b.keycloak_ms for b in blocks) if which != "serve" else 0.0
    serve = sum(b.serve_ms for b in blocks) if which != "keycloak" else 0.0
    return (keycloak + serve) / sum(b.logins for b in blocks)


def cpu_ms(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc), in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def java_pid(parent: int) -> int:
    """Keycloak's JVM: the java child of kc.sh, whose pid Popen knows."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(") ", 1)
            if name == "java" and int(rest.split()[1]) == parent:
                return int(stat.parent.name)
    raise Failed(f"no java process under kc.sh ({parent})")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def now_step() -> int:
    return int(time.time() // PARAMS.period)


def added_interval(flow: Sequence[T], base: Sequence[T], stat: Callable[[Sequence[T]], float],
                   rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of stat(flow) - stat(base): how finely this run resolves what a
    step adds, which matters when a step adds less than the noise of a whole login."""
    rng = random.Random(1)  # resampling only: a fixed seed keeps a rerun of the report equal
    diffs = sorted(stat(rng.choices(flow, k=len(flow))) - stat(rng.choices(base, k=len(base)))
                   for _ in range(rounds))
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1]


def ratio_line(what: str, ours: float, ours_low: float, theirs: float,
               interval: tuple[float, float]) -> str:
    """Ours over Keycloak's, bounded by the intervals: Keycloak's share may not differ from
    zero, and then a point ratio would be noise divided by noise."""
    low, high = interval
    if high <= 0:
        return f"{what}: Keycloak's OTP adds nothing that this run can measure"
    return (f"{what}, ours/Keycloak's: at least {ours_low / high:.0f} (the low end of our 95% "
            f"interval over the high end of Keycloak's); " +
            (f"point estimate {ours / theirs:.0f}" if low > 0 else
             "Keycloak's share cannot be told from zero"))


# -- our side: the store and `unified-mfa serve` ------------------------------------------------


def prepare_store(home: Path, url: str, public_pem: str, users: list[User]) -> None:
    """Home, the Keycloak client's key and the users' confirmed TOTP factors, in-process before
    the service starts. The client rate limit is raised: one login makes two bridge calls, and a
    sequential bench must measure the step, not the 429s of `[service] client_rate`."""
    init_home(home, public_url=url)
    with (home / "unified-mfa.toml").open("a", encoding="utf-8") as settings:
        settings.write("\n[service]\nclient_rate = 10000\nclient_burst = 10000\n")
    mfa = MFA.open(home)
    try:
        mfa.add_client(BRIDGE_CLIENT, public_pem)
        ctx = RequestContext(adapter="cli", client="bench")
        for user in users:
            mfa.add_user(user.name)
            secret = parse_uri(mfa.enroll(user.name, "totp").uri).totp_secret
            if secret is None:
                raise Failed("the TOTP enrollment URI carries no secret")
            user.our_secret = secret
            previous = totp.code_at(secret, PARAMS, time.time() - PARAMS.period)
            if mfa.authenticate_code(user.name, previous, ctx).outcome is not Outcome.ACCEPT:
                raise Failed(f"could not confirm the TOTP factor of {user.name}")
    finally:
        mfa.close()


@contextlib.contextmanager
def running_serve(home: Path, url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`unified-mfa serve` on the home's public URL until the block ends."""
    with log.open("wb") as sink:
        process = subprocess.Popen([str(UNIFIED_MFA), "serve", "--home", str(home)],
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise Failed(f"unified-mfa serve did not start: {log.read_text()[-800:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)  # waiting for a real process to bind its port
        yield process
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)


# -- Keycloak's side: realm, flows, clients, users ---------------------------------------------


def prepare_realm(admin: KeycloakAdmin, bridge_url: str, key_pem: str, hashing: str | None,
                  users: list[User]) -> None:
    """The realm, one flow and one client per entry of FLOWS, and the users with a password and
    Keycloak's TOTP credential (its secret is the raw bytes of `secretData.value`)."""
    admin.create_realm(REALM, **({"passwordPolicy": hashing} if hashing else {}))
    step_config = {"bridge-url": bridge_url, "client-id": BRIDGE_CLIENT, "client-key": key_pem,
                   "timeout-seconds": "10", "fail-mode": "secure"}
    for flow, provider in FLOWS.items():
        admin.copy_flow(REALM, "direct grant", flow)
        for execution in admin.executions(REALM, flow):
            if execution.get("requirement") == "CONDITIONAL" and execution["level"] == 0:
                admin.call("DELETE", f"/{REALM}/authentication/executions/{execution['id']}",
                           expect=204)
        if provider is not None:
            ours = provider.startswith("unified-mfa")
            admin.add_step(REALM, flow, flow, provider, flow, step_config if ours else None)
        admin.call("POST", f"/{REALM}/clients", expect=201, json={
            "clientId": flow, "enabled": True, "publicClient": True,
            "standardFlowEnabled": False, "directAccessGrantsEnabled": True,
            "authenticationFlowBindingOverrides": {"direct_grant": admin.flow_id(REALM, flow)}})
    for user in users:
        raw = base64.b32decode(user.keycloak_secret).decode("ascii")
        otp = {"type": "otp", "userLabel": "bench", "secretData": json.dumps({"value": raw}),
               "credentialData": json.dumps({"subType": "totp", "digits": PARAMS.digits,
                                             "period": PARAMS.period, "counter": 0,
                                             "algorithm": "HmacSHA1"})}
        admin.call("POST", f"/{REALM}/users", expect=201, json={
            "username": user.name, "enabled": True, "email": f"{user.name}@example.test",
            "emailVerified": True, "firstName": "Bench", "lastName": "User",
            "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}, otp]})


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Bench:
    token_url: str
    users: list[User]
    http: requests.Session = field(default_factory=requests.Session)
    cursor: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLOWS, 0))
    waits: int = 0

    def next_user(self, flow: str) -> tuple[User, int]:
        """The next user who has not used this flow in the current TOTP step (S01: a code is
        accepted once); waits for the next step when every user has."""
        for _ in range(2):
            step = now_step()
            for _ in range(len(self.users)):
                user = self.users[self.cursor[flow] % len(self.users)]
                self.cursor[flow] += 1
                if user.last_step.get(flow, -1) < step:
                    user.last_step[flow] = step
                    return user, step
            self.waits += 1
            time.sleep((step + 1) * PARAMS.period - time.time() + 0.05)
        raise Failed("no user free after waiting a whole TOTP step")

    def login(self, flow: str) -> float:
        """One password grant through `flow`'s client: milliseconds; it must get a token."""
        user, step = self.next_user(flow)
        data = {"grant_type": "password", "client_id": flow, "username": user.name,
                "password": PASSWORD}
        if flow != "password":
            secret = user.our_secret if flow == "unified-mfa" else user.keycloak_secret
            data["otp"] = totp.code_at(secret, PARAMS, step * PARAMS.period)
        start = time.perf_counter()
        reply = self.http.post(self.token_url, data=data, timeout=TIMEOUT)
        elapsed = (time.perf_counter() - start) * 1000
        if reply.status_code != 200:
            raise Failed(f"{flow}: login of {user.name} refused: {reply.status_code} "
                         f"{reply.text[:300]}")
        return elapsed

    def check_refusals(self) -> None:
        """A wrong code must be refused by both steps: a flow that skipped its step would
        otherwise be timed as if it had run it."""
        user = self.users[0]
        for flow, secret in (("keycloak-otp", user.keycloak_secret),
                             ("unified-mfa", user.our_secret)):
            valid = {totp.code_at(secret, PARAMS, time.time() + k * PARAMS.period)
                     for k in range(-2, 3)}
            wrong = next(c for c in ("000000", "111111", "222222") if c not in valid)
            reply = self.http.post(self.token_url, timeout=TIMEOUT, data={
                "grant_type": "password", "client_id": flow, "username": user.name,
                "password": PASSWORD, "otp": wrong})
            if reply.status_code != 401:
                raise Failed(f"{flow}: a wrong code got {reply.status_code}, not 401")

    def run(self, logins: int, block: int, pids: dict[str, int],
            record: bool) -> dict[str, Samples]:
        """`logins` per flow in blocks of `block`, the flows' order rotating block by block."""
        samples = {flow: Samples() for flow in FLOWS}
        keys = list(FLOWS)
        for round_no in range((logins + block - 1) // block):
            for flow in keys[round_no % 3:] + keys[:round_no % 3]:
                count = min(block, logins - round_no * block)
                before = {k: cpu_ms(pid) for k, pid in pids.items()}
                times = [self.login(flow) for _ in range(count)]
                if record:
                    got = samples[flow]
                    got.ms += times
                    got.blocks.append(Block(cpu_ms(pids["keycloak"]) - before["keycloak"],
                                            cpu_ms(pids["serve"]) - before["serve"], count))
        return samples


# -- report -------------------------------------------------------------------------------------


def machine(load_before: tuple[float, ...]) -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, {java.stderr.splitlines()[0] if java.stderr else '?'}; "
            f"Keycloak {keycloak_version()}; load average {load_before[0]:.2f} before, "
            f"{load[0]:.2f} after")


def report(samples: dict[str, Samples], args: argparse.Namespace, waits: int) -> None:
    med = {k: statistics.median(s.ms) for k, s in samples.items()}
    base = samples["password"]
    span = {k: added_interval(s.ms, base.ms, statistics.median) for k, s in samples.items()}
    cpu_span = {k: added_interval(s.blocks, base.blocks, server_cpu) for k, s in samples.items()}
    print(f"\n{'flow':<26} {'logins':>6} {'median ms':>9} {'p90 ms':>7} {'added ms':>8} "
          f"{'95% interval':>14} {'Keycloak CPU ms':>15} {'serve CPU ms':>12}")
    for key, got in samples.items():
        added, low_high = "", ""
        if key != "password":
            added = f"{med[key] - med['password']:.2f}"
            low_high = f"{span[key][0]:.2f} to {span[key][1]:.2f}"
        print(f"{LABELS[key]:<26} {len(got.ms):>6} {med[key]:>9.2f} "
              f"{percentile(got.ms, 0.9):>7.2f} {added:>8} {low_high:>14} "
              f"{got.cpu('keycloak'):>15.2f} {got.cpu('serve'):>12.2f}")
    ours, builtin = (med[k] - med["password"] for k in ("unified-mfa", "keycloak-otp"))
    print(f"\nadded over the password-only flow (difference of medians): ours {ours:.2f} ms, "
          f"Keycloak's OTP {builtin:.2f} ms")
    print(ratio_line("added time", ours, span["unified-mfa"][0], builtin, span["keycloak-otp"]))
    mine, theirs = (samples[k].cpu() - base.cpu() for k in ("unified-mfa", "keycloak-otp"))
    low, high = cpu_span["keycloak-otp"]
    print(f"server CPU added per login (Keycloak + serve): ours {mine:.2f} ms (Keycloak "
          f"{samples['unified-mfa'].cpu('keycloak') - base.cpu('keycloak'):.2f} + serve "
          f"{samples['unified-mfa'].cpu('serve'):.2f}), 95% {cpu_span['unified-mfa'][0]:.2f} "
          f"to {cpu_span['unified-mfa'][1]:.2f}; Keycloak's OTP {theirs:.2f} ms, 95% "
          f"{low:.2f} to {high:.2f}")
    print(ratio_line("server CPU added", mine, cpu_span["unified-mfa"][0], theirs, (low, high)))
    whole = med["unified-mfa"] / med["keycloak-otp"]
    print(f"whole login, ours/Keycloak's OTP (median): {whole:.3f}")
    print(f"{args.logins} logins per flow after {args.warmup} warm-up, blocks of {args.block}, "
          f"{args.users} users, password hash: {args.password_hash}; waits for a fresh TOTP "
          f"step: {waits}")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def measure(args: argparse.Namespace, work: Path) -> None:
    tag = f"b{secrets.token_hex(2)}"
    users = [User(f"{tag}-{i:05d}", base64.b32encode(secrets.token_hex(10).encode()).decode())
             for i in range(args.users)]
    key = ec.generate_private_key(ec.SECP256R1())
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    print(f"enrolling {len(users)} users in our store …", flush=True)
    prepare_store(work / "home", url, key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(), users)
    print("building the provider JAR and starting Keycloak …", flush=True)
    jar = build_provider_jar(work / "dist")
    with running_keycloak(work, jar) as keycloak, \
            running_serve(work / "home", url, work / "serve.log") as serve:
        print(f"Keycloak up in {keycloak.started_in:.0f} s; creating the realm and "
              f"{len(users)} users …", flush=True)
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        prepare_realm(keycloak.admin, url, pem, HASHES[args.password_hash], users)
        bench = Bench(f"{keycloak.url}/realms/{REALM}/protocol/openid-connect/token", users)
        pids = {"keycloak": java_pid(keycloak.process.pid), "serve": serve.pid}
        print(f"set up in {time.monotonic() - started:.0f} s; warming up with {args.warmup} "
              f"logins per flow …", flush=True)
        bench.check_refusals()
        bench.run(args.warmup, args.block, pids, record=False)
        load = os.getloadavg()
        print(f"measuring {args.logins} logins per flow …", flush=True)
        samples = bench.run(args.logins, args.block, pids, record=True)
    report(samples, args, bench.waits)
    print(f"machine: {machine(load)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=600, help="measured logins per flow")
    parser.add_argument("--warmup", type=int, default=1000, help="uncounted logins per flow")
    parser.add_argument("--users", type=int, default=800, help="users (one code each per step)")
    parser.add_argument("--block", type=int, default=10, help="logins of one flow in a row")
    parser.add_argument("--password-hash", choices=list(HASHES), default="pbkdf2-1",
                        help="the realm's password hashing (keycloak: its argon2 default)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="umfa-kc-bench-"))
    old = signal.signal(signal.SIGTERM, _stop)
    try:
        measure(args, work)
    except (Failed, AssertionError, pytest.fail.Exception, requests.RequestException) as exc:
        print(f"keycloak_step: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("keycloak_step: interrupted; cleaned up", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
