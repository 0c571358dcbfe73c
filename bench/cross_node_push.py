"""How soon a push approved through one node releases the login waiting on another.

Two `unified-mfa serve` nodes share one store. Each login begins on node B and waits there
(`POST /v1/auth/wait`); its device approves through node A (`POST /v1/device/pushes/{id}`);
the figure is the time from sending the approval to A until B's wait returns `accept` (and,
beside it, the approval request alone: B may be released before A's answer arrives). Both
stores in the same run, the same logins one after the other:

- **PostgreSQL** (a throwaway local cluster, as bench/core_totp.py starts one): the approving
  transaction sends a notification that B's listening connection receives at commit
  (LISTEN/NOTIFY, docs/architecture.md);
- **SQLite**, the two nodes as two processes on one file: B learns of A's decision at its next
  sweep (every 2 s), the peer the notifications replace.

Nothing is asserted about speed: the bench exits with status 1 only when a login is not
accepted or a node does not start.

Usage:
    .venv/bin/python bench/cross_node_push.py [--logins 60] [--users 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from core_totp import local_postgres
from push_pending import (
    SETTINGS_EXTRA,
    BenchFailure,
    Login,
    api_client,
    approve,
    call,
    client_address,
    console_script,
    free_port,
    latency_lines,
    machine,
    percentile,
    setup,
    start_login,
    wait_decision,
)

NOTIFY_GOAL_MS = 100.0  # "within milliseconds": what the PostgreSQL figure is read against


class Node:
    """`unified-mfa serve` on the shared home, on its own port."""

    def __init__(self, home: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"serve-{name}.log"
        with open(self.log, "wb") as sink:
            self.process = subprocess.Popen(
                [console_script("unified-mfa"), "--home", str(home), "serve", "--listen",
                 f"127.0.0.1:{self.port}"], stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchFailure(f"a node exited: {self.log.read_text(errors='replace')[-800:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchFailure("a node did not become healthy")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def two_nodes(home: Path) -> Iterator[tuple[Node, Node]]:
    nodes = (Node(home, "a"), Node(home, "b"))
    try:
        for node in nodes:
            node.wait_healthy()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def make_home(work: Path, store: str | None) -> Path:
    home = work / "home"
    command = [console_script("unified-mfa"), "init", "--home", str(home)]
    if store:
        command += ["--store", store]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=60)
    with open(home / "unified-mfa.toml", "a") as settings:
        settings.write(SETTINGS_EXTRA)
    return home


async def one_login(a: Node, b: Node, auth: str, login: Login) -> None:
    """Begin and wait on B; approve through A once B holds the wait."""
    async with api_client(b.url, auth, 4) as on_b, api_client(a.url, None, 4) as on_a:
        await start_login(on_b, login)
        waiting = asyncio.ensure_future(wait_decision(on_b, login))
        device = login.device
        while not login.push_id:
            listed = await call(on_a, "GET", "/v1/device/pushes", "device pushes", headers={
                "Authorization": f"Bearer {device.bearer()}"})
            login.push_id = next((p["id"] for p in listed["pushes"]
                                  if p["client"] == login.address), "")
        await asyncio.sleep(0.2)  # B's wait is registered: not a measured interval
        await approve(on_a, login)
        await asyncio.wait_for(waiting, 60)


def run_store(label: str, store: str | None, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="unified-mfa-bench-xnode.") as work:
        home = make_home(Path(work), store)
        devices, auth = setup(home, args.users)
        logins = [Login(i, devices[i % len(devices)], client_address(i))
                  for i in range(args.logins)]
        with two_nodes(home) as (a, b):
            for login in logins:
                asyncio.run(one_login(a, b, auth, login))
        for line in latency_lines(f"{label}, approved through node A, waiting on node B",
                                  logins):
            print(line)
        return [(login.decided - login.sent) * 1000 for login in logins]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    for line in machine():
        print(line)
    try:
        with local_postgres() as url:
            notify = run_store("PostgreSQL, LISTEN/NOTIFY", url, args)
        sweep = run_store("SQLite, two processes on one file (the sweep)", None, args)
    except BenchFailure as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    p50, p99 = percentile(notify, 50), percentile(notify, 99)  # approval sent -> accept
    print(f"p50: SQLite's sweep {percentile(sweep, 50):,.1f} ms = "
          f"{percentile(sweep, 50) / p50:,.0f}x PostgreSQL's {p50:,.1f} ms")
    print(f"release within {NOTIFY_GOAL_MS:g} ms on PostgreSQL, p99 {p99:,.1f} ms: "
          f"{'MET' if p99 <= NOTIFY_GOAL_MS else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
