"""Where the service's CPU per validation goes: the web framework, or the core.

`bench/peer_privacyidea.py` measures `POST /v1/auth/check` through a real socket, with uvicorn,
the kernel and a load generator on the same 2 CPUs; its figure moves by a fifth from window to
window. This bench takes the network away and asks the FastAPI application itself, in this
process, one request at a time (the ASGI call uvicorn makes, with the same headers and body):

- **app**: the whole request, as served: client authentication, body validation, the core's
  `authenticate_code` with a fresh valid code (it must answer `accept`), the response;
- **framework**: the same requests with the core's two calls answered by a constant, so what
  is left is Starlette's middleware, FastAPI's routing, dependencies and models, the metrics
  and the response;
- **core**: `MFA.authenticate_code` called directly with fresh valid codes, as the RADIUS
  responder and the PAM daemon call it.

Each is CPU time of this process per request (`time.process_time`), the median of --repeats
passes of --requests requests; logging goes to /dev/null with the service's own format. The
whole request costs more than its two parts apart: what neither shows alone is printed too
(both share the CPU's caches, and each runs with the other's objects around). What
the socket path adds on top (uvicorn's protocol, the event loop, the access log, the kernel)
is the difference to peer_privacyidea's figure. The store is the embedded SQLite. Nothing is
asserted about speed; the bench exits 1 when a validation is not accepted.

    .venv/bin/python bench/auth_api_split.py [--requests 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging.config
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pam_unified_mfa import totp
from pam_unified_mfa.core import MFA, RequestContext, Step
from pam_unified_mfa.core.dialogue import Outcome
from pam_unified_mfa.service.app import create_app
from pam_unified_mfa.service.events import ServiceEvents
from pam_unified_mfa.service.server import LOG_CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parent))
from push_pending import BenchFailure, machine_line, make_home  # sibling benches
from push_pending import setup as add_api_client
from radius_throughput import PARAMS, TotpUser, add_totp_users, current_step

PATH = "/v1/auth/check"
WARM_UP = 50  # requests before the passes
Login = tuple[TotpUser, str]


def quiet_logging() -> None:
    """The service's log configuration, written to /dev/null: formatted, not shown."""
    logging.config.dictConfig(LOG_CONFIG)
    sink = open("/dev/null", "w")  # noqa: SIM115 - for the life of the process
    for name in ("uvicorn", "uvicorn.access", "unified_mfa"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)


def logins_now(users: list[TotpUser]) -> list[Login]:
    """Each user's code for the current step; each user logs in once in the whole bench."""
    step = current_step()
    return [(u, totp.code_at(u.secret, PARAMS, step * PARAMS.period)) for u in users]


class AsgiCaller:
    """POST /v1/auth/check into the application, as uvicorn would hand it over."""

    def __init__(self, app: Any, authorization: str) -> None:
        self.app = app
        self.headers = [(b"host", b"127.0.0.1"), (b"authorization", authorization.encode()),
                        (b"content-type", b"application/json")]

    async def check(self, user: str, code: str) -> str:
        body = json.dumps({"user": user, "code": code, "service": "bench"}).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": PATH, "raw_path": PATH.encode(),
                 "root_path": "", "query_string": b"", "client": ("127.0.0.1", 40000),
                 "server": ("127.0.0.1", 80), "state": {},
                 "headers": [*self.headers, (b"content-length", str(len(body)).encode())]}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # a disconnect never comes: the request is whole
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise BenchFailure(f"{PATH} answered {sent[0]['status']}: {sent[1]['body']!r}")
        outcome: str = json.loads(sent[1]["body"])["outcome"]
        return outcome


def cpu_per_call(logins: list[Login], call: Callable[[Login], str]) -> float:
    """µs of this process's CPU per call; every call must answer `accept`."""
    started = time.process_time()
    for login in logins:
        outcome = call(login)
        if outcome != "accept":
            raise BenchFailure(f"a valid code got {outcome!r}")
    return (time.process_time() - started) / len(logins) * 1e6


def measure(args: argparse.Namespace, home: Path, authorization: str,
            users: list[TotpUser]) -> dict[str, list[float]]:
    events = ServiceEvents()
    mfa = MFA.open(home, events=events)
    app = create_app(mfa, events)  # the lifespan is not started: no background tasks
    caller = AsgiCaller(app, authorization)
    loop = asyncio.new_event_loop()
    ctx = RequestContext(adapter="api", client="bench", service="bench")
    real_code, real_client = mfa.authenticate_code, mfa.authenticate_client
    accepted = Step(Outcome.ACCEPT, "accepted")
    results: dict[str, list[float]] = {"app": [], "framework": [], "core": []}

    def through_app(login: Login) -> str:
        return loop.run_until_complete(caller.check(login[0].name, login[1]))

    def core(login: Login) -> str:
        return real_code(login[0].name, login[1], ctx).outcome.value

    try:
        for login in logins_now(users[-WARM_UP:]):  # imports, compiled statements
            through_app(login)
        gc.freeze()  # as `serve` does after start-up
        for n in range(args.repeats):
            logins = logins_now(users[2 * args.requests * n:2 * args.requests * (n + 1)])
            results["app"].append(cpu_per_call(logins[:args.requests], through_app))
            results["core"].append(cpu_per_call(logins[args.requests:2 * args.requests], core))
            mfa.authenticate_code = lambda *_a, **_k: accepted  # type: ignore[method-assign]
            mfa.authenticate_client = lambda authorization: "bench"  # type: ignore[method-assign]
            try:
                results["framework"].append(cpu_per_call(logins[:args.requests], through_app))
            finally:
                mfa.authenticate_code = real_code  # type: ignore[method-assign]
                mfa.authenticate_client = real_client  # type: ignore[method-assign]
    finally:
        loop.close()
        mfa.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per pass and part")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_logging()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="unified-mfa-split-") as work:
        home = make_home(Path(work), 9)
        mfa = MFA.open(home)
        try:
            # Two fresh logins per request and pass: one through the app, one to the core.
            users = add_totp_users(mfa, 2 * args.requests * args.repeats + WARM_UP)
        finally:
            mfa.close()
        _, authorization = add_api_client(home, 0)
        try:
            results = measure(args, home, authorization, users)
        except BenchFailure as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    median = {part: statistics.median(values) for part, values in results.items()}
    for part, values in results.items():
        print(f"{part:9}  {median[part]:6.0f} µs of CPU per request (passes: "
              + ", ".join(f"{v:.0f}" for v in values) + ")")
    rest = median["app"] - median["core"] - median["framework"]
    print(f"the whole request {median['app']:.0f} µs = the framework {median['framework']:.0f}"
          f" ({median['framework'] / median['app']:.0%}) + the core {median['core']:.0f} "
          f"({median['core'] / median['app']:.0%}) + what neither shows alone "
          f"{rest:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
