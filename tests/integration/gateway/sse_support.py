"""The gateway served by uvicorn in this test's event loop (streaming needs a real server), and an SSE reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.options import GatewayOptions
from shared.config import Settings
from shared.runtime import http_server
from tests.support.processes import free_port
from tests.support.wait import wait_for
from tests.unit.gateway.gateway_support import is_ready


@dataclass
class ServedGateway:
    """A gateway listening on a local port."""

    app: FastAPI
    url: str


@asynccontextmanager
async def serving_gateway(settings: Settings, options: GatewayOptions) -> AsyncIterator[ServedGateway]:
    """Run the gateway under uvicorn until the block ends (streams are closed first, as on SIGTERM)."""
    app = create_app(settings, options)
    port = free_port()
    server = http_server(app, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())

    async def up() -> bool:
        if task.done():
            raise AssertionError(f"gateway server exited: {task.exception()!r}")
        return server.started and await is_ready(app)

    await wait_for(up, timeout=20, what="gateway served and connected")
    try:
        yield ServedGateway(app, f"http://127.0.0.1:{port}")
    finally:
        app.state.hub.close_streams()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@dataclass(frozen=True)
class Event:
    """One server-sent event (or a comment line, with name `:`)."""

    name: str
    data: Any


class EventReader:
    """Reads events off an open text/event-stream response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, *, timeout: float = 10.0, comments: bool = False) -> Event:
        """The next event (comments skipped unless asked for); AssertionError after `timeout`."""
        try:
            return await asyncio.wait_for(self._read(comments), timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"no event within {timeout}s") from None

    async def until(self, name: str, *, timeout: float = 10.0) -> tuple[Event, list[Event]]:
        """Skip to the next event called `name`; returns it and the events skipped on the way."""
        skipped: list[Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(timeout=max(0.01, deadline - loop.time()))
            if event.name == name:
                return event, skipped
            skipped.append(event)

    async def _read(self, comments: bool) -> Event:
        name, data = "message", list[str]()
        async for line in self._lines:
            if line.startswith(":"):
                if comments:
                    return Event(":", line[1:].strip())
                continue
            if line == "":
                if data:
                    return Event(name, json.loads("\n".join(data)))
                name = "message"
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        raise AssertionError("the stream ended")

    async def ended(self, *, timeout: float = 10.0) -> bool:
        """True once the server closed the stream (events before the end are ignored)."""

        async def drain() -> None:
            async for _ in self._lines:
                pass

        await asyncio.wait_for(drain(), timeout=timeout)
        return True
