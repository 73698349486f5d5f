"""What every YClients endpoint does before its own logic: record, rate-limit, inject faults, check headers.

Header checks, in this order: ``Authorization: Bearer <partner token>`` (optionally followed by
``, User <token>``) else 401; ``Accept: application/vnd.yclients.v2+json`` else **400** (the sandbox's
choice between the 400/415 YClients is reported to give); a POST with a body must be
``Content-Type: application/json`` else 415.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from pydantic import SecretStr
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.yclients import envelopes
from sandbox.yclients.faults import FaultSpec
from sandbox.yclients.options import SandboxOptions
from sandbox.yclients.state import CallRecord, SandboxState

MAX_BODY_BYTES = 1024 * 1024
_MAX_TEXT_KEPT = 2000

_COMPANY = re.compile(r"/api/v1/company/[^/]+/?")
_STATUS = re.compile(r"/marketplace/salon/[^/]+/application/[^/]+/?")
_UNINSTALL = re.compile(r"/marketplace/salon/[^/]+/application/[^/]+/uninstall/?")
_SALONS = re.compile(r"/marketplace/application/[^/]+/salons/?")
_API_PREFIXES = ("/api/", "/marketplace/partner/", "/marketplace/salon/", "/marketplace/application/")

_FAULT_RESPONSES: dict[str, Callable[[], Response]] = {
    "5xx": lambda: envelopes.error(500, envelopes.SERVER_ERROR),
    "401": envelopes.unauthorized,
    "404": lambda: envelopes.error(404, envelopes.NOT_FOUND),
    "422": lambda: envelopes.error(422, envelopes.INVALID_PARAMS, {"api_key": ["Некорректное значение"]}),
    "400_aggregator": lambda: envelopes.error(400, envelopes.AGGREGATOR_NOT_FOUND),
    "403_installed": lambda: envelopes.error(403, envelopes.ALREADY_INSTALLED),
    "429": lambda: envelopes.error(429, envelopes.TOO_MANY_REQUESTS),
}


def classify(path: str) -> str | None:
    """The fault-switch name of a YClients endpoint; None for paths that are not the YClients API."""
    if _COMPANY.fullmatch(path):
        return "company"
    if path.startswith("/marketplace/partner/callback"):
        return "callback"
    if path.startswith("/marketplace/partner/payment"):
        return "payment"
    if _UNINSTALL.fullmatch(path):
        return "uninstall"
    if _STATUS.fullmatch(path):
        return "status"
    if _SALONS.fullmatch(path):
        return "salons"
    if path.rstrip("/") == "/marketplace/application/update_channel":
        return "update_channel"
    if path.startswith(_API_PREFIXES):
        return "other"
    return None


def mask_authorization(value: str) -> str:
    """``Bearer abc, User xyz`` → ``Bearer ***, User ***``."""
    masked = []
    for part in value.split(","):
        scheme, sep, credential = part.strip().partition(" ")
        masked.append(f"{scheme} ***" if sep and credential.strip() else "***")
    return ", ".join(masked)


def authorization_ok(value: str | None, partner_token: str) -> bool:
    """True if the first credential is ``Bearer <partner token>``."""
    if not value or not partner_token:
        return False
    scheme, _, credential = value.split(",")[0].strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credential.strip().encode("utf-8"), partner_token.encode("utf-8")
    )


def accept_ok(value: str | None) -> bool:
    """True if the Accept header lists the v2 media type."""
    if not value:
        return False
    return any(r.split(";")[0].strip().lower() == envelopes.ACCEPT_V2 for r in value.split(","))


def content_type_ok(value: str | None) -> bool:
    """True for ``application/json`` (parameters such as charset allowed)."""
    return bool(value) and str(value).split(";")[0].strip().lower() == "application/json"


@dataclass
class _Checks:
    auth: bool
    accept: bool
    content_type: bool


class YClientsGate:
    """ASGI middleware in front of the YClients endpoints; other paths pass straight through."""

    def __init__(self, app: ASGIApp, *, state: SandboxState, partner_token: SecretStr, options: SandboxOptions):
        self.app = app
        self.state = state
        self.token = partner_token
        self.options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        endpoint = classify(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = _headers(scope)
        checks = _Checks(
            auth=authorization_ok(headers.get("authorization"), self.token.get_secret_value()),
            accept=accept_ok(headers.get("accept")),
            content_type=not body or content_type_ok(headers.get("content-type")),
        )
        record = self._record(scope, endpoint, headers, checks, body)
        recording_send = _recording(send, record)
        replay = _replay(body or b"", receive)
        if body is None:
            await envelopes.error(413, envelopes.BODY_TOO_LARGE)(scope, replay, recording_send)
            return
        if not self.state.limiter.try_acquire():
            record.rate_limited = True
            await envelopes.error(429, envelopes.TOO_MANY_REQUESTS)(scope, replay, recording_send)
            return
        fault = self.state.faults.take(endpoint)
        if fault is None:
            await self._serve(scope, replay, recording_send, checks)
            return
        record.fault = fault.spec.mode
        await self._apply(fault.spec, scope, receive, replay, recording_send, checks, record)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, checks: _Checks) -> None:
        if not checks.auth:
            await envelopes.unauthorized()(scope, receive, send)
        elif not checks.accept:
            await envelopes.error(400, envelopes.BAD_ACCEPT)(scope, receive, send)
        elif scope["method"] == "POST" and not checks.content_type:
            await envelopes.error(415, envelopes.BAD_CONTENT_TYPE)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _apply(
        self,
        spec: FaultSpec,
        scope: Scope,
        receive: Receive,
        replay: Receive,
        send: Send,
        checks: _Checks,
        record: CallRecord,
    ) -> None:
        if spec.mode == "slow":
            await asyncio.sleep(self.options.slow_s if spec.delay_s is None else spec.delay_s)
            await self._serve(scope, replay, send, checks)
        elif spec.mode == "timeout":
            if await _hang(self.options.hang_s if spec.delay_s is None else spec.delay_s, receive):
                await envelopes.error(504, envelopes.GATEWAY_TIMEOUT)(scope, replay, send)
        elif spec.mode == "lost_response":
            held: list[Message] = []

            async def hold(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record.status = message["status"]
                held.append(message)

            # The effect happens (e.g. the install is recorded); only the answer is lost.
            await self._serve(scope, replay, hold, checks)
            if await _hang(self.options.hang_s if spec.delay_s is None else spec.delay_s, receive):
                for message in held:
                    await send(message)
        else:
            await _FAULT_RESPONSES[spec.mode]()(scope, replay, send)

    def _record(
        self, scope: Scope, endpoint: str, headers: dict[str, str], checks: _Checks, body: bytes | None
    ) -> CallRecord:
        shown = dict(headers)
        if "authorization" in shown:
            shown["authorization"] = mask_authorization(shown["authorization"])
        query = scope.get("query_string", b"").decode("latin-1")
        record = CallRecord(
            seq=self.state.next_call_seq(),
            method=scope["method"],
            path=scope["path"],
            endpoint=endpoint,
            query=[[k, v] for k, v in _parse_query(query)],
            headers=shown,
            auth_ok=checks.auth,
            accept_ok=checks.accept,
            body=_shown_body(body),
        )
        self.state.calls.append(record)
        return record


def _parse_query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _shown_body(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body[:_MAX_TEXT_KEPT].decode("utf-8", errors="replace")


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it is larger than ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _recording(send: Send, record: CallRecord) -> Send:
    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            record.delivered = True

    return recording_send


async def _hang(delay_s: float, receive: Receive) -> bool:
    """Wait ``delay_s``; True if the client is still there at the end, False once it disconnected."""

    async def disconnected() -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a broken channel means the client is gone
            return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=delay_s)
        return watcher not in done
    finally:
        watcher.cancel()
