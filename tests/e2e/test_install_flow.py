"""The install redirect end to end: sandbox marketplace → gateway → RabbitMQ → registration → Postgres."""

from __future__ import annotations

import itertools
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sandbox.yclients.profiles import salon as salon_profile
from shared.db.models import Company, MarketplaceEvent
from tests.support.processes import Stack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e
_ids = itertools.count(700_100)


async def click_connect(client: httpx.AsyncClient, stack: Stack, salon_id: int) -> httpx.Response:
    """What the admin's browser does: marketplace «Подключить» → our redirect (not followed further)."""
    to_us = await client.get(f"{stack.url('sandbox')}/marketplace/connect", params={"salon_id": salon_id})
    assert to_us.status_code in (302, 303), to_us.text
    location = to_us.headers["location"]
    assert location.startswith(stack.url("gateway") + "/auth/yclients/redirect?")
    assert "user_data_sign=" in location
    return await client.get(location)


def sandbox_title(salon_id: int) -> str:
    """The title YClients (the sandbox) has for the salon; read from its data, not its API, whose 5 rps budget
    belongs to the services under test."""
    profile = salon_profile(salon_id)
    assert profile is not None
    return profile.title


async def company_row(sm: async_sessionmaker[AsyncSession], salon_id: int) -> Company | None:
    async with sm() as s:
        return (await s.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one_or_none()


async def count_rows(sm: async_sessionmaker[AsyncSession], salon_id: int) -> tuple[int, int]:
    async with sm() as s:
        companies = (await s.execute(select(func.count()).where(Company.yclients_id == salon_id))).scalar_one()
        started = (
            await s.execute(
                select(func.count()).where(
                    MarketplaceEvent.salon_id == salon_id, MarketplaceEvent.event_type == "registration_started"
                )
            )
        ).scalar_one()
    return int(companies), int(started)


async def test_click_path_shows_the_salon_title_from_yclients(
    install_stack: Stack, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = next(_ids)
    async with httpx.AsyncClient(timeout=10) as client:
        redirect = await click_connect(client, install_stack, salon_id)
        assert redirect.status_code == 302, redirect.text
        onboarding = redirect.headers["location"]
        assert urlsplit(onboarding).path == "/marketplace/onboarding"
        assert parse_qs(urlsplit(onboarding).query)["token"]

        title = sandbox_title(salon_id)
        page_url = httpx.URL(install_stack.url("gateway")).join(onboarding)

        async def page_shows_title() -> bool:
            page = await client.get(page_url)
            return page.status_code == 200 and title in page.text

        await wait_for(page_shows_title, timeout=15, what="onboarding page showing the YClients title")

    assert await count_rows(sessionmaker, salon_id) == (1, 1)
    row = await company_row(sessionmaker, salon_id)
    assert row is not None and row.integration_status == "pending_whatsapp"
    assert row.marketplace_user_name  # the signed user_data reached the database


async def test_the_same_redirect_twice_keeps_one_company(
    install_stack: Stack, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = next(_ids)
    async with httpx.AsyncClient(timeout=10) as client:
        to_us = await client.get(f"{install_stack.url('sandbox')}/marketplace/connect", params={"salon_id": salon_id})
        location = to_us.headers["location"]
        first = await client.get(location)
        second = await client.get(location)
    assert first.status_code == second.status_code == 302

    async def two_registrations_applied() -> bool:
        return (await count_rows(sessionmaker, salon_id))[1] == 2

    await wait_for(two_registrations_applied, timeout=15, what="both registrations applied")
    assert (await count_rows(sessionmaker, salon_id))[0] == 1


async def test_yclients_down_still_redirects_and_recovers_the_title(
    install_stack: Stack, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = next(_ids)
    sandbox = install_stack.url("sandbox")
    async with httpx.AsyncClient(timeout=10) as client:
        fault = await client.post(f"{sandbox}/__sandbox/faults", json={"endpoint": "company", "mode": "5xx"})
        assert fault.status_code in (200, 201), fault.text
        try:
            redirect = await click_connect(client, install_stack, salon_id)
            assert redirect.status_code == 302

            async def registered_with_fallback() -> Company | None:
                row = await company_row(sessionmaker, salon_id)
                return row if row is not None else None

            row = await wait_for(registered_with_fallback, timeout=15, what="company registered while YClients is down")
            assert row.title == f"Салон {salon_id}"
            assert row.enriched_at is None

            async def enrichment_was_tried() -> bool:
                calls = (await client.get(f"{sandbox}/__sandbox/calls")).json()
                entries = calls if isinstance(calls, list) else calls.get("calls", [])
                return any(re.search(rf"/company/{salon_id}/?$", c["path"]) and c["status"] >= 500 for c in entries)

            await wait_for(enrichment_was_tried, timeout=15, what="enrichment attempted against the failing sandbox")
        finally:
            await client.delete(f"{sandbox}/__sandbox/faults")

        title = sandbox_title(salon_id)

    async def real_title() -> bool:
        row = await company_row(sessionmaker, salon_id)
        return row is not None and row.title == title

    # RETRY_DELAYS_MS in tests is [200, 400]: the retries finish within a second once YClients answers again.
    await wait_for(real_title, timeout=20, what="the real title after YClients recovered")
