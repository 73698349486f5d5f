"""Fixtures for the YClients sandbox tests: an in-process app, a fake clock, a recording gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from sandbox.yclients.app import create_app
from sandbox.yclients.options import SandboxOptions
from shared.config import Settings
from tests.unit.sandbox.sandbox_support import APP_ID, GATEWAY, TOKEN, FakeClock, Gateway


@pytest.fixture
def settings() -> Settings:
    return Settings(
        ENVIRONMENT="test",
        YCLIENTS_PARTNER_TOKEN=SecretStr(TOKEN),
        YCLIENTS_APP_ID=APP_ID,
        BASE_URL=GATEWAY,
        YCLIENTS_UI_URL="https://yclients.example/",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
def options() -> SandboxOptions:
    return SandboxOptions(hang_s=30.0, slow_s=0.05)


@pytest.fixture
async def client(
    settings: Settings, options: SandboxOptions, gateway: Gateway, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, options=options, gateway_transport=httpx.MockTransport(gateway), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as http:
        yield http
