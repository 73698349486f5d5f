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


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (the whatsapp load check)."""
    config.addinivalue_line("markers", "slow: long-running load checks; run them with `-m slow`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests run only when selected with ``-m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow load check: run with `-m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
