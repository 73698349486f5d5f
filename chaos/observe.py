"""Reading the facts the checks need (PostgreSQL, the sandbox, the tap, the dead-letter queues) and draining."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB

from chaos.invariants import Evaluation, evaluate
from chaos.model import (
    CallbackFact,
    CompanyFacts,
    DeadFact,
    EventFact,
    InstallFacts,
    Observed,
    Op,
    SessionFacts,
)
from chaos.world import World
from shared.bus.replay import DeadQueueMissing, list_dead
from shared.bus.topology import WORK_QUEUES
from shared.db.models import Company, MarketplaceEvent, OutboxMessage, WhatsAppSession

log = logging.getLogger(__name__)
# Every work queue of the shared topology has its `.dead`.
DEAD_QUEUES = tuple(queue.name for queue in WORK_QUEUES)
POLL_S = 2.0
CALLBACK_PATH = "/marketplace/partner/callback"
_SALON_IN_PATH = re.compile(r"/(?:company|salon)/([0-9]+)")


async def _database_facts(world: World, ids: list[int], obs: Observed) -> None:
    assert world.sessionmaker is not None
    async with world.sessionmaker() as session:
        companies = await session.execute(
            select(
                Company.yclients_id,
                Company.integration_status,
                Company.whatsapp_connected,
                Company.api_key_hash,
                Company.enriched_at,
                Company.title,
            ).where(Company.yclients_id.in_(ids))
        )
        obs.companies = {
            int(r.yclients_id): CompanyFacts(
                int(r.yclients_id),
                r.integration_status,
                bool(r.whatsapp_connected),
                r.api_key_hash,
                r.enriched_at is not None,
                r.title,
            )
            for r in companies
        }
        events = await session.execute(
            select(MarketplaceEvent.salon_id, MarketplaceEvent.event_type, MarketplaceEvent.message_id).where(
                MarketplaceEvent.salon_id.in_(ids)
            )
        )
        obs.events = [
            EventFact(int(r.salon_id), r.event_type, str(r.message_id) if r.message_id else None) for r in events
        ]
        sessions = await session.execute(
            select(WhatsAppSession.salon_id, WhatsAppSession.state, WhatsAppSession.desired).where(
                WhatsAppSession.salon_id.in_(ids)
            )
        )
        obs.sessions = {int(r.salon_id): SessionFacts(int(r.salon_id), r.state, r.desired) for r in sessions}
        salon_of_row = cast(cast(func.convert_from(OutboxMessage.body, "UTF8"), JSONB)["salon_id"].astext, BigInteger)
        obs.outbox_left = int(
            (
                await session.execute(select(func.count()).select_from(OutboxMessage).where(salon_of_row.in_(ids)))
            ).scalar_one()
        )


def _salon_of_call(call: dict[str, Any]) -> int | None:
    """The salon a YClients call was about: its body's `salon_id`, or the id in its path."""
    body = call.get("body")
    value = body.get("salon_id") if isinstance(body, dict) else None
    if isinstance(value, int):
        return value
    found = _SALON_IN_PATH.search(str(call.get("path", "")))
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class CallStats:
    """What the sandbox answered to the calls about some salons."""

    total: int
    by_status: dict[str, int]
    faults: dict[str, int]
    rate_limited: int

    def describe(self) -> str:
        """One line for the notes."""
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_status.items()))
        faults = ", ".join(f"{k}: {v}" for k, v in sorted(self.faults.items())) or "none"
        return (
            f"the sandbox received {self.total} YClients calls for these salons ({statuses}); injected faults "
            f"({faults}); refused by its own 5 rps / 200 per minute limit: {self.rate_limited}"
        )


async def call_stats(world: World, salon_ids: Iterable[int]) -> CallStats:
    """Statuses, injected faults and rate-limit refusals of the YClients calls about these salons."""
    assert world.http is not None
    ids = set(salon_ids)
    response = await world.http.get(f"{world.sandbox_url}/__sandbox/calls")
    response.raise_for_status()
    calls = [c for c in response.json() if _salon_of_call(c) in ids]
    by_status = Counter(str(c.get("status")) for c in calls)
    faults = Counter(str(c["fault"]) for c in calls if c.get("fault"))
    return CallStats(len(calls), dict(by_status), dict(faults), sum(1 for c in calls if c.get("rate_limited")))


async def _sandbox_facts(world: World, ids: set[int], obs: Observed) -> None:
    assert world.http is not None
    calls = await world.http.get(
        f"{world.sandbox_url}/__sandbox/calls", params={"path": "/marketplace/partner/callback"}
    )
    calls.raise_for_status()
    obs.callbacks = [
        CallbackFact(salon_id, c.get("status"))
        for c in calls.json()
        if (salon_id := _salon_of_call(c)) is not None and salon_id in ids
    ]
    installs = await world.http.get(f"{world.sandbox_url}/__sandbox/installs")
    installs.raise_for_status()
    obs.installs = {
        int(i["salon_id"]): InstallFacts(
            int(i["salon_id"]),
            str(i["status"]),
            hashlib.sha256(i["api_key"].encode()).hexdigest() if i.get("api_key") else None,
        )
        for i in installs.json()
        if i.get("salon_id") in ids
    }


async def dead_facts(world: World, ids: set[int]) -> list[DeadFact]:
    """Messages about these salons parked in the `.dead` queues (they stay there)."""
    assert world.broker is not None
    found: list[DeadFact] = []
    for queue in DEAD_QUEUES:
        try:
            parked = await list_dead(world.broker, queue)
        except DeadQueueMissing:
            continue
        found.extend(DeadFact(queue, d.salon_id, d.type, d.message_id, d.reason) for d in parked if d.salon_id in ids)
    return found


async def collect(world: World, salon_ids: Iterable[int]) -> Observed:
    """Everything the checks read, for the given salons."""
    ids = set(salon_ids)
    obs = Observed()
    await _database_facts(world, sorted(ids), obs)
    await _sandbox_facts(world, ids, obs)
    assert world.tap is not None
    obs.published = world.tap.facts(ids)
    obs.dead = await dead_facts(world, ids)
    obs.queued = await world.queued_messages()
    return obs


@dataclass
class Drained:
    """The last observation and its verdict, and whether the system went quiet before the deadline."""

    observed: Observed
    evaluation: Evaluation
    quiet: bool
    seconds: float


async def drain(world: World, ops: list[Op], *, timeout_s: float, settle_polls: int = 2) -> Drained:
    """Poll until every acknowledged operation is applied (or parked) and nothing is queued, or until `timeout_s`."""
    started = time.monotonic()
    salons = {op.salon_id for op in ops}
    quiet_polls = 0
    while True:
        try:
            obs = await collect(world, salons)
        except Exception as exc:
            # A read cut short (the real-restart variants): try again.
            log.warning("collect failed: %r", exc)
            await asyncio.sleep(POLL_S)
            if time.monotonic() - started > timeout_s:
                raise
            continue
        verdict = evaluate(ops, obs, whatsapp_worker=world.whatsapp_worker)
        if verdict.pending == 0 and obs.outbox_left == 0 and obs.queued == 0:
            quiet_polls += 1
        else:
            quiet_polls = 0
        elapsed = time.monotonic() - started
        if quiet_polls >= settle_polls or elapsed > timeout_s:
            return Drained(obs, verdict, quiet_polls >= settle_polls, elapsed)
        await asyncio.sleep(POLL_S)
