"""The device API as the authenticator calls it (docs/api.md, "Device API").

Registration is authorised by the single-use token from the QR code; every later call by a
short-lived JWT signed with the device key. Answers from the service are checked for shape
before use, so a wrong or hostile server produces one clear error instead of a crash, and
errors carry the service's one-line `detail` but never a token, key or code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from pam_unified_mfa.authenticator import keys
from pam_unified_mfa.authenticator.state import PushPart
from pam_unified_mfa.errors import UnifiedMFAError

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 20.0
MAX_WAIT = 60  # the service's long-poll limit per call
_USER_AGENT = "unified-mfa-authenticator"


class DeviceAPIError(UnifiedMFAError):
    """The service refused a call (4xx/5xx) or answered something this app cannot use."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceUnreachable(DeviceAPIError):
    """No answer at all: DNS, connection, TLS or timeout. Local state is still usable."""


@dataclass(frozen=True)
class PendingPush:
    """A push request waiting on this device; `choices` holds the right number and two decoys."""

    id: str
    user: str
    service: str
    client: str
    created_at: float
    expires_at: float
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    """Something the device channel delivers, e.g. the TOTP a merge gave this account (R10)."""

    id: str
    kind: str
    payload: dict[str, Any]


def base_url(service_url: str) -> str:
    """The service root; the enrollment URI carries the public URL the device calls."""
    root = service_url.rstrip("/")
    suffix = "/v1/device/register"
    return root[: -len(suffix)] if root.endswith(suffix) else root


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _request(method: str, url: str, *, token: str | None = None, body: Any = None,
             read_timeout: float = READ_TIMEOUT) -> Any:
    """One call; returns the decoded JSON body or raises with a one-line reason."""
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        # No redirects: a redirected POST would lose its body, and the bearer token is for
        # this service only.
        response = requests.request(method, url, headers=headers, json=body,
                                    timeout=(CONNECT_TIMEOUT, read_timeout),
                                    allow_redirects=False)
    except requests.RequestException as exc:
        raise ServiceUnreachable(
            f"cannot reach the service at {url.split('/v1/')[0]} ({type(exc).__name__})"
        ) from None
    if response.status_code >= 300:
        detail = ""
        try:
            payload = response.json()
            if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
                detail = payload["detail"]
        except ValueError:
            pass
        reason = _one_line(detail) if detail else (response.reason or "error")
        raise DeviceAPIError(f"service refused (HTTP {response.status_code}): {reason}",
                             response.status_code)
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise DeviceAPIError("the service sent a response that is not JSON") from None


def _shape_error() -> DeviceAPIError:
    return DeviceAPIError("the service sent a response this app does not understand")


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _shape_error()
    return value


def _number(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _shape_error()
    return float(value)


@dataclass(frozen=True)
class Registration:
    device_id: str
    user: str
    issuer: str


def register(service_url: str, token: str, public_key_pem: str) -> Registration:
    """Spend the enrollment token to bind our public key to the account's push factor."""
    data = _request("POST", f"{base_url(service_url)}/v1/device/register",
                    body={"token": token, "public_key": public_key_pem})
    if not isinstance(data, dict):
        raise _shape_error()
    return Registration(_str(data, "device_id"), str(data.get("user", "")),
                        str(data.get("issuer", "")))


class DeviceClient:
    """The calls a registered device makes, each signed with its key."""

    def __init__(self, push: PushPart) -> None:
        self.push = push
        self.root = base_url(push.service_url)

    def _call(self, method: str, path: str, body: Any = None,
              read_timeout: float = READ_TIMEOUT) -> Any:
        token = keys.request_token(self.push.private_key, self.push.device_id)
        return _request(method, f"{self.root}{path}", token=token, body=body,
                        read_timeout=read_timeout)

    def pushes(self, wait: int = 0) -> list[PendingPush]:
        """Pending requests; with `wait` the service holds the call until one arrives."""
        wait = max(0, min(MAX_WAIT, wait))
        data = self._call("GET", f"/v1/device/pushes?wait={wait}",
                          read_timeout=READ_TIMEOUT + wait)
        items = data.get("pushes") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _shape_error()
        result = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("choices"), list):
                raise _shape_error()
            result.append(PendingPush(
                id=_str(item, "id"), user=_str(item, "user"),
                service=str(item.get("service") or ""), client=str(item.get("client") or ""),
                created_at=_number(item, "created_at"), expires_at=_number(item, "expires_at"),
                choices=tuple(str(c) for c in item["choices"]),
            ))
        return result

    def answer(self, push_id: str, signed_answer: str) -> str:
        """Send the signed decision; returns the status the service recorded."""
        data = self._call("POST", f"/v1/device/pushes/{quote(push_id, safe='')}",
                          body={"answer": signed_answer})
        if not isinstance(data, dict):
            raise _shape_error()
        return _str(data, "status")

    def messages(self) -> list[Message]:
        data = self._call("GET", "/v1/device/messages")
        items = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _shape_error()
        result = []
        for item in items:
            if not isinstance(item, dict):
                raise _shape_error()
            payload = item.get("payload")
            if isinstance(payload, str):
                # The payload is a JSON document; a service may send it as text or inline.
                try:
                    payload = json.loads(payload)
                except ValueError:
                    raise _shape_error() from None
            if not isinstance(payload, dict):
                raise _shape_error()
            result.append(Message(_str(item, "id"), _str(item, "kind"), payload))
        return result

    def ack(self, message_id: str) -> None:
        """Tell the service the message is stored here, so it erases the payload."""
        self._call("POST",
                   f"/v1/device/messages/{quote(message_id, safe='')}/ack")
