"""Several nodes on one PostgreSQL, as a larger site runs them: two `unified-mfa serve` and
two `unified-mfa radius` processes on 127.0.0.1, sharing the settings and key file (copied to
each node in a real deployment, packaging/multinode/) and the test PostgreSQL.

The test PostgreSQL is the one `scripts/test` starts; it exports where the cluster lives so
that fault tests can restart it (`restart_postgres`).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pyrad import packet

from pam_unified_mfa.core import MFA, RequestContext
from pam_unified_mfa.home import init_home
from pam_unified_mfa.settings import SETTINGS_FILE
from radius.server import load_dictionary
from tests.conftest import fresh_postgres
from tests.helpers import free_port, now_code, secret_of, stop_process
from tests.test_authenticator import SERVER, App, Service, _pending_push, _wait_until_healthy
from tests.test_radius import Answer, radclient

RADIUS_SECRET = "multinode-secret"


def node_settings(push_timeout: str = "20s") -> str:
    """Gateways of every mode; the first factor is the gateway's own (`none`). The throttle
    is the default: 5 failures lock a user for 5 minutes."""
    return f"""
[push]
timeout = "{push_timeout}"
max_per_window = 50

[radius]
first_factor = "none"

[[radius.clients]]
name = "challenge-gw"
address = "127.0.0.1"
secret = "{RADIUS_SECRET}"

[[radius.clients]]
name = "append-gw"
address = "127.0.0.2"
secret = "{RADIUS_SECRET}"
mode = "append"

[[radius.clients]]
name = "autopush-gw"
address = "127.0.0.3"
secret = "{RADIUS_SECRET}"
mode = "autopush"
"""


@dataclass
class Node:
    name: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    home: Path
    store_url: str
    core: MFA
    services: list[str]
    radius: list[int]
    nodes: dict[str, Node] = field(default_factory=dict)
    client_header: dict[str, str] = field(default_factory=dict)

    def service(self, index: int) -> Service:
        """The admin CLI and the enrollment path through service node `index`."""
        node = self.nodes[f"service-{index}"]
        assert node.process is not None
        return Service(self.home, self.services[index], node.process)  # type: ignore[arg-type]

    def auth(self, index: int, path: str, **body: Any) -> dict[str, Any]:
        """One call of the auth API on service node `index`; the JSON body or the error."""
        response = requests.post(f"{self.services[index]}/v1/auth/{path}", json=body,
                                 headers=self.client_header, timeout=60)
        data: dict[str, Any] = response.json()
        data["http_status"] = response.status_code
        return data

    def kill(self, name: str) -> None:
        """SIGKILL: the node dies mid-work, as in a power cut."""
        process = self.nodes[name].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def log_text(self, name: str) -> str:
        return self.nodes[name].log.read_text(errors="replace")


def _start(node: Node, env: dict[str, str]) -> None:
    with node.log.open("ab") as sink:
        node.process = subprocess.Popen(node.command, env=env, stdout=sink, stderr=sink,
                                        stdin=subprocess.DEVNULL)


def _wait_for_radius(node: Node, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert node.process is not None
        if node.process.poll() is not None:
            pytest.fail(f"{node.name} exited: {node.log.read_text(errors='replace')[-2000:]}")
        if f"radius listening on udp 127.0.0.1:{port}" in node.log.read_text(errors="replace"):
            return
        time.sleep(0.1)  # waiting for a real process to bind its port
    pytest.fail(f"{node.name} did not start: {node.log.read_text(errors='replace')[-2000:]}")


@contextmanager
def running_cluster(tmp_path: Path, settings: str) -> Iterator[Cluster]:
    """Two service nodes and two RADIUS nodes on a freshly emptied test PostgreSQL.
    Enrollment QR codes point at service node 0 (its URL is the public URL)."""
    url = fresh_postgres()
    ports = [free_port(), free_port()]
    services = [f"http://127.0.0.1:{port}" for port in ports]
    home = tmp_path / "node-home"
    init_home(home, services[0], url)
    with (home / SETTINGS_FILE).open("a", encoding="utf-8") as handle:
        handle.write("\n" + settings + "\n")
    env = {**os.environ, "UNIFIED_MFA_HOME": str(home)}
    core = MFA.open(home)
    radius_ports = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
    cluster = Cluster(home, url, core, services, radius_ports)
    for index, port in enumerate(ports):
        cluster.nodes[f"service-{index}"] = Node(
            f"service-{index}", [str(SERVER), "serve", "--listen", f"127.0.0.1:{port}"],
            tmp_path / f"service-{index}.log")
    for index, port in enumerate(radius_ports):
        cluster.nodes[f"radius-{index}"] = Node(
            f"radius-{index}",
            [sys.executable, "-m", "pam_unified_mfa.cli.main", "radius", "--listen",
             f"127.0.0.1:{port}"], tmp_path / f"radius-{index}.log")
    secret = core.add_client("multinode-test")
    assert secret is not None
    token = base64.b64encode(f"multinode-test:{secret}".encode()).decode()
    cluster.client_header = {"Authorization": f"Basic {token}"}
    with ExitStack() as stack:
        stack.callback(core.close)
        for node in cluster.nodes.values():
            _start(node, env)
            stack.callback(_stop, node)
        for name in cluster.nodes:
            wait_until_up(cluster, name)
        yield cluster


def wait_until_up(cluster: Cluster, name: str) -> None:
    node = cluster.nodes[name]
    kind, index = name.split("-")
    if kind == "service":
        _wait_until_healthy(cluster.service(int(index)), node.log)
    else:
        _wait_for_radius(node, cluster.radius[int(index)])


def restart_node(cluster: Cluster, name: str) -> None:
    node = cluster.nodes[name]
    _start(node, {**os.environ, "UNIFIED_MFA_HOME": str(cluster.home)})
    wait_until_up(cluster, name)


def _stop(node: Node) -> None:
    if node.process is not None and node.process.poll() is None:
        stop_process(node.process)


def restart_postgres(mode: str = "fast") -> None:
    """Restart the test PostgreSQL that `scripts/test` started (its data directory and
    binaries are in the environment); every connection to it is cut."""
    data, binaries = (os.environ.get("UNIFIED_MFA_TEST_PG_DATA"),
                      os.environ.get("UNIFIED_MFA_TEST_PG_BIN"))
    if not data or not binaries:
        pytest.fail("UNIFIED_MFA_TEST_PG_DATA/_BIN are not set: run the suite with ./scripts/test")
    command = [f"{binaries}/pg_ctl", "-D", data, "-m", mode, "-w", "-t", "60", "restart"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    log = Path(data).parent / "postgres.log"
    subprocess.run([*command, "-l", str(log)], check=True, capture_output=True, timeout=90)


def postgres_is_back(store_url: str) -> None:
    """Block until the restarted PostgreSQL accepts connections again."""
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(store_url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # waiting for a real server to accept connections


_users = iter(range(1000))


def totp_user(cluster: Cluster) -> tuple[str, str]:
    """A new user with a confirmed TOTP; the confirming code is this step's."""
    name = f"user{next(_users)}"
    cluster.core.add_user(name)
    secret = secret_of(cluster.core.enroll(name, "totp").uri)
    assert cluster.core.authenticate_code(name, now_code(cluster.core, secret),
                                          RequestContext()).granted
    return name, secret


def push_user(cluster: Cluster, tmp_path: Path) -> tuple[str, App]:
    """A new user whose push device is the reference authenticator, enrolled through node 0."""
    name = f"pusher{next(_users)}"
    app = App(tmp_path / name)
    cluster.service(0).enroll(app, name, tmp_path, "push")
    return name, app


def append(cluster: Cluster, node: int, user: str, code: str) -> Answer:
    return radclient(cluster.radius[node], {"User-Name": user, "User-Password": f"pw,{code}"},
                     source="127.0.0.2", secret=RADIUS_SECRET)


def datagram(user: str, password: str, state: bytes | None = None) -> bytes:
    """One Access-Request as a gateway encodes it, to send unchanged to several nodes."""
    request = packet.AuthPacket(secret=RADIUS_SECRET.encode(), dict=load_dictionary(),
                                User_Name=user)
    request["User-Password"] = request.PwCrypt(password)
    if state is not None:
        request["State"] = state
    request.add_message_authenticator()
    encoded: bytes = request.RequestPacket()
    return encoded


def api_login(cluster: Cluster, node: int, user: str, code: str) -> str:
    """begin + answer through the auth API of a service node: the final outcome."""
    begun = cluster.auth(node, "begin", user=user)
    if begun.get("token") is None:
        return str(begun["outcome"])
    return str(cluster.auth(node, "answer", token=begun["token"], answer=code)["outcome"])


def autopush(cluster: Cluster, node: int, user: str) -> tuple[str, str]:
    """The gateway's first request: the push goes out and the number comes back in a
    challenge; its State is what the gateway then holds a request on."""
    first = radclient(cluster.radius[node], {"User-Name": user, "User-Password": "checked"},
                      source="127.0.0.3", secret=RADIUS_SECRET)
    assert first.code == "Access-Challenge"
    number = re.search(r"choosing (\d+)", first.attributes["Reply-Message"])
    assert number is not None
    return number.group(1), first.attributes["State"]


def push_approved_across_nodes(cluster: Cluster, user: str, app: App) -> dict[str, Any]:
    """A push login begun and waited for on service node 1, approved by the user's app
    through node 0: what node 1's wait answered."""
    begun = cluster.auth(1, "begin", user=user)
    pushed = cluster.auth(1, "answer", token=begun["token"], answer="push")
    assert pushed["outcome"] == "push_pending"
    waited: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: waited.append(
        cluster.auth(1, "wait", token=pushed["token"], timeout=60)))
    waiting.start()
    push = _pending_push(app, pushed["push_number"])
    app.ok("approve", push["id"], "--number", pushed["push_number"])
    waiting.join(60)
    assert waited, "node 1's wait did not return"
    return waited[0]
