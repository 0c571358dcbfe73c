"""How the service's routes are added and run: as FastAPI declares them, with less around
each request on the login path.

- `add_routes` adds a router's routes to the application without FastAPI's include layer.
- `LoginPathRoute` runs the adapters' endpoints (the auth API, the Keycloak bridge) without
  FastAPI's general dependency solver when a request is well formed.

Both keep what FastAPI makes of the declarations: the OpenAPI document, the validation errors
and every answer to a malformed request are FastAPI's own (docs/api.md, docs/performance.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
RequestDependency = Callable[[Request], Awaitable[Any]]
JSON = "application/json"


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add `router`'s routes to `app` as they are.

    Since 0.165, FastAPI's `include_router` keeps the router behind a layer that matches every
    request into it twice and records the route's context in the request scope on the way:
    about 45 µs of CPU per auth API call, a twentieth of a whole validation. Our routers give
    their prefix, tags and schema flag where they are made, so their routes are already
    complete, and nothing is set at inclusion that the layer would have to carry.
    """
    app.router.routes.extend(router.routes)


def _request_only(dependency: Dependant) -> RequestDependency | None:
    """The dependency's function when it is a coroutine function of the request alone."""
    call = dependency.call
    plain = not (dependency.dependencies or dependency.path_params or dependency.query_params
                 or dependency.header_params or dependency.cookie_params
                 or dependency.body_params or dependency.security_scopes_param_name)
    if call is None or not plain or dependency.request_param_name is None:
        return None
    if not inspect.iscoroutinefunction(call):
        return None
    return call


class LoginPathRoute(APIRoute):
    """A route that serves a well-formed request without FastAPI's dependency solver.

    FastAPI resolves an endpoint's parameters with a general solver that, for a body model and
    two dependencies of the request, cost about 90 µs per call, a tenth of an auth API
    validation; the whole dialogue is a handful of such calls per login. This route handles
    the shape the adapters' endpoints have: one JSON body model, dependencies that are
    coroutine functions of the request alone (the caller's authentication, the runtime), and a
    model as the answer. A request with a JSON body that the model takes is served directly:
    the dependencies are awaited in their declared order, then the endpoint, and the answer is
    the model's JSON. Every other request (another content type, a body the model refuses, no
    body) goes to FastAPI's own handler, so its answer, a validation error included, is the
    one FastAPI gives. An endpoint of any other shape is served by FastAPI's handler alone.
    """

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        direct = self._direct_handler(standard)
        return direct if direct is not None else standard

    def _direct_handler(self, standard: Handler) -> Handler | None:
        dependant = self.dependant
        endpoint = dependant.call
        answer = self.response_model
        if (endpoint is None or not inspect.iscoroutinefunction(endpoint)
                or dependant.path_params or dependant.query_params or dependant.header_params
                or dependant.cookie_params or len(dependant.body_params) != 1
                or dependant.response_param_name or dependant.background_tasks_param_name
                or self.status_code not in (None, 200) or self.dependencies
                or not (isinstance(answer, type) and issubclass(answer, BaseModel))):
            return None
        body_field = dependant.body_params[0]
        body_model = body_field.field_info.annotation
        if not (isinstance(body_model, type) and issubclass(body_model, BaseModel)):
            return None
        named: list[tuple[str, RequestDependency]] = []
        for dependency in dependant.dependencies:
            call = _request_only(dependency)
            if call is None or dependency.name is None:
                return None
            named.append((dependency.name, call))
        if len({id(call) for _, call in named}) != len(named):
            return None  # FastAPI calls a repeated dependency once per request
        body_name = body_field.name
        request_name = dependant.request_param_name

        async def handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if content_type.partition(";")[0].strip().lower() != JSON:
                return await standard(request)
            try:
                body = body_model.model_validate_json(await request.body())
            except ValidationError:
                return await standard(request)  # FastAPI's error, exactly
            values: dict[str, Any] = {body_name: body}
            for name, call in named:
                values[name] = await call(request)
            if request_name is not None:
                values[request_name] = request
            result = await endpoint(**values)
            if isinstance(result, Response):
                return result
            if type(result) is not answer:
                result = answer.model_validate(result, from_attributes=True)
            return Response(result.model_dump_json(by_alias=True), media_type=JSON)

        return handle

