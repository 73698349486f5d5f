"""`python -m services.gateway` as a process: starts without the broker, recovers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr

from shared.tokens import issue_onboarding_token
from tests.integration.gateway.sse_support import EventReader
from tests.support.processes import free_port, running_stack
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@asynccontextmanager
async def tcp_proxy(port: int, target_host: str, target_port: int) -> AsyncIterator[None]:
    """Forward `port` to the target while the block runs: a broker that "comes back" when it starts."""
    connections: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(handle(reader, writer))
        connections.add(task)
        task.add_done_callback(connections.discard)

    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        with suppress(Exception):
            await asyncio.gather(*connections, return_exceptions=True)


async def status_of(client: httpx.AsyncClient, url: str) -> int:
    try:
        return (await client.get(url)).status_code
    except httpx.HTTPError:
        return 0


async def test_the_gateway_starts_without_the_broker_and_becomes_ready_when_it_appears(
    test_env: dict[str, str],
) -> None:
    amqp = urlsplit(test_env["RABBITMQ_URL"])
    proxy_port = free_port()
    via_proxy = urlunsplit(amqp._replace(netloc=f"{amqp.username}:{amqp.password}@127.0.0.1:{proxy_port}"))
    with running_stack(test_env, "gateway-broker-late") as stack:
        gateway = stack.start("gateway", wait=False, RABBITMQ_URL=via_proxy)
        async with httpx.AsyncClient(timeout=5) as client:

            async def alive() -> bool:
                return await status_of(client, gateway.url + "/healthz") == 200

            await wait_for(alive, timeout=30, what="the gateway answering without a broker")
            ready = await client.get(gateway.url + "/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
            # The admin still gets through: the registration request waits in the outbox.
            redirect = await client.get(gateway.url + "/auth/yclients/redirect", params={"salon_id": "424242"})
            assert redirect.status_code == 302

            async with tcp_proxy(proxy_port, amqp.hostname or "127.0.0.1", amqp.port or 5672):

                async def ready_now() -> bool:
                    return await status_of(client, gateway.url + "/readyz") == 200

                await wait_for(ready_now, timeout=40, interval=0.2, what="the gateway ready once the broker is up")
                # In a thread: the proxy lives in this event loop and must keep forwarding during shutdown.
                assert await asyncio.to_thread(gateway.stop, 20) == 0
    assert "broker connected" in gateway.log_text()


async def test_sigterm_ends_open_event_streams_and_exits_cleanly(test_env: dict[str, str]) -> None:
    token = issue_onboarding_token([515151], secret=SecretStr(test_env["JWT_SECRET"]))
    with running_stack(test_env, "gateway-sigterm") as stack:
        gateway = stack.start("gateway")
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            async with client.stream(
                "GET", gateway.url + "/marketplace/api/events", params={"token": token}
            ) as response:
                events = EventReader(response)
                assert (await events.next()).name == "snapshot"
                started = time.monotonic()
                code = await asyncio.to_thread(gateway.stop, 20)
                elapsed = time.monotonic() - started
                assert await events.ended(timeout=5)
    assert code == 0, gateway.log_tail()
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s"
    assert token not in gateway.log_text()
    assert "gateway stopped" in gateway.log_text()
