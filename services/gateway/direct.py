"""Routes that skip FastAPI's per-request machinery: for the hot paths (webhooks, the install redirect).

Such an endpoint takes the `Request` and returns a `Response` itself: FastAPI solves no dependencies, parses
no body and serialises no response model for it. It is still an `APIRoute`, so the OpenAPI document (request
body, parameters, responses) is generated from the route's arguments exactly as before, and exceptions still
reach the app's exception handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import request_response

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """An `APIRoute` whose endpoint is its own request handler."""

    def __init__(self, path: str, endpoint: Endpoint, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        if self.max_body_size is None:
            # Starlette's adapter: the endpoint inside the app's exception handling, without the two
            # AsyncExitStacks FastAPI's keeps per request for dependencies with `yield` (there are none here).
            self.app = request_response(endpoint)

    def get_route_handler(self) -> Endpoint:
        """The endpoint itself (FastAPI's handler would solve dependencies and validate a response model)."""
        endpoint: Endpoint = self.endpoint
        return endpoint


def direct_route(router: APIRouter, path: str, *, methods: list[str], **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Register `endpoint(request) -> Response` on `router` as a `DirectRoute` (options as for `add_api_route`)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=methods, route_class_override=DirectRoute, **options)
        return endpoint

    return register
