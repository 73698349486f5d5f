"""Outages always end, even when the scenario holding them is cancelled; the proxy outage really cuts."""

from __future__ import annotations

import asyncio

import pytest

from chaos.faults import ProxyOutage, hold_outage
from chaos.proxy import ProxyRunner


class RecordingOutage:
    """An outage that records when it began and ended."""

    description = "recording"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def begin(self) -> None:
        self.calls.append("begin")

    async def end(self) -> None:
        self.calls.append("end")


async def test_an_outage_begins_holds_and_ends() -> None:
    outage = RecordingOutage()
    await hold_outage(outage, 0.01)
    assert outage.calls == ["begin", "end"]


async def test_a_cancelled_scenario_still_ends_its_outage() -> None:
    outage = RecordingOutage()
    task = asyncio.create_task(hold_outage(outage, 60))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outage.calls == ["begin", "end"]


async def answers(port: int) -> bool:
    """True when a connection through the proxy gets its bytes echoed."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        data = await asyncio.wait_for(reader.read(10), timeout=5)
        writer.close()
    except ConnectionError:
        return False
    return data == b"x"


async def test_the_proxy_outage_refuses_connections_until_it_ends() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    runner = ProxyRunner()
    try:
        handle = runner.start_proxy(int(upstream.sockets[0].getsockname()[1]), name="db")
        outage = ProxyOutage(handle, "PostgreSQL")
        await outage.begin()
        assert not await answers(handle.port)
        await outage.end()
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"back")
        assert await asyncio.wait_for(reader.read(10), timeout=5) == b"back"
        writer.close()
        assert handle.stats().refused == 1
    finally:
        runner.close()
        upstream.close()
