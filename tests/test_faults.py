"""Faults a site lives through: PostgreSQL restarted under load, a node killed while a login
waits on a push. Nothing committed is lost, nothing is accepted twice, nothing fails open.

Each test has its own cluster (tests/multinode.py): two service and two RADIUS nodes on the
test PostgreSQL, which the first test restarts for real (`pg_ctl restart`). The PAM daemon
killed and started again is in tests/test_pam_login.py.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import now_code
from tests.multinode import (
    RADIUS_SECRET,
    Cluster,
    append,
    autopush,
    datagram,
    node_settings,
    postgres_is_back,
    push_approved_across_nodes,
    push_user,
    restart_postgres,
    running_cluster,
    totp_user,
)
from tests.test_authenticator import _pending_push
from tests.test_radius import radclient

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

RECOVERY = 60.0  # seconds a node may take to find the restarted database again


class Load:
    """Logins that never carry a valid code, from threads, against every node until stopped:
    whatever a node answers while its database is gone, it must never be an accept."""

    def __init__(self, cluster: Cluster, users: list[str]) -> None:
        self.cluster = cluster
        self.users = users
        self.answers: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._api, args=(i,)) for i in (0, 1)] + [
            threading.Thread(target=self._radius, args=(i,)) for i in (0, 1)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _api(self, node: int) -> None:
        while not self._stop.is_set():
            for user in self.users:
                try:
                    begun = self.cluster.auth(node, "begin", user=user)
                except requests.RequestException as exc:
                    self.errors.append(type(exc).__name__)
                    continue
                self.answers.append(f"{begun['http_status']} {begun.get('outcome')} "
                                    f"{begun.get('allowed')} {begun.get('detail', '')}")

    def _radius(self, node: int) -> None:
        while not self._stop.is_set():
            for user in self.users:
                answer = radclient(self.cluster.radius[node],
                                   {"User-Name": user, "User-Password": "pw"},
                                   secret=RADIUS_SECRET, timeout=2)
                self.answers.append(answer.code)


def test_postgresql_restarted_under_load_fails_closed_and_loses_nothing(
        tmp_path: Path) -> None:
    with running_cluster(tmp_path, node_settings()) as cluster:
        users = [totp_user(cluster) for _ in range(3)]
        (spent_user, spent_secret), (user, secret) = users[0], users[1]
        spent = now_code(cluster.core, spent_secret, 1)
        assert append(cluster, 0, spent_user, spent).code == "Access-Accept"
        with Load(cluster, [name for name, _ in users]) as load:
            time.sleep(1.0)  # the load is running
            restart_postgres()
            postgres_is_back(cluster.store_url)
            time.sleep(1.0)
        during = load.answers
        assert during, load.errors
        assert not any("accept" in answer.lower() for answer in during)
        failed = [a for a in during if a.startswith("503")]
        assert all("unavailable" in a for a in failed), failed
        # Every node reconnects by itself: a login through each works again.
        for node in (0, 1):
            assert _eventually(lambda node=node: begins(cluster, node, user))  # type: ignore[misc]
            assert _eventually(lambda node=node: radclient(  # type: ignore[misc]
                cluster.radius[node], {"User-Name": user, "User-Password": "pw"},
                secret=RADIUS_SECRET).code == "Access-Challenge")
        # Committed before the restart, still there: the spent code stays spent (S01) ...
        assert append(cluster, 1, spent_user, spent).code == "Access-Reject"
        # ... and the users' factors work.
        assert append(cluster, 1, user, now_code(cluster.core, secret, 1)).code == "Access-Accept"


def test_after_a_postgresql_restart_a_push_still_crosses_nodes(tmp_path: Path) -> None:
    with running_cluster(tmp_path, node_settings()) as cluster:
        user, app = push_user(cluster, tmp_path)
        restart_postgres()
        postgres_is_back(cluster.store_url)
        assert _eventually(lambda: begins(cluster, 1, user))
        assert push_approved_across_nodes(cluster, user, app)["outcome"] == "accept"
        assert "listening again" in cluster.log_text("service-1")


def test_a_radius_node_killed_mid_push_fails_closed_and_its_resend_never_pushes_twice(
        tmp_path: Path) -> None:
    with running_cluster(tmp_path, node_settings(push_timeout="6s")) as cluster:
        user, app = push_user(cluster, tmp_path)
        number, state = autopush(cluster, 0, user)
        sent = datagram(user, "", bytes.fromhex(state[2:]))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.3", 0))
            sock.sendto(sent, ("127.0.0.1", cluster.radius[0]))
            push = _pending_push(app, number)
            cluster.kill("radius-0")  # the login was held there
            sock.sendto(sent, ("127.0.0.1", cluster.radius[1]))  # the gateway fails over
            app.ok("approve", push["id"], "--number", number)
            # The copy waits for the dead node's reply until its claim runs out (push
            # timeout + margin), then sends nothing: the gateway reports a failure.
            sock.settimeout(20)
            with pytest.raises(TimeoutError):
                sock.recv(4096)
        assert len(app.json("pending")) == 0
        assert sum(1 for r in cluster.core.audit_tail(50)
                   if r.subject == user and r.action == "mfa.push" and r.outcome == "sent") == 1


def test_a_service_node_killed_mid_push_lets_the_login_complete_on_another(
        tmp_path: Path) -> None:
    with running_cluster(tmp_path, node_settings()) as cluster:
        user, app = push_user(cluster, tmp_path)
        begun = cluster.auth(1, "begin", user=user)
        pushed = cluster.auth(1, "answer", token=begun["token"], answer="push")
        failed: list[str] = []

        def wait_on_node_1() -> None:
            try:
                cluster.auth(1, "wait", token=pushed["token"], timeout=60)
            except requests.RequestException as exc:
                failed.append(type(exc).__name__)

        waiting = threading.Thread(target=wait_on_node_1)
        waiting.start()
        push = _pending_push(app, pushed["push_number"])
        cluster.kill("service-1")
        waiting.join(30)
        assert failed  # the caller saw the node die, not an answer
        app.ok("approve", push["id"], "--number", pushed["push_number"])
        resumed = cluster.auth(0, "wait", token=pushed["token"], timeout=30)
        assert resumed["outcome"] == "accept"
        again = cluster.auth(0, "wait", token=pushed["token"], timeout=1)
        assert again.get("outcome") != "accept"  # the login completed once


def begins(cluster: Cluster, node: int, user: str) -> bool:
    """Whether a login starts normally on service node `node` (its store answers)."""
    return cluster.auth(node, "begin", user=user).get("outcome") == "prompt"


def _eventually(check: Any, within: float = RECOVERY) -> bool:
    """Whether `check()` turns true within `within` seconds of the database coming back."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (requests.RequestException, KeyError):
            pass
        time.sleep(0.5)  # waiting for real processes to reconnect
    return False

