"""Core errors to HTTP: every error is `{"detail": "<one line>"}`, never a trace or a secret.

The mapping (also in docs/api.md): NotFound 404; AlreadyExists, PolicyViolation, LockoutRefused
and ConfirmationError 409 (the request is well-formed but conflicts with the current state or
policy); PermissionDenied 403; AuthenticationFailed 401; InvalidCode, DialogueError and other
refusals 400; PushError by its reason (unknown 404, replayed 409, expired 410, forged 401,
invalid 400); a malformed body or parameter 422; StoreUnavailable 503. Anything unexpected is
logged with its trace on the server and answered 500 `{"detail": "internal error"}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from pam_unified_mfa.core.push import PushError
from pam_unified_mfa.errors import (
    AlreadyExists,
    AuthenticationFailed,
    ConfirmationError,
    LockoutRefused,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    StoreUnavailable,
    UnifiedMFAError,
)

log = logging.getLogger("unified_mfa.service")


class Error(BaseModel):
    detail: str


_DESCRIPTIONS = {
    400: "Refused: the request cannot be applied as given",
    401: "The caller did not prove who it is",
    403: "The acting admin lacks the role this needs",
    404: "Not found",
    409: "Conflicts with the current state or policy, or was already used",
    410: "Expired",
    422: "A malformed body or parameter",
    429: "Rate limit exceeded",
    503: "The store is unreachable",
}

STATUS_BY_ERROR: tuple[tuple[type[UnifiedMFAError], int], ...] = (
    (NotFound, 404),
    (AlreadyExists, 409),
    (PermissionDenied, 403),
    (PolicyViolation, 409),
    (LockoutRefused, 409),
    (ConfirmationError, 409),
    (AuthenticationFailed, 401),
    (StoreUnavailable, 503),
)

STATUS_BY_PUSH_REASON = {"unknown": 404, "replayed": 409, "expired": 410, "forged": 401,
                         "invalid": 400}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of an endpoint: these error statuses, each with the one-line body."""
    return {code: {"model": Error, "description": _DESCRIPTIONS[code]} for code in codes}


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def status_of(exc: UnifiedMFAError) -> int:
    if isinstance(exc, PushError):
        return STATUS_BY_PUSH_REASON.get(getattr(exc, "reason", "invalid"), 400)
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 400


def _response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status, headers=headers)


async def _core_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnifiedMFAError)
    status = status_of(exc)
    if status == 503:
        return _response(503, "store unavailable")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _response(status, str(exc) or type(exc).__name__, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _response(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    # The message only: never the offered value, which may be a code or a token.
    return _response(422, f"{where}: {first.get('msg', 'invalid')}" if where else "invalid")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return _response(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(UnifiedMFAError, _core_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
