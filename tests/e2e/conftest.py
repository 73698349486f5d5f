"""Fixtures for end-to-end tests: the services as real processes on this session's database and vhost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from shared.bus.broker import Broker
from shared.config import Settings
from tests.support.processes import Stack, running_stack


@pytest.fixture(scope="module")
def install_stack(test_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Sandbox, gateway and registration worker, started once per test module."""
    label = request.module.__name__.rsplit(".", 1)[-1]
    with running_stack(test_env, label) as stack:
        stack.start("sandbox")
        stack.start("gateway")
        # Retries long enough (≈ 9 s in all) for a test to bring the sandbox back between two of them.
        stack.start("registration", RETRY_DELAYS_MS="[300,600,1200,2400,4800]")
        yield stack


@pytest.fixture(scope="module")
async def publisher(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A broker connection for the test module to publish commands and bind its observation queues."""
    broker = Broker(settings.RABBITMQ_URL, name=request.module.__name__.rsplit(".", 1)[-1], publish_timeout_s=3)
    await broker.connect(attempts=3)
    yield broker
    await broker.close()
