"""The server-sent event stream of one onboarding page: snapshot first, then live events, heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway.auth import EXPIRED_MESSAGE
from services.gateway.events import event_payload, message_salon_id
from services.gateway.livehub import Subscription
from services.gateway.options import GatewayOptions
from services.gateway.snapshot import Snapshot
from shared.messages import Message, utcnow

log = logging.getLogger(__name__)

SnapshotLoader = Callable[[], Awaitable[Snapshot | None]]


def sse_event(event: str, data: Any) -> bytes:
    """One server-sent event; compact JSON never contains a newline, so one `data:` line suffices."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


def sse_comment(text: str) -> bytes:
    """A comment line (heartbeat): ignored by EventSource, keeps proxies from closing an idle stream."""
    return f": {text}\n\n".encode()


def sse_retry(ms: int) -> bytes:
    """Tell EventSource how long to wait before reconnecting."""
    return f"retry: {ms}\n\n".encode()


class EventStreamResponse(Response):
    """Owns one subscription for the life of the stream and always closes it, however the stream ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        subscription: Subscription,
        first: Snapshot,
        reload: SnapshotLoader,
        options: GatewayOptions,
        expires_at: datetime,
    ) -> None:
        # Not Response.__init__: it would declare a Content-Length for the empty body.
        self.status_code = 200
        self.background = None
        self.init_headers(
            {
                "Cache-Control": "no-store, no-transform",
                # nginx would otherwise buffer the stream and the page would see nothing.
                "X-Accel-Buffering": "no",
            }
        )
        self.subscription = subscription
        self.first = first
        self.reload = reload
        self.options = options
        self.expires_at = expires_at

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream until the client goes, the token expires, the page is dropped or the gateway shuts down."""
        stream = asyncio.create_task(self._stream(send))
        gone = asyncio.create_task(self._client_gone(receive))
        try:
            await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
            if stream.done() and not stream.cancelled() and stream.exception() is not None:
                exc = stream.exception()
                if not isinstance(exc, OSError):
                    log.warning("event stream failed", extra={"error": repr(exc)}, exc_info=exc)
        finally:
            # First, before any await: a cancelled request (a server or middleware cancelling the task) is
            # cancelled again at the next await, and the stream's slot for its token would never be freed.
            self.subscription.close()
            for task in (stream, gone):
                task.cancel()
            await asyncio.gather(stream, gone, return_exceptions=True)

    @staticmethod
    async def _client_gone(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        options = self.options
        loop = asyncio.get_running_loop()
        await emit(sse_retry(options.sse_retry_ms) + sse_event("snapshot", self.first.model_dump(mode="json")))
        next_ping = loop.time() + options.heartbeat_s
        next_refresh = loop.time() + options.snapshot_refresh_s
        while True:
            token_left = (self.expires_at - utcnow()).total_seconds()
            if token_left <= 0:
                await emit(sse_event("expired", {"detail": EXPIRED_MESSAGE}))
                break
            now = loop.time()
            if now >= next_refresh:
                next_refresh = now + options.snapshot_refresh_s
                snapshot = await self.reload()
                if snapshot is not None:
                    await emit(sse_event("snapshot", snapshot.model_dump(mode="json")))
                    next_ping = loop.time() + options.heartbeat_s
                continue
            if now >= next_ping:
                await emit(sse_comment("ping"))
                next_ping = now + options.heartbeat_s
                continue
            wait = max(0.0, min(next_ping, next_refresh) - now)
            try:
                msg = await asyncio.wait_for(anext(self.subscription), timeout=min(wait, token_left))
            except TimeoutError:
                continue
            except StopAsyncIteration:
                break
            chunk = self._encode(msg)
            if chunk:
                await emit(chunk)
                next_ping = loop.time() + options.heartbeat_s
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def _encode(msg: Message) -> bytes | None:
        salon_id = message_salon_id(msg)
        if salon_id is None:
            return None
        payload = event_payload(msg, salon_id)
        return sse_event(msg.type, payload) if payload is not None else None
