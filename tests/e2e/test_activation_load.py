"""100 salons activating at once against the sandbox's real limit (5 per second, 200 per minute): no 429, all active.

The registration worker enriches the same 100 salons from YClients meanwhile, in another process: both go
through the one limiter in PostgreSQL. About 200 calls at 5 per second (plus the jitter margin) take ~50 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.config import Settings
from shared.db.models import Company
from shared.messages import WhatsAppConnected, session_id_for
from tests.integration.activation.e2e_support import activation_stack, click_connect, sha256, wait_registered
from tests.support.processes import Stack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e
Sessions = async_sessionmaker[AsyncSession]
SALONS = list(range(962_320_000, 962_320_100))
# The platform's limit, for checking the sandbox's log of arrivals independently of its own counter.
PER_SECOND, PER_MINUTE = 5, 200


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str]) -> Iterator[Stack]:
    # WhatsApp is "linked" by publishing its event: pairing 100 emulated phones is not what this test measures.
    with activation_stack(test_env, "activation_load", whatsapp=False) as started:
        yield started


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Broker]:
    broker = Broker(settings.RABBITMQ_URL, name="activation-load", publish_timeout_s=5)
    await broker.connect(attempts=5)
    yield broker
    await broker.close()


async def statuses(sm: Sessions) -> dict[str, int]:
    async with sm() as s:
        rows = await s.execute(
            select(Company.integration_status, func.count())
            .where(Company.yclients_id.in_(SALONS))
            .group_by(Company.integration_status)
        )
        return {status: int(count) for status, count in rows.all()}


def most_in_any_window(times: list[float], seconds: float) -> int:
    ordered = sorted(times)
    return max(sum(1 for s in ordered if end - seconds < s <= end) for end in ordered)


async def test_100_salons_at_once_stay_within_the_limit_and_all_become_active(
    stack: Stack, bus: Broker, sessionmaker: Sessions
) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        # Two multi-location installs of 50 branches (the most one redirect carries).
        await click_connect(http, stack, SALONS[:50])
        await click_connect(http, stack, SALONS[50:])
        await wait_registered(sessionmaker, SALONS, timeout=60)
        await asyncio.gather(
            *(
                bus.publish(WhatsAppConnected(salon_id=s, data={"session_id": session_id_for(s), "phone": None}))
                for s in SALONS
            )
        )

        async def all_active() -> bool:
            return (await statuses(sessionmaker)).get("active") == len(SALONS)

        await wait_for(all_active, timeout=150, interval=1, what="100 salons active")
        elapsed = time.monotonic() - started

        async def all_enriched() -> bool:
            # Enrichment shares the limit with the callbacks (fewer in flight, so it finishes later).
            async with sessionmaker() as s:
                missing = await s.execute(
                    select(func.count()).where(Company.yclients_id.in_(SALONS), Company.enriched_at.is_(None))
                )
                return int(missing.scalar_one()) == 0

        await wait_for(all_enriched, timeout=120, interval=1, what="100 salons enriched")
        calls = (await http.get(f"{stack.url('sandbox')}/__sandbox/calls")).json()
        installs = (await http.get(f"{stack.url('sandbox')}/__sandbox/installs")).json()

    assert [c for c in calls if c["rate_limited"] or c["status"] == 429] == []
    callbacks = [c for c in calls if c["endpoint"] == "callback"]
    assert sorted(c["body"]["salon_id"] for c in callbacks) == SALONS  # one callback per salon, no retry needed
    assert sum(1 for c in calls if c["endpoint"] == "company") >= len(SALONS)
    arrivals = [_seconds(c["at"]) for c in calls if c["endpoint"] != "other"]
    assert most_in_any_window(arrivals, 1.0) <= PER_SECOND
    assert most_in_any_window(arrivals, 60.0) <= PER_MINUTE
    by_salon = {i["salon_id"]: i for i in installs}
    async with sessionmaker() as s:
        rows = (await s.execute(select(Company).where(Company.yclients_id.in_(SALONS)))).scalars().all()
    assert all(r.api_key_hash == sha256(by_salon[r.yclients_id]["api_key"]) for r in rows)
    print(f"\n100 salons active in {elapsed:.1f} s with {len(calls)} YClients calls, no 429")


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
