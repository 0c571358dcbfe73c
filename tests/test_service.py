"""The HTTP service (`unified-mfa serve`, docs/api.md), tested over real HTTP.

Each test starts uvicorn on a free 127.0.0.1 port in a background thread, serving the app built
around a fresh core (SQLite and PostgreSQL, like every core test); one test runs the installed
`serve` command instead. Time is real here because device and client signatures carry it, but
the core's clock can be moved forward (`ShiftedClock`) where a rule needs an expiry. Set-up that
is not the behaviour under test (users, enrollments, a merge) goes through the core; what a test
asserts comes from HTTP. Where a test must know that a request is already waiting, it watches
the service's waiter rather than sleeping.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from pam_unified_mfa.cli.main import skip_unlogged_lookups
from pam_unified_mfa.core import MFA, Outcome, RequestContext
from pam_unified_mfa.enrollment_uri import parse_uri
from pam_unified_mfa.home import init_home
from pam_unified_mfa.service import server
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.service.metrics import Metrics
from pam_unified_mfa.service.waiter import Listener, Waiter
from tests.helpers import Device, code_for, enroll_confirmed, wrong_code

T = TypeVar("T")

TIMEOUT = 30.0  # a request that hangs fails the test instead of blocking the suite
LONG_WAIT = 60  # longer than any test: a wait that returns did so because of the event
LOGIN = {"service": "vpn", "client_address": "10.0.0.7"}  # what an adapter sends at each step


class ShiftedClock:
    """Real time, plus whatever a test moved it forward by."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` in uvicorn on a free loopback port; yields its base URL.

    The socket is bound and listening before uvicorn starts, so the first request simply
    queues until the server accepts it: no start-up polling.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=1)
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        runner.should_exit = True
        thread.join(timeout=15)
        sock.close()


@dataclass
class Service:
    mfa: MFA
    http: httpx.Client
    clock: ShiftedClock
    waiter: Waiter

    def client_auth(self, name: str = "vpn") -> dict[str, str]:
        """Creates an API client and returns its Basic authorization header."""
        secret = self.mfa.add_client(name)
        assert secret is not None
        value = base64.b64encode(f"{name}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {value}"}

    def admin_auth(self, name: str, roles: tuple[str, ...] = ()) -> dict[str, str]:
        self.mfa.add_admin(name, roles=roles)
        return {"Authorization": f"Bearer {self.mfa.issue_admin_token(name)}"}


@pytest.fixture
def svc(home: Path, store_url: str) -> Iterator[Service]:
    clock = ShiftedClock()
    events = ServiceEvents()
    mfa = MFA.open(home, store=store_url, clock=clock, events=events)
    app = create_app(mfa, events)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            yield Service(mfa, http, clock, app.state.runtime.waiter)
    finally:
        mfa.close()


@pytest.fixture
def unified(svc: Service) -> Service:
    """The organisation merged to unified mode, with a user alice (set up through the core)."""
    svc.mfa.add_admin("root", roles=("billing",))
    svc.mfa.confirm("root", svc.mfa.preview("root", "merge").confirmation)
    svc.mfa.add_user("alice")
    return svc


@contextmanager
def subscribed(svc: Service) -> Iterator[threading.Event]:
    """Set once a request starts waiting in the service (long-poll or auth wait)."""
    seen = threading.Event()
    original = svc.waiter.listen

    def listen(key: str, listener: Listener) -> None:
        seen.set()
        original(key, listener)

    svc.waiter.listen = listen  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del svc.waiter.listen


def in_background(call: Callable[[], T]) -> Future[T]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


class Phone:
    """A minimal Protect app speaking the device API."""

    def __init__(self, svc: Service, uri: str) -> None:
        self.svc = svc
        self.key = Ed25519PrivateKey.generate()
        token = parse_uri(uri).token
        assert token is not None
        self.token = token
        response = svc.http.post("/v1/device/register",
                                 json={"token": token, "public_key": self.pem()})
        assert response.status_code == 200, response.text
        self.device_id: str = response.json()["device_id"]

    def pem(self, key: Ed25519PrivateKey | None = None) -> str:
        return (key or self.key).public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    def auth(self) -> dict[str, str]:
        now = int(self.svc.clock())
        token = jwt.encode({"aud": "unified-mfa-device", "iat": now, "exp": now + 60},
                           self.key, algorithm="EdDSA", headers={"kid": self.device_id})
        return {"Authorization": f"Bearer {token}"}

    def pushes(self, wait: int = 0) -> list[dict[str, Any]]:
        response = self.svc.http.get(f"/v1/device/pushes?wait={wait}", headers=self.auth())
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["pushes"]
        return items

    def signed(self, push_id: str, decision: str, key: Ed25519PrivateKey | None = None,
               **claims: object) -> str:
        body = {"sub": push_id, "decision": decision, "iat": int(self.svc.clock()), **claims}
        return jwt.encode(body, key or self.key, algorithm="EdDSA",
                          headers={"kid": self.device_id})

    def send(self, push_id: str, answer: str) -> httpx.Response:
        return self.svc.http.post(f"/v1/device/pushes/{push_id}", json={"answer": answer},
                                  headers=self.auth())


def enrolled_phone(svc: Service, user: str = "alice") -> tuple[Phone, str]:
    uri = svc.mfa.enroll(user).uri
    return Phone(svc, uri), uri


def push_login(svc: Service, auth: dict[str, str]) -> dict[str, Any]:
    """An adapter's login up to the pending push: begin, then answer `push`."""
    begun = svc.http.post("/v1/auth/begin", headers=auth, json={"user": "alice", **LOGIN})
    assert begun.status_code == 200, begun.text
    pushed = svc.http.post("/v1/auth/answer", headers=auth,
                           json={"token": begun.json()["token"], "answer": "push", **LOGIN})
    step: dict[str, Any] = pushed.json()
    assert step["outcome"] == "push_pending", step
    return step


def wait_for_decision(svc: Service, auth: dict[str, str], token: str) -> dict[str, Any]:
    response = svc.http.post("/v1/auth/wait", headers=auth,
                             json={"token": token, "timeout": LONG_WAIT, **LOGIN})
    assert response.status_code == 200, response.text
    step: dict[str, Any] = response.json()
    return step


def metric(svc: Service, name: str) -> float:
    text = svc.http.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exposed")


# -- health and metrics -----------------------------------------------------------------------


def test_healthz_is_ok_when_the_store_answers(svc: Service) -> None:
    response = svc.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_documentation_pages_are_served(svc: Service, path: str) -> None:
    response = svc.http.get(path)
    assert response.status_code == 200
    assert "/openapi.json" in response.text


@pytest.fixture
def store_gone(tmp_path: Path) -> Iterator[str]:
    """A service whose store is unreachable; yields its base URL."""
    home = tmp_path / "home"
    init_home(home, "https://mfa.example.test", f"sqlite:///{tmp_path / 'store.db'}")
    events = ServiceEvents()
    # Port 1 on loopback: nothing listens there, so every connection is refused.
    gone = MFA.open(home, store="postgresql://mfa@127.0.0.1:1/mfa", migrate=False,
                    events=events)
    try:
        with serving(create_app(gone, events)) as url:
            yield url
    finally:
        gone.close()


def test_healthz_is_503_when_the_store_is_gone(store_gone: str) -> None:
    response = httpx.get(f"{store_gone}/healthz", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})


def test_metrics_expose_the_service_counters(unified: Service) -> None:
    auth = unified.client_auth()
    enrolled_phone(unified)
    push_login(unified, auth)
    assert metric(unified, "unified_mfa_pushes_sent_total") == 1
    assert metric(unified, "unified_mfa_decisions_total") >= 1
    for name in ("unified_mfa_push_not_me_total", "unified_mfa_webhook_failures_total",
                 "unified_mfa_pending_waiters"):
        assert metric(unified, name) == 0


# -- device registration ----------------------------------------------------------------------


def test_r05_one_scan_registers_push_and_the_same_uri_totp_logs_in(unified: Service) -> None:
    _, uri = enrolled_phone(unified)
    factors = {(f["kind"], f["state"]) for f in unified.http.get(
        "/v1/admin/users/alice", headers=unified.admin_auth("ops")).json()["factors"]}
    assert ("protect_push", "active") in factors
    auth = unified.client_auth()
    begun = unified.http.post("/v1/auth/begin", headers=auth, json={"user": "alice"}).json()
    answered = unified.http.post("/v1/auth/answer", headers=auth, json={
        "token": begun["token"], "answer": code_for(unified.mfa, uri)}).json()
    assert answered["outcome"] == "accept"


def test_check_accepts_user_and_code_in_one_call(svc: Service) -> None:
    svc.mfa.add_user("bob")
    uri = enroll_confirmed(svc.mfa, "bob", "totp").uri
    checked = svc.http.post("/v1/auth/check", headers=svc.client_auth(),
                            json={"user": "bob", "code": code_for(svc.mfa, uri)}).json()
    assert checked["outcome"] == "accept" and checked["token"] is None


def test_s01_check_refuses_a_code_already_used(svc: Service) -> None:
    svc.mfa.add_user("bob")
    uri = enroll_confirmed(svc.mfa, "bob", "totp").uri
    auth = svc.client_auth()
    body = {"user": "bob", "code": code_for(svc.mfa, uri)}
    assert svc.http.post("/v1/auth/check", headers=auth, json=body).json()["outcome"] == "accept"
    assert svc.http.post("/v1/auth/check", headers=auth, json=body).json()["outcome"] != "accept"


def test_s06_check_answers_an_unknown_user_as_a_known_one_with_a_wrong_code(
        svc: Service) -> None:
    svc.mfa.add_user("bob")  # with both methods, as the unknown user is shown to have
    uri = enroll_confirmed(svc.mfa, "bob", "totp").uri
    Device(svc.mfa, svc.mfa.enroll("bob", "push").uri)
    auth = svc.client_auth()
    known = svc.http.post("/v1/auth/check", headers=auth,
                          json={"user": "bob", "code": wrong_code(svc.mfa, uri)}).json()
    unknown = svc.http.post("/v1/auth/check", headers=auth,
                            json={"user": "nobody", "code": "123456"}).json()
    assert known["outcome"] == unknown["outcome"] == "prompt"
    assert {k: v for k, v in known.items() if k != "token"} == \
        {k: v for k, v in unknown.items() if k != "token"}


def test_r05_a_used_enrollment_token_is_refused_with_400(unified: Service) -> None:
    phone, _ = enrolled_phone(unified)
    again = unified.http.post("/v1/device/register", json={
        "token": phone.token, "public_key": phone.pem(Ed25519PrivateKey.generate())})
    assert again.status_code == 400
    assert "used or expired" in again.json()["detail"]


def test_r05_an_expired_enrollment_token_is_refused_with_400(unified: Service) -> None:
    uri = unified.mfa.enroll("alice").uri
    unified.clock.advance(unified.mfa.env.seconds(unified.mfa.settings.enrollment.token_ttl) + 1)
    response = unified.http.post("/v1/device/register", json={
        "token": parse_uri(uri).token,
        "public_key": Ed25519PrivateKey.generate().public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()})
    assert response.status_code == 400
    assert "expired" in response.json()["detail"]


def test_device_calls_signed_by_another_key_are_401(unified: Service) -> None:
    phone, _ = enrolled_phone(unified)
    phone.key = Ed25519PrivateKey.generate()
    response = unified.http.get("/v1/device/pushes", headers=phone.auth())
    assert response.status_code == 401


# -- push over HTTP (S03, S04) ----------------------------------------------------------------


def test_long_poll_returns_a_push_created_while_it_waits(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    with subscribed(unified) as waiting:
        poll = in_background(lambda: unified.http.get(
            f"/v1/device/pushes?wait={LONG_WAIT}", headers=phone.auth()))
        assert waiting.wait(TIMEOUT)
        step = push_login(unified, auth)
        pushes = poll.result(TIMEOUT).json()["pushes"]
    assert len(pushes) == 1
    assert step["push_number"] in pushes[0]["choices"]
    assert (pushes[0]["user"], pushes[0]["service"], pushes[0]["client"]) == (
        "alice", "vpn", "10.0.0.7")


def test_s03_an_approval_with_the_right_number_makes_wait_accept(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    with subscribed(unified) as waiting:
        decision = in_background(lambda: unified.http.post(
            "/v1/auth/wait", headers=auth, json={"token": step["token"], "timeout": LONG_WAIT,
                                             **LOGIN}))
        assert waiting.wait(TIMEOUT)
        (push,) = phone.pushes()
        answered = phone.send(push["id"], phone.signed(push["id"], "approve",
                                                       number=step["push_number"]))
        result = decision.result(TIMEOUT).json()
    assert answered.json() == {"status": "approved"}
    assert result["outcome"] == "accept"


@contextmanager
def another_node(svc: Service, home: Path, store_url: str) -> Iterator[MFA]:
    """A second core on the same store, as another node or process: its changes reach this
    service only through the store (no events), so only the service's sweep can see them."""
    other = MFA.open(home, store=store_url, clock=svc.clock)
    try:
        yield other
    finally:
        other.close()


def test_an_approval_made_on_another_node_ends_the_wait(unified: Service, home: Path,
                                                         store_url: str) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    (push,) = phone.pushes()
    with subscribed(unified) as waiting, another_node(unified, home, store_url) as other:
        decision = in_background(lambda: wait_for_decision(unified, auth, step["token"]))
        assert waiting.wait(TIMEOUT)
        other.answer_push(phone.signed(push["id"], "approve", number=step["push_number"]))
        assert decision.result(TIMEOUT)["outcome"] == "accept"


def test_a_push_created_on_another_node_reaches_the_device_long_poll(
        unified: Service, home: Path, store_url: str) -> None:
    phone, _ = enrolled_phone(unified)
    with subscribed(unified) as waiting, another_node(unified, home, store_url) as other:
        poll = in_background(lambda: unified.http.get(
            f"/v1/device/pushes?wait={LONG_WAIT}", headers=phone.auth()))
        assert waiting.wait(TIMEOUT)
        begun = other.begin("alice", RequestContext(adapter="pam", client="10.0.0.9"))
        assert begun.token is not None
        pending = other.answer(begun.token, "push", RequestContext(adapter="pam",
                                                                   client="10.0.0.9"))
        assert pending.outcome is Outcome.PUSH_PENDING
        pushes = poll.result(TIMEOUT).json()["pushes"]
    assert [p["client"] for p in pushes] == ["10.0.0.9"]


def test_s03_a_denied_push_makes_wait_reject(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    (push,) = phone.pushes()
    assert phone.send(push["id"], phone.signed(push["id"], "deny")).json() == {
        "status": "denied"}
    assert wait_for_decision(unified, auth, step["token"])["outcome"] == "reject"


def test_s03_the_wrong_number_rejects_the_login(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    (push,) = phone.pushes()
    wrong = next(c for c in push["choices"] if c != step["push_number"])
    answered = phone.send(push["id"], phone.signed(push["id"], "approve", number=wrong))
    assert answered.json() == {"status": "wrong_number"}
    assert wait_for_decision(unified, auth, step["token"])["outcome"] == "reject"


def test_s03_a_replayed_answer_is_409(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    (push,) = phone.pushes()
    answer = phone.signed(push["id"], "approve", number=step["push_number"])
    assert phone.send(push["id"], answer).status_code == 200
    replay = phone.send(push["id"], answer)
    assert replay.status_code == 409
    assert isinstance(replay.json()["detail"], str)


def test_s03_an_answer_signed_by_another_key_is_401_and_decides_nothing(
        unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    (push,) = phone.pushes()
    forged = phone.signed(push["id"], "approve", key=Ed25519PrivateKey.generate(),
                          number=step["push_number"])
    assert phone.send(push["id"], forged).status_code == 401
    still = unified.http.post("/v1/auth/wait", headers=auth,
                              json={"token": step["token"], "timeout": 0, **LOGIN}).json()
    assert still["outcome"] == "push_pending"


def test_s04_a_not_me_denial_is_counted_and_logged_as_an_alert(
        unified: Service, caplog: pytest.LogCaptureFixture) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    push_login(unified, auth)
    (push,) = phone.pushes()
    with caplog.at_level(logging.WARNING, logger="unified_mfa.service"):
        answered = phone.send(push["id"], phone.signed(push["id"], "deny", not_me=True))
    assert answered.json() == {"status": "denied_not_me"}
    assert metric(unified, "unified_mfa_push_not_me_total") == 1
    assert any("not me" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records if r.name == "unified_mfa.service")


def test_r10_after_a_merge_the_device_gets_its_totp_and_its_ack_erases_it(
        svc: Service) -> None:
    svc.mfa.add_user("alice")
    phone = Phone(svc, svc.mfa.enroll("alice", "push").uri)
    svc.mfa.add_admin("root", roles=("billing",))
    svc.mfa.confirm("root", svc.mfa.preview("root", "merge").confirmation)
    (message,) = svc.http.get("/v1/device/messages", headers=phone.auth()).json()["messages"]
    assert message["kind"] == "migrated"
    assert json.loads(message["payload"])["totp_uri"].startswith("otpauth://totp/")
    acked = svc.http.post(f"/v1/device/messages/{message['id']}/ack", headers=phone.auth())
    assert acked.status_code == 204
    assert svc.http.get("/v1/device/messages", headers=phone.auth()).json() == {"messages": []}


# -- the waits socket: many logins' waits over one connection ---------------------------------


@contextmanager
def waits_socket(svc: Service, auth: dict[str, str]) -> Iterator[ClientConnection]:
    url = str(svc.http.base_url).replace("http://", "ws://") + "/v1/auth/waits"
    with ws_connect(url, additional_headers=auth, open_timeout=TIMEOUT) as socket:
        yield socket


def received(socket: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(socket.recv(timeout=TIMEOUT))
    return message


def follow(socket: ClientConnection, token: str) -> None:
    socket.send(json.dumps({"token": token, **LOGIN}))


def test_the_waits_socket_sends_each_followed_login_its_decision(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    first, second = push_login(unified, auth), push_login(unified, auth)
    with waits_socket(unified, auth) as socket, subscribed(unified) as waiting:
        follow(socket, first["token"])
        follow(socket, second["token"])
        assert waiting.wait(TIMEOUT)
        first_push, second_push = phone.pushes()  # in the order the logins asked
        phone.send(first_push["id"], phone.signed(first_push["id"], "approve",
                                                  number=first["push_number"]))
        phone.send(second_push["id"], phone.signed(second_push["id"], "deny"))
        answers = {}
        for _ in range(2):
            message = received(socket)
            answers[message["token"]] = message["step"]["outcome"]
    assert answers == {first["token"]: "accept", second["token"]: "reject"}


def test_the_waits_socket_refuses_a_client_without_credentials(unified: Service) -> None:
    with pytest.raises(InvalidStatus) as refused, \
            waits_socket(unified, {"Authorization": "Basic bm9ib2R5Om5vdGhpbmc="}):
        pass
    assert refused.value.response.status_code == 403


def test_the_waits_socket_closes_with_try_again_later_when_the_store_is_gone(
        store_gone: str) -> None:
    with ws_connect(store_gone.replace("http://", "ws://") + "/v1/auth/waits",
                    additional_headers={"Authorization": "Basic dnBuOnNlY3JldA=="},
                    open_timeout=TIMEOUT) as socket, \
            pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


def test_the_waits_socket_answers_a_malformed_message_and_stays_open(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    step = push_login(unified, auth)
    with waits_socket(unified, auth) as socket:
        socket.send("{not json")
        assert received(socket)["error"].startswith("malformed message")
        follow(socket, step["token"])
        (push,) = phone.pushes()
        phone.send(push["id"], phone.signed(push["id"], "approve", number=step["push_number"]))
        assert received(socket)["step"]["outcome"] == "accept"


def test_the_waits_socket_sends_reject_when_the_push_expires(unified: Service) -> None:
    auth = unified.client_auth()
    enrolled_phone(unified)
    step = push_login(unified, auth)
    unified.clock.advance(90)  # past the push's 60 s, within the dialogue's 3 minutes
    with waits_socket(unified, auth) as socket:
        follow(socket, step["token"])
        message = received(socket)
    assert message["step"]["outcome"] == "reject"
    assert message["step"]["message"] == "The push request expired"


# -- auth API: clients and rate ---------------------------------------------------------------


def test_auth_api_accepts_a_client_secret(unified: Service) -> None:
    response = unified.http.post("/v1/auth/begin", headers=unified.client_auth(),
                                 json={"user": "alice"})
    assert response.status_code == 200
    assert response.json()["message"]


def test_auth_api_continues_a_dialogue_only_for_the_client_address_it_began_with(
        unified: Service) -> None:
    auth = unified.client_auth()
    enrolled_phone(unified)
    begun = unified.http.post("/v1/auth/begin", headers=auth, json={"user": "alice", **LOGIN})
    elsewhere = unified.http.post("/v1/auth/answer", headers=auth, json={
        "token": begun.json()["token"], "answer": "push", "client_address": "10.6.6.6"})
    assert elsewhere.json()["outcome"] == "reject"


def test_auth_api_refuses_a_wrong_client_secret_with_401(unified: Service) -> None:
    unified.mfa.add_client("vpn")
    wrong = base64.b64encode(b"vpn:not-the-secret").decode()
    response = unified.http.post("/v1/auth/begin", headers={"Authorization": f"Basic {wrong}"},
                                 json={"user": "alice"})
    assert response.status_code == 401


def assertion(svc: Service, key: Ed25519PrivateKey, name: str) -> str:
    now = int(svc.clock())
    audience = svc.mfa.settings.public_url.rstrip("/") + "/v1/auth"
    return jwt.encode({"iss": name, "sub": name, "aud": audience, "iat": now, "exp": now + 60,
                       "jti": str(uuid.uuid4())}, key, algorithm="EdDSA")


def keyed_client(svc: Service, name: str = "keycloak") -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    svc.mfa.add_client(name, key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())
    return key


def test_auth_api_accepts_a_signed_client_assertion(unified: Service) -> None:
    key = keyed_client(unified)
    response = unified.http.post(
        "/v1/auth/begin", json={"user": "alice"},
        headers={"Authorization": f"Bearer {assertion(unified, key, 'keycloak')}"})
    assert response.status_code == 200


def test_auth_api_refuses_a_replayed_client_assertion_with_401(unified: Service) -> None:
    headers = {"Authorization": f"Bearer {assertion(unified, keyed_client(unified), 'keycloak')}"}
    first = unified.http.post("/v1/auth/begin", json={"user": "alice"}, headers=headers)
    again = unified.http.post("/v1/auth/begin", json={"user": "alice"}, headers=headers)
    assert (first.status_code, again.status_code) == (200, 401)


@pytest.mark.parametrize("settings_extra", ["[service]\nclient_rate = 1\nclient_burst = 2"])
def test_auth_api_answers_429_past_the_client_rate(unified: Service) -> None:
    auth = unified.client_auth()
    statuses = [unified.http.post("/v1/auth/begin", headers=auth,
                                  json={"user": "alice"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_a_malformed_body_gets_a_one_line_422(unified: Service) -> None:
    response = unified.http.post("/v1/auth/begin", headers=unified.client_auth(), json={})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "user" in detail


# -- admin API (R02, R03) ---------------------------------------------------------------------


def test_admin_api_refuses_an_unknown_token_with_401(svc: Service) -> None:
    response = svc.http.get("/v1/admin/users", headers={"Authorization": "Bearer umfa_nope"})
    assert response.status_code == 401


def test_r02_a_non_billing_admin_token_cannot_preview_a_merge(svc: Service) -> None:
    auth = svc.admin_auth("ops")
    refused = svc.http.post("/v1/admin/policy/preview", headers=auth, json={"action": "merge"})
    assert refused.status_code == 403
    assert "billing" in refused.json()["detail"]
    assert svc.http.get("/v1/admin/policy", headers=auth).json()["mode"] == "separated"


def test_r02_a_non_billing_admin_token_cannot_grant_the_billing_role(svc: Service) -> None:
    auth = svc.admin_auth("ops")
    refused = svc.http.post("/v1/admin/admins", headers=auth,
                            json={"name": "mallory", "roles": ["billing"]})
    assert refused.status_code == 403
    names = [a["name"] for a in svc.http.get("/v1/admin/admins", headers=auth).json()["admins"]]
    assert "mallory" not in names


def test_r03_a_billing_admin_merges_in_two_steps_over_the_api(svc: Service) -> None:
    auth = svc.admin_auth("boss", roles=("billing",))
    preview = svc.http.post("/v1/admin/policy/preview", headers=auth, json={"action": "merge"})
    assert preview.status_code == 200
    assert svc.http.get("/v1/admin/policy", headers=auth).json()["mode"] == "separated"
    confirmed = svc.http.post("/v1/admin/policy/confirm", headers=auth,
                              json={"confirmation": preview.json()["confirmation"]})
    assert confirmed.status_code == 200
    assert confirmed.json()["policy"]["mode"] == "unified"
    entries = svc.http.get("/v1/admin/audit?n=10", headers=auth).json()["entries"]
    policy_steps = [(e["actor"], e["adapter"]) for e in entries if e["action"].startswith("policy")]
    assert len(policy_steps) == 2 and set(policy_steps) == {("boss", "api")}


# -- webhook ----------------------------------------------------------------------------------


@contextmanager
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    """A tiny webhook receiver on 127.0.0.1: yields its URL, the bodies, and a 'got one' flag."""
    bodies: list[dict[str, Any]] = []
    got = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()
            got.set()

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", bodies, got
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_webhook_notifier_posts_the_push_id_to_the_device_endpoint(unified: Service) -> None:
    auth = unified.client_auth()
    phone, _ = enrolled_phone(unified)
    with receiver() as (url, bodies, got):
        registered = unified.http.put("/v1/device/endpoint", json={"url": url},
                                      headers=phone.auth())
        assert registered.status_code == 204
        push_login(unified, auth)
        assert got.wait(TIMEOUT)
    (push,) = phone.pushes()
    assert bodies == [{"type": "push", "id": push["id"]}]


# -- the serve command ------------------------------------------------------------------------


def test_plain_http_on_a_non_loopback_address_is_refused(
        home: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.run(home, store_url, "0.0.0.0:0") == 2
    err = capsys.readouterr().err
    assert "refusing plain HTTP" in err and len(err.strip().splitlines()) == 1


@contextmanager
def serve_command(home: Path, store_url: str, log_path: Path) -> Iterator[str]:
    """`unified-mfa serve --listen 127.0.0.1:0` in a subprocess; yields its first stdout line.

    The line is printed once the socket listens, so requests may follow it at once.
    """
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pam_unified_mfa.cli.main", "serve", "--home", str(home),
             "--store", store_url, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log_file, text=True)
        try:
            assert process.stdout is not None
            yield process.stdout.readline()
        finally:
            process.terminate()
            process.wait(timeout=TIMEOUT)


def port_of(line: str, scheme: str) -> int:
    assert f"listening on {scheme}://127.0.0.1:" in line, line
    return int(line.split("127.0.0.1:")[1].split(";")[0])


def test_serve_command_listens_where_it_says_and_answers_healthz(
        home: Path, store_url: str, tmp_path: Path) -> None:
    with serve_command(home, store_url, tmp_path / "serve.log") as line:
        assert "https://mfa.example.test" in line  # where devices enroll: the public URL
        port = port_of(line, "http")
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT)
    assert response.json() == {"status": "ok"}


def self_signed(directory: Path) -> Path:
    """A certificate for 127.0.0.1 and its key, as tls.crt and tls.key; returns the cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "tls.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return directory / "tls.crt"


@pytest.mark.parametrize("settings_extra",
                         ['[service]\ntls_cert = "tls.crt"\ntls_key = "tls.key"'])
def test_serve_command_uses_the_configured_tls_certificate(
        home: Path, store_url: str, tmp_path: Path) -> None:
    cert = self_signed(home)
    with serve_command(home, store_url, tmp_path / "serve.log") as line:
        port = port_of(line, "https")
        trust = ssl.create_default_context(cafile=str(cert))
        response = httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=TIMEOUT, verify=trust)
    assert response.json() == {"status": "ok"}


def test_decisions_are_counted_per_adapter_and_outcome() -> None:
    metrics = Metrics()
    for adapter, outcome in (("api", "accept"), ("api", "accept"), ("api", "reject"),
                             ("radius", "accept")):
        metrics.decision(adapter, outcome)
    counted = {
        (sample.labels["adapter"], sample.labels["outcome"]): sample.value
        for family in metrics.registry.collect() if family.name == "unified_mfa_decisions"
        for sample in family.samples if sample.name == "unified_mfa_decisions_total"
    }
    assert counted == {("api", "accept"): 2, ("api", "reject"): 1, ("radius", "accept"): 1}


def test_serve_log_formats_show_nothing_that_log_records_no_longer_look_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI turns off logging's thread, process and caller lookups: a line of serve's log
    must still say everything its format asks for."""
    for switch in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, switch, True)
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)
    skip_unlogged_lookups()
    record = logging.getLogger("unified_mfa.audit").makeRecord(
        "unified_mfa.audit", logging.INFO, "x.py", 1, "action=%s", ("mfa.code",), None)
    for formatter in server.LOG_CONFIG["formatters"].values():
        line = logging.Formatter(formatter["format"]).format(record)
        assert line.endswith("INFO unified_mfa.audit: action=mfa.code")
        assert "None" not in line
