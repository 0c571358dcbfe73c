"""The daemon's remote mode: the dialogue of a central `unified-mfa serve`, through the auth API.

`[pamd] server = "https://…"` makes `unified-mfa pamd` a thin relay for fleets: each step the
session asks for becomes one call of the auth API (docs/api.md, "Auth API"), authenticated as an
API client with HTTP Basic, and the JSON answer becomes the core's `Step` again, so the session
renders it exactly as it renders a local one. The central service decides everything.

When the service cannot be reached (a network error, a timeout, a 5xx, a 429), the step ends as
`UNAVAILABLE` with the fail mode's verdict (S07): the module's `failmode=`, else the daemon's
`fail_mode`. Refused client credentials (401) or any other refusal are a configuration error,
not an outage: the login is denied whatever the fail mode, and logged at ERROR.
"""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path
from typing import Any

import requests

from pam_unified_mfa.core import Outcome, RequestContext, Step
from pam_unified_mfa.core.dialogue import HINT_UNIFIED
from pam_unified_mfa.errors import ConfigError
from pam_unified_mfa.settings import Settings, parse_duration

log = logging.getLogger("unified_mfa.pamd")

WAIT_SECONDS = 2.0
"""How long one `wait` call follows a pending push; the session asks again right after."""

MSG_UNAVAILABLE = "The MFA service is unavailable"


def read_secret(path: Path) -> str:
    """The client secret from its file: a regular file no group or other user may read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(f"{path} must not be readable by group or others: chmod 600 it")
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ConfigError(f"{path} is empty")
    return secret


class RemoteDialogues:
    """`begin`, `answer` and `poll` of the core, answered by a central service."""

    def __init__(self, server: str, client: str, secret: str, timeout: float,
                 fail_mode: str = "secure") -> None:
        self.base = server.rstrip("/") + "/v1/auth"
        self.auth = (client, secret)
        self.timeout = timeout
        self.fail_mode = fail_mode
        self._local = threading.local()  # one HTTP session (kept-alive connections) per thread

    @classmethod
    def from_settings(cls, home: Path, settings: Settings) -> RemoteDialogues:
        conf = settings.pamd
        path = Path(conf.client_secret_file)
        secret = read_secret(path if path.is_absolute() else home / path)
        return cls(conf.server, conf.client, secret, parse_duration(conf.timeout),
                   settings.fail_mode)

    def begin(self, user: str, ctx: RequestContext) -> Step:
        return self._call("begin", {"user": user}, ctx, self.timeout)

    def answer(self, token: str, reply: str, ctx: RequestContext) -> Step:
        return self._call("answer", {"token": token, "answer": reply}, ctx, self.timeout)

    def poll(self, token: str, ctx: RequestContext) -> Step:
        return self._call("wait", {"token": token, "timeout": WAIT_SECONDS}, ctx,
                          self.timeout + WAIT_SECONDS)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.auth
        return session

    def _unavailable(self, ctx: RequestContext, why: str) -> Step:
        mode = ctx.fail_mode or self.fail_mode
        allowed = mode == "safe"
        log.warning("pamd: the MFA service is unavailable (%s): client=%s fail_mode=%s "
                    "verdict=%s", why, ctx.client or "-", mode, "allow" if allowed else "deny")
        return Step(Outcome.UNAVAILABLE, MSG_UNAVAILABLE, allowed=allowed)

    def _call(self, verb: str, body: dict[str, Any], ctx: RequestContext,
              timeout: float) -> Step:
        body = {**body, "service": ctx.service, "client_address": ctx.client}
        try:
            response = self._session().post(f"{self.base}/{verb}", json=body, timeout=timeout)
        except requests.RequestException as exc:
            return self._unavailable(ctx, type(exc).__name__)
        status = response.status_code
        if status >= 500 or status == 429:
            return self._unavailable(ctx, f"HTTP {status}")
        if status != 200:
            # The service answered and refused us: wrong credentials or a request it cannot
            # take. Not an outage, so the fail mode does not apply.
            log.error("pamd: the MFA service refused %s with HTTP %d%s", verb, status,
                      " (check [pamd] client and its secret)" if status == 401 else "")
            return Step(Outcome.UNAVAILABLE, MSG_UNAVAILABLE, allowed=False)
        try:
            return _step(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            log.error("pamd: the MFA service sent a malformed step for %s: %s", verb,
                      type(exc).__name__)
            return Step(Outcome.UNAVAILABLE, MSG_UNAVAILABLE, allowed=False)


def _step(data: dict[str, Any]) -> Step:
    """The auth API's step (docs/api.md) as the core's `Step`."""
    suggest = bool(data.get("suggest_unified", False))
    deadline = data.get("deadline")
    return Step(
        outcome=Outcome(data["outcome"]), message=str(data.get("message") or ""),
        token=data.get("token"), methods=tuple(str(m) for m in data.get("methods") or ()),
        push_number=data.get("push_number"),
        deadline=float(deadline) if deadline is not None else None,
        enroll_uri=data.get("enroll_uri"), suggest_unified=suggest,
        allowed=bool(data.get("allowed", False)),
        extra={"hint": HINT_UNIFIED} if suggest else {})

