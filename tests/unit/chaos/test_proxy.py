"""The chaos TCP proxy on loopback: forwards, delays, cuts, resets, refuses, and never leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from chaos.proxy import NotLoopback, ProxyRunner, TcpProxy, require_loopback


class EchoServer:
    """An upstream that echoes every byte back, on a free loopback port."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    @staticmethod
    async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    echo = EchoServer()
    port = await echo.start()
    p = TcpProxy(port, name="test")
    await p.start()
    yield p
    await p.close()
    await echo.close()


async def roundtrip(port: int, payload: bytes) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), timeout=5)
    elapsed = time.monotonic() - started
    writer.close()
    return data, elapsed


async def test_bytes_pass_through_unchanged_and_in_order(proxy: TcpProxy) -> None:
    payload = bytes(range(256)) * 1000
    data, _ = await roundtrip(proxy.port, payload)
    assert data == payload
    assert proxy.stats.accepted == 1
    assert proxy.stats.bytes_up == len(payload)


async def test_latency_delays_each_direction_without_reordering(proxy: TcpProxy) -> None:
    proxy.set_latency(0.15)
    payload = b"".join(i.to_bytes(4, "big") for i in range(20000))
    data, elapsed = await roundtrip(proxy.port, payload)
    assert data == payload
    # Up and back: at least two latencies.
    assert elapsed >= 0.29


async def test_cut_closes_open_connections_and_new_ones_still_work(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), timeout=5) == b"ping"
    assert proxy.cut() == 1
    assert await asyncio.wait_for(reader.read(10), timeout=5) == b""  # EOF: the connection is gone
    writer.close()
    data, _ = await roundtrip(proxy.port, b"again")
    assert data == b"again"


async def test_reset_aborts_with_rst(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), timeout=5) == b"ping"
    assert proxy.reset() == 1
    with pytest.raises(ConnectionResetError):
        for _ in range(50):
            data = await asyncio.wait_for(reader.read(10), timeout=5)
            if not data:
                break
            writer.write(b"x")
            await writer.drain()
    writer.close()
    assert proxy.stats.reset == 1


async def test_down_refuses_new_connections_until_up(proxy: TcpProxy) -> None:
    proxy.down()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        writer.write(b"ping")
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(4), timeout=5)
    writer.close()
    assert proxy.stats.refused == 1
    proxy.up()
    data, _ = await roundtrip(proxy.port, b"back")
    assert data == b"back"


async def test_an_upstream_that_is_down_looks_like_a_refused_connection() -> None:
    echo = EchoServer()
    port = await echo.start()
    await echo.close()
    assert echo.server is not None
    await echo.server.wait_closed()
    p = TcpProxy(port)
    await p.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            writer.write(b"ping")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(4), timeout=5)
        writer.close()
    finally:
        await p.close()


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0", "192.168.1.5"])  # noqa: S104 - refused, not bound
def test_only_loopback_upstreams_are_accepted(host: str) -> None:
    with pytest.raises(NotLoopback):
        require_loopback(host)
    with pytest.raises(NotLoopback):
        TcpProxy(5672, upstream_host=host)


async def test_the_runner_keeps_forwarding_while_its_caller_blocks() -> None:
    echo = EchoServer()
    port = await echo.start()
    runner = ProxyRunner()
    try:
        handle = runner.start_proxy(port, name="threaded")
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), timeout=5) == b"hello"
        assert handle.open_links() == 1
        assert handle.down() == 1
        assert handle.stats().cut == 1
        handle.up()
        writer.close()
    finally:
        runner.close()
        await echo.close()
