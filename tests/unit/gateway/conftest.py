"""Fixtures for the gateway tests: the app running in-process against this session's broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from fastapi import FastAPI

from shared.bus.broker import Broker
from shared.bus.topology import declare_all
from shared.config import Settings
from tests.unit.gateway.gateway_support import Spy, running_gateway

MakeSpy = Callable[..., Awaitable[Spy]]


@pytest.fixture(scope="module")
async def gateway(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One gateway per test module, connected to the session's broker and database."""
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
def client(gateway: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    """An httpx client talking to the in-process gateway."""
    return gateway[1]


@pytest.fixture
def app(gateway: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    """The in-process gateway app."""
    return gateway[0]


@pytest.fixture
async def channel(broker: Broker, settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel for reading queues; the whole topology is declared first."""
    ch = await broker.open_channel(publisher_confirms=False)
    await declare_all(ch, settings.RETRY_DELAYS_MS)
    yield ch
    if not ch.is_closed:
        await ch.close()


@pytest.fixture
def spy(channel: AbstractChannel) -> MakeSpy:
    """A factory of spy queues bound to routing keys."""

    async def make(*routing_keys: str) -> Spy:
        return await Spy.bind(channel, *routing_keys)

    return make
