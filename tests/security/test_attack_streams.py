"""Live-update streams are a bounded resource: five per onboarding token, the sixth is refused with 429,
and a stream that ends gives its slot back (nothing leaks however the client goes away).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest

from services.gateway.auth import token_key
from shared.config import Settings
from tests.integration.gateway.sse_support import EventReader, ServedGateway
from tests.security.conftest import OPTIONS, token_for
from tests.support.wait import wait_for
from tests.unit.gateway.gateway_support import new_salon_id, running_gateway

pytestmark = pytest.mark.integration

EVENTS = "/marketplace/api/events"


async def open_stream(
    http: httpx.AsyncClient, stack: AsyncExitStack, token: str, readers: list[EventReader]
) -> httpx.Response:
    """Open a stream and read its first event (the snapshot), so the server has really subscribed it.

    The reader is kept in `readers`: a reader that is garbage-collected closes its stream.
    """
    response = await stack.enter_async_context(http.stream("GET", EVENTS, params={"token": token}))
    if response.status_code == 200:
        reader = EventReader(response)
        readers.append(reader)
        assert (await reader.next()).name == "snapshot"
    else:
        await response.aread()
    return response


async def test_the_sixth_stream_of_a_token_gets_429(
    http: httpx.AsyncClient, settings: Settings, served: ServedGateway
) -> None:
    limit = OPTIONS.max_streams_per_token
    token = token_for(settings, new_salon_id())
    readers: list[EventReader] = []
    async with AsyncExitStack() as stack:
        opened = [await open_stream(http, stack, token, readers) for _ in range(limit)]
        assert [r.status_code for r in opened] == [200] * limit
        assert served.app.state.hub.open_streams(token_key(token)) == limit

        refused = await open_stream(http, stack, token, readers)
        assert refused.status_code == 429
        assert refused.json()["error"] == "too_many_streams"
        assert refused.headers["retry-after"] == "10"
        assert served.app.state.hub.open_streams(token_key(token)) == limit

        # The limit is per token: another install's page is not starved by this one.
        other = await open_stream(http, stack, token_for(settings, new_salon_id()), readers)
        assert other.status_code == 200


async def test_a_closed_stream_gives_its_slot_back(
    http: httpx.AsyncClient, settings: Settings, served: ServedGateway
) -> None:
    token = token_for(settings, new_salon_id())
    hub = served.app.state.hub
    # Three times the limit, one after the other: each disconnect must release the subscription.
    for _ in range(3 * OPTIONS.max_streams_per_token):
        async with AsyncExitStack() as stack:
            readers: list[EventReader] = []
            assert (await open_stream(http, stack, token, readers)).status_code == 200
            assert hub.open_streams(token_key(token)) == 1

        async def released() -> bool:
            return bool(hub.open_streams(token_key(token)) == 0)

        await wait_for(released, timeout=5, what="the stream's subscription released")


async def stream_until_cancelled(app: Any, token: str) -> list[int]:
    """Run one event-stream request and cancel its task (anyio-style) once the first event was sent."""
    started = anyio.Event()
    statuses: list[int] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": EVENTS,
        "raw_path": EVENTS.encode(),
        "root_path": "",
        "query_string": f"token={token}".encode(),
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 1),
        "server": ("gateway.test", 80),
    }

    async def receive() -> dict[str, object]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))
        elif message.get("body"):
            started.set()

    async def serve() -> None:
        await app(scope, receive, send)

    async with anyio.create_task_group() as group:
        group.start_soon(serve)
        await started.wait()
        group.cancel_scope.cancel()
    return statuses


async def test_a_cancelled_stream_gives_its_slot_back(settings: Settings) -> None:
    """A server or middleware may cancel the request's task instead of reporting a disconnect (anyio cancel
    scopes re-cancel every await in the clean-up): the token's slot must still be released."""
    token = token_for(settings, new_salon_id())
    async with running_gateway(settings, OPTIONS) as (app, _):
        for _ in range(OPTIONS.max_streams_per_token + 1):
            assert await stream_until_cancelled(app, token) == [200]
            assert app.state.hub.open_streams(token_key(token)) == 0
