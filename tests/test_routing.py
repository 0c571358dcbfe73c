"""How the service's routes run (service/routing.py): the login path's routes answer as
FastAPI declares them, a malformed request exactly as FastAPI would."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from pam_unified_mfa.service import errors
from pam_unified_mfa.service.routing import LoginPathRoute, add_routes


class Question(BaseModel):
    user: str = Field(max_length=8)
    count: int = 1


class Reply(BaseModel):
    user: str
    count: int
    caller: str


async def caller(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header:
        raise HTTPException(401, "who is calling?")
    return header


Caller = Annotated[str, Depends(caller)]


def make_app(route_class: type | None) -> FastAPI:
    router = (APIRouter(prefix="/v1", route_class=route_class) if route_class
              else APIRouter(prefix="/v1"))

    @router.post("/ask", response_model=Reply)
    async def ask(body: Question, who: Caller) -> Reply:
        return Reply(user=body.user, count=body.count, caller=who)

    @router.post("/ask/{user}", response_model=Reply)
    async def ask_by_path(user: str, body: Question, who: Caller) -> Reply:
        return Reply(user=user, count=body.count, caller=who)

    app = FastAPI()
    add_routes(app, router)
    errors.install(app)
    return app


LEAN = TestClient(make_app(LoginPathRoute))
STANDARD = TestClient(make_app(None))
AUTH = {"authorization": "Basic x"}

MALFORMED = {
    "a body the model refuses": dict(json={"user": "much-too-long"}, headers=AUTH),
    "a field of the wrong type": dict(json={"user": "a", "count": "many"}, headers=AUTH),
    "not JSON": dict(content=b"{user", headers={**AUTH, "content-type": "application/json"}),
    "another content type": dict(content=b'{"user": "a"}',
                                 headers={**AUTH, "content-type": "text/plain"}),
    "no content type": dict(content=b'{"user": "a"}', headers=AUTH),
    "no body": dict(headers=AUTH),
    "a JSON list": dict(json=[1, 2], headers=AUTH),
    "no caller and a bad body": dict(json={"user": 5}),
}


def test_a_well_formed_request_gets_the_endpoint_answer() -> None:
    reply = LEAN.post("/v1/ask", json={"user": "alice", "count": 2}, headers=AUTH)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"user": "alice", "count": 2, "caller": "Basic x"}


def test_a_well_formed_request_is_answered_as_fastapi_answers_it() -> None:
    request = dict(json={"user": "alice"}, headers={**AUTH, "content-type": "application/json"})
    lean, standard = LEAN.post("/v1/ask", **request), STANDARD.post("/v1/ask", **request)
    assert (lean.status_code, lean.content) == (standard.status_code, standard.content)


def test_a_json_content_type_with_a_charset_is_served() -> None:
    reply = LEAN.post("/v1/ask", content=b'{"user": "alice"}',
                      headers={**AUTH, "content-type": "application/json; charset=utf-8"})
    assert reply.json()["user"] == "alice"


def test_the_dependencies_still_refuse_an_unknown_caller() -> None:
    reply = LEAN.post("/v1/ask", json={"user": "alice"})
    assert reply.status_code == 401
    assert reply.json() == {"detail": "who is calling?"}


@pytest.mark.parametrize("request_", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_gets_fastapis_own_answer(request_: dict[str, object]) -> None:
    lean = LEAN.post("/v1/ask", **request_)  # type: ignore[arg-type]
    standard = STANDARD.post("/v1/ask", **request_)  # type: ignore[arg-type]
    assert lean.status_code >= 400
    assert (lean.status_code, lean.content) == (standard.status_code, standard.content)


def test_an_endpoint_of_another_shape_is_served_by_fastapi() -> None:
    reply = LEAN.post("/v1/ask/bob", json={"user": "alice"}, headers=AUTH)
    assert reply.json() == {"user": "bob", "count": 1, "caller": "Basic x"}
