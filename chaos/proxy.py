"""A small TCP proxy on 127.0.0.1 that adds latency, cuts and resets connections, or refuses new ones.

The services reach RabbitMQ (and PostgreSQL) through it, so a scenario can break *their* connections
without touching the real broker or database other people's tests use. Only loopback is ever proxied.

Each proxy runs on the event loop of a thread of its own (:class:`ProxyRunner`): a caller that blocks
(starting a process, waiting for it) never stalls the traffic that process needs to come up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LISTEN_HOST = "127.0.0.1"
CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0
_CONTROL_TIMEOUT_S = 10.0

T = TypeVar("T")


class NotLoopback(ValueError):
    """The proxy only forwards to this machine's loopback interface."""


def require_loopback(host: str) -> str:
    """`host` if it is a loopback name or address (NotLoopback otherwise)."""
    if host not in LOOPBACK_HOSTS:
        raise NotLoopback(f"refusing to proxy to {host!r}: chaos runs target 127.0.0.1 only")
    return host


@dataclass
class ProxyStats:
    """What the proxy did so far."""

    accepted: int = 0
    refused: int = 0
    cut: int = 0
    reset: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close at once with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: client ⇄ upstream, each direction delayed by the proxy's current latency."""

    def __init__(
        self,
        proxy: TcpProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.up_reader, self.up_writer = upstream
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Pump both directions until either side ends; then close both."""
        self._tasks = [
            asyncio.create_task(self._pump(self.client_reader, self.up_writer, up=True)),
            asyncio.create_task(self._pump(self.up_reader, self.client_writer, up=False)),
        ]
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if up:
                    self.proxy.stats.bytes_up += len(data)
                else:
                    self.proxy.stats.bytes_down += len(data)
                # Never earlier than the chunk before it: latency must not reorder the stream.
                last_due = max(last_due, time.monotonic() + self.proxy.delay())
                queue.put_nowait((last_due, data))
                if sender.done():
                    break
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # The other direction ended: what is still queued here goes nowhere.
            sender.cancel()
            raise
        # The stream ended: deliver what is queued (late by the latency), then let the link close.
        queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await sender

    @staticmethod
    async def _send(queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter) -> None:
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    def close(self) -> None:
        """Close both sockets (FIN)."""
        for writer in (self.client_writer, self.up_writer):
            with contextlib.suppress(Exception):
                writer.close()

    def reset(self) -> None:
        """Abort both sockets with RST."""
        for writer in (self.client_writer, self.up_writer):
            with contextlib.suppress(Exception):
                _abort_with_rst(writer)


class TcpProxy:
    """Forwards `127.0.0.1:<port>` to a loopback upstream; latency, cuts, resets and refusals on demand."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "proxy",
        rng: random.Random | None = None,
    ) -> None:
        self.upstream_host = require_loopback(upstream_host)
        self.upstream_port = upstream_port
        self.listen_port = listen_port
        self.name = name
        self.stats = ProxyStats()
        self.latency_s = 0.0
        self.jitter_s = 0.0
        self.refusing = False
        self._rng = rng or random.Random()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port the proxy listens on (after `start`)."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    @property
    def open_links(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    def delay(self) -> float:
        """The delay for the next chunk: latency plus a uniform jitter."""
        if self.latency_s <= 0 and self.jitter_s <= 0:
            return 0.0
        return max(0.0, self.latency_s + self._rng.uniform(0.0, self.jitter_s))

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port unless `listen_port` was given)."""
        self._server = await asyncio.start_server(self._accept, LISTEN_HOST, self.listen_port, reuse_address=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if self.refusing:
                self.stats.refused += 1
                _abort_with_rst(writer)
                return
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.upstream_host, self.upstream_port), timeout=_CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                self.stats.refused += 1
                _abort_with_rst(writer)
                return
            self.stats.accepted += 1
            link = _Link(self, (reader, writer), upstream)
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        finally:
            if task is not None:
                self._handlers.discard(task)

    def set_latency(self, latency_s: float, jitter_s: float = 0.0) -> None:
        """Delay every chunk in both directions by `latency_s` plus up to `jitter_s`."""
        self.latency_s = max(0.0, latency_s)
        self.jitter_s = max(0.0, jitter_s)

    def cut(self) -> int:
        """Close every proxied connection (FIN both ways); returns how many."""
        links = list(self._links)
        for link in links:
            link.close()
        self.stats.cut += len(links)
        return len(links)

    def reset(self) -> int:
        """Abort every proxied connection with RST; returns how many."""
        links = list(self._links)
        for link in links:
            link.reset()
        self.stats.reset += len(links)
        return len(links)

    def down(self) -> int:
        """The upstream is gone: cut what is open and refuse new connections (RST) until `up`."""
        self.refusing = True
        return self.cut()

    def up(self) -> None:
        """Accept and forward new connections again."""
        self.refusing = False

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self.refusing = True
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)


class ProxyRunner:
    """An event loop on a daemon thread that hosts proxies; its methods are safe to call from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxies", daemon=True)
        self._thread.start()
        self._proxies: list[TcpProxy] = []

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the proxies' loop and return its result."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped)

    def run(self, coro_fn: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function on the proxies' loop and wait for its result."""

        async def wrapped() -> T:
            return await coro_fn()

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout=_CONTROL_TIMEOUT_S)

    def start_proxy(self, upstream_port: int, *, name: str, upstream_host: str = "127.0.0.1") -> ProxyHandle:
        """A started proxy to `upstream_host:upstream_port`, controlled through the returned handle."""
        proxy = TcpProxy(upstream_port, upstream_host=upstream_host, name=name)
        self.run(proxy.start)
        self._proxies.append(proxy)
        return ProxyHandle(self, proxy)

    def close(self) -> None:
        """Close every proxy and stop the loop."""
        for proxy in self._proxies:
            with contextlib.suppress(Exception):
                self.run(proxy.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


class ProxyHandle:
    """Thread-safe controls of one proxy running on a :class:`ProxyRunner`."""

    def __init__(self, runner: ProxyRunner, proxy: TcpProxy) -> None:
        self._runner = runner
        self._proxy = proxy
        self.port = proxy.port
        self.name = proxy.name

    def set_latency(self, latency_s: float, jitter_s: float = 0.0) -> None:
        """Add latency (and jitter) to every chunk."""
        self._runner.call(lambda: self._proxy.set_latency(latency_s, jitter_s))

    def cut(self) -> int:
        """Close every open connection (FIN)."""
        return self._runner.call(self._proxy.cut)

    def reset(self) -> int:
        """Abort every open connection (RST)."""
        return self._runner.call(self._proxy.reset)

    def down(self) -> int:
        """Cut everything and refuse new connections."""
        return self._runner.call(self._proxy.down)

    def up(self) -> None:
        """Accept new connections again."""
        self._runner.call(self._proxy.up)

    def stats(self) -> ProxyStats:
        """A copy of the counters."""
        return self._runner.call(lambda: ProxyStats(**vars(self._proxy.stats)))

    def open_links(self) -> int:
        """Connections currently proxied."""
        return self._runner.call(lambda: self._proxy.open_links)
