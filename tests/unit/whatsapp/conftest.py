"""Tests here that create sessions in the real database leave them parked, so later tests' workers don't pick
them up; pure tests don't touch the database at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.whatsapp.helpers import has_created_sessions, park_created


@pytest.fixture(autouse=True)
async def _park_sessions(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if has_created_sessions():
        await park_created(request.getfixturevalue("sessionmaker"))
