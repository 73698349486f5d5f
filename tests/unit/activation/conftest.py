"""Fixtures for the activation unit tests: the YClients sandbox in-process and a client talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from sandbox.yclients.app import create_app
from sandbox.yclients.options import SandboxOptions
from shared.config import Settings
from shared.yclients import YClientsClient
from tests.unit.activation.support import SANDBOX_URL, TimeoutTransport

# How long our client waits for the sandbox here (a "lost response" is an answer later than this).
CLIENT_TIMEOUT_S = 1.0


@pytest.fixture
def sandbox_app(settings: Settings) -> FastAPI:
    """A fresh sandbox without rate limits (the limiter has its own tests) that answers webhooks with 200."""
    options = SandboxOptions(rate_per_second=None, rate_per_minute=None, hang_s=5.0, slow_s=0.5)
    return create_app(settings, options=options, gateway_transport=httpx.MockTransport(lambda _: httpx.Response(200)))


@pytest.fixture
async def sandbox(sandbox_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's control API."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox_app), base_url=SANDBOX_URL) as http:
        yield http


@pytest.fixture
async def yclients(sandbox_app: FastAPI, settings: Settings) -> AsyncIterator[YClientsClient]:
    """Our YClients client, pointed at the sandbox."""
    transport = TimeoutTransport(httpx.ASGITransport(app=sandbox_app), CLIENT_TIMEOUT_S)
    async with httpx.AsyncClient(transport=transport) as http:
        yield YClientsClient(
            http,
            base_url=SANDBOX_URL,
            partner_token=settings.YCLIENTS_PARTNER_TOKEN,
            application_id=settings.YCLIENTS_APP_ID,
        )
