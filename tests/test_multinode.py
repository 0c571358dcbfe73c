"""Two service nodes and two RADIUS nodes on one PostgreSQL: a gateway or a device may reach any
node, and the rules hold as if there were one.

Pushes are approved by the reference authenticator through service node 0 (the public URL);
logins wait on other nodes. On PostgreSQL a node has no polling loop for decisions made
elsewhere: it is woken by LISTEN/NOTIFY, so a release before the push's expiry proves it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrad import packet

from tests.helpers import now_code, wrong_code
from tests.multinode import (
    RADIUS_SECRET,
    Cluster,
    api_login,
    append,
    autopush,
    datagram,
    node_settings,
    push_approved_across_nodes,
    push_user,
    running_cluster,
    totp_user,
)
from tests.test_authenticator import _pending_push
from tests.test_radius import Answer, radclient

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("multinode"), node_settings()) as running:
        yield running


# -- cross-node push ------------------------------------------------------------------------------


def test_a_push_approved_through_node_a_releases_the_login_waiting_on_node_b(
        cluster: Cluster, tmp_path: Path) -> None:
    user, app = push_user(cluster, tmp_path)
    assert push_approved_across_nodes(cluster, user, app)["outcome"] == "accept"


def test_a_radius_login_held_on_one_node_is_released_by_an_approval_through_another(
        cluster: Cluster, tmp_path: Path) -> None:
    user, app = push_user(cluster, tmp_path)
    number, state = autopush(cluster, 0, user)
    held: list[Answer] = []
    waiting = threading.Thread(target=lambda: held.append(radclient(
        cluster.radius[1], {"User-Name": user, "State": state},
        source="127.0.0.3", secret=RADIUS_SECRET, timeout=40)))
    waiting.start()
    push = _pending_push(app, number)
    app.ok("approve", push["id"], "--number", number)
    waiting.join(60)
    assert held and held[0].code == "Access-Accept"


# -- S01 and S02 across nodes ---------------------------------------------------------------------


def test_s01_a_code_accepted_on_one_node_is_refused_on_every_other(cluster: Cluster) -> None:
    user, secret = totp_user(cluster)
    code = now_code(cluster.core, secret, 1)
    assert append(cluster, 0, user, code).code == "Access-Accept"
    assert append(cluster, 1, user, code).code == "Access-Reject"
    for node in (0, 1):
        assert api_login(cluster, node, user, code) != "accept"


def test_s02_a_brute_force_spread_over_nodes_and_adapters_meets_one_lock(
        cluster: Cluster) -> None:
    user, secret = totp_user(cluster)
    wrong = wrong_code(cluster.core, secret)
    attempts = [lambda: append(cluster, 0, user, wrong), lambda: append(cluster, 1, user, wrong)]
    for node in (0, 1):
        attempts.append(lambda node=node: api_login(cluster, node, user, wrong))  # type: ignore[misc]
    for attempt in (attempts * 2)[:5]:  # max_failures = 5, spread over four doors
        attempt()
    right = now_code(cluster.core, secret, 1)
    assert append(cluster, 1, user, right).code == "Access-Reject"
    assert api_login(cluster, 0, user, right) == "reject"
    assert any(r.action == "user.locked" for r in cluster.core.audit_tail(50)
               if r.subject == user)


# -- RADIUS States and resends across nodes -------------------------------------------------------


def test_a_state_from_one_node_is_answered_on_another_and_only_once(cluster: Cluster) -> None:
    user, secret = totp_user(cluster)
    first = radclient(cluster.radius[0], {"User-Name": user, "User-Password": "pw"},
                      secret=RADIUS_SECRET)
    assert first.code == "Access-Challenge"
    state = {"State": first.attributes["State"]}
    code = now_code(cluster.core, secret, 1)
    answer = {"User-Name": user, "User-Password": code, **state}
    assert radclient(cluster.radius[1], answer, secret=RADIUS_SECRET).code == "Access-Accept"
    assert radclient(cluster.radius[0], answer, secret=RADIUS_SECRET).code == "Access-Reject"


def test_a_code_request_resent_to_another_node_gets_the_same_accept(cluster: Cluster) -> None:
    user, secret = totp_user(cluster)
    sent = datagram(user, f"pw,{now_code(cluster.core, secret, 1)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(20)
        sock.sendto(sent, ("127.0.0.1", cluster.radius[0]))
        first = sock.recv(4096)
        sock.sendto(sent, ("127.0.0.1", cluster.radius[1]))
        second = sock.recv(4096)
    assert first[0] == packet.AccessAccept
    assert second == first


def test_a_request_resent_to_another_node_during_a_push_sends_one_push_and_the_same_reply(
        cluster: Cluster, tmp_path: Path) -> None:
    user, app = push_user(cluster, tmp_path)
    number, state = autopush(cluster, 0, user)
    sent = datagram(user, "", bytes.fromhex(state[2:]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(40)
        for node in (0, 1, 0):
            sock.sendto(sent, ("127.0.0.1", cluster.radius[node]))
            time.sleep(0.3)
        push = _pending_push(app, number)  # exactly one push is pending
        app.ok("approve", push["id"], "--number", number)
        replies = [sock.recv(4096) for _ in range(3)]
    assert replies[0][0] == packet.AccessAccept
    assert replies[0] == replies[1] == replies[2]
