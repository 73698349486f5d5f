"""Every whatsapp integration test leaves its sessions parked, so later tests' workers don't pick them up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.whatsapp.helpers import park_created


@pytest.fixture(autouse=True)
async def _park_sessions(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    yield
    await park_created(sessionmaker)
