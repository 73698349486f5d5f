"""One pure ASGI middleware (safe for streaming responses): body size limit, common headers, request metrics.

One layer instead of three: every layer is a coroutine and a wrapped `send` per request, and at webhook
volume that framework overhead was a fifth of the gateway's CPU.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HTTP_REQUESTS, labelled

# Headers every answer carries unless the route set them: no Referer leaks of the onboarding token, no MIME
# sniffing.
COMMON_HEADERS = ((b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff"))
_COMMON_NAMES = frozenset(name for name, _ in COMMON_HEADERS)


class BodyTooLarge(HTTPException):
    """The request body passed the limit (an HTTPException, so route handlers re-raise it untouched)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Тело запроса больше допустимых {limit} байт.")


def add_common_headers(message: Message) -> None:
    """Append the common headers a response start does not carry yet (a route's own value wins)."""
    headers = list(message.get("headers", ()))
    present = {lowered for name, _ in headers if (lowered := name.lower()) in _COMMON_NAMES}
    headers += [header for header in COMMON_HEADERS if header[0] not in present]
    message["headers"] = headers


class GatewayMiddleware:
    """413 for a body over `max_bytes`, the common headers on every answer, answers counted by route template."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a receive that counts bytes and a send that adds headers and the status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        # By Content-Length up front, then by counting the bytes actually received.
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await self._reject(send)
                return
        received = 0
        status = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                add_common_headers(message)
            await send(message)

        try:
            try:
                await self.app(scope, limited_receive, tracking_send)
            finally:
                # By route template, never by raw path (which would carry ids and tokens).
                route = scope.get("route")
                labelled(HTTP_REQUESTS, getattr(route, "path", None) or "unmatched", str(status or 500)).inc()
        except BodyTooLarge:
            if status:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"error": "payload_too_large", "detail": f"Тело запроса больше допустимых {self.max_bytes} байт."},
            ensure_ascii=False,
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
