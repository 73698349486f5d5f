"""Helpers for the activation tests: salons in the database, the sandbox in-process, a database text dump."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import ActivationAttempt, Company, MarketplaceEvent
from shared.messages import RequestActivation, WhatsAppConnected, session_id_for

SANDBOX_URL = "http://sandbox.test"
# Salon ids of their own, so tests of other modules sharing this session's database never collide.
_ids = itertools.count(random.randint(400_000_000, 800_000_000) // 1000 * 1000)


def new_salon_id() -> int:
    """A salon id no other test uses."""
    return next(_ids)


async def add_company(
    sm: async_sessionmaker[AsyncSession],
    salon_id: int,
    *,
    status: str = "pending_whatsapp",
    connected: bool = False,
    api_key_hash: str | None = None,
) -> int:
    """Insert a company as registration leaves it; returns its id."""
    async with sm() as s:
        row = Company(
            yclients_id=salon_id,
            title=f"Салон {salon_id}",
            integration_status=status,
            whatsapp_connected=connected,
            api_key_hash=api_key_hash,
        )
        s.add(row)
        await s.commit()
        return row.id


async def company(sm: async_sessionmaker[AsyncSession], salon_id: int) -> Company:
    """The salon's company row as committed."""
    async with sm() as s:
        return (await s.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one()


async def attempts(sm: async_sessionmaker[AsyncSession], salon_id: int) -> list[ActivationAttempt]:
    """The salon's activation_attempts rows, oldest first."""
    async with sm() as s:
        rows = await s.execute(
            select(ActivationAttempt).where(ActivationAttempt.salon_id == salon_id).order_by(ActivationAttempt.id)
        )
        return list(rows.scalars())


async def events(sm: async_sessionmaker[AsyncSession], salon_id: int, event_type: str | None = None) -> list[Any]:
    """The salon's marketplace_events rows (of one type), oldest first."""
    async with sm() as s:
        query = select(MarketplaceEvent).where(MarketplaceEvent.salon_id == salon_id)
        if event_type is not None:
            query = query.where(MarketplaceEvent.event_type == event_type)
        return list((await s.execute(query.order_by(MarketplaceEvent.id))).scalars())


async def database_text(sm: async_sessionmaker[AsyncSession]) -> str:
    """Every row of every table as text (binary columns decoded as escaped text), to search for a secret."""
    async with sm() as s:
        columns = (
            await s.execute(
                text(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
                )
            )
        ).all()
        tables: dict[str, list[str]] = {}
        for table, column, data_type in columns:
            expr = f"encode(\"{column}\", 'escape')" if data_type == "bytea" else f'"{column}"::text'
            tables.setdefault(table, []).append(expr)
        parts: list[str] = []
        for table, exprs in tables.items():
            rows = await s.execute(text(f"SELECT concat_ws('|', {', '.join(exprs)}) FROM \"{table}\""))  # noqa: S608
            parts.extend(str(r[0]) for r in rows)
        return "\n".join(parts)


def connected(salon_id: int, phone: str = "79001234567") -> WhatsAppConnected:
    """The WhatsApp worker's event for a linked salon."""
    return WhatsAppConnected(salon_id=salon_id, data={"session_id": session_id_for(salon_id), "phone": phone})


def manual(salon_id: int) -> RequestActivation:
    """A manual activation request (the page's button)."""
    return RequestActivation(salon_id=salon_id, data={"salon_id": salon_id, "reason": "manual"})


class TimeoutTransport(httpx.AsyncBaseTransport):
    """Gives up on an answer after `timeout_s`, as a real connection would (ASGITransport has no timeouts)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, timeout_s: float) -> None:
        self.inner = inner
        self.timeout_s = timeout_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request; raise ReadTimeout when the answer is late."""
        try:
            return await asyncio.wait_for(self.inner.handle_async_request(request), self.timeout_s)
        except TimeoutError:
            raise httpx.ReadTimeout("timed out", request=request) from None


async def sandbox_calls(sandbox: httpx.AsyncClient, endpoint: str | None = None) -> list[dict[str, Any]]:
    """The calls the sandbox recorded (of one endpoint: callback, status, company ...)."""
    calls: list[dict[str, Any]] = (await sandbox.get("/__sandbox/calls")).json()
    return [c for c in calls if endpoint is None or c["endpoint"] == endpoint]


async def sandbox_install(sandbox: httpx.AsyncClient, salon_id: int) -> dict[str, Any] | None:
    """The sandbox's install of our app on a salon (with the api_key it received)."""
    installs: list[dict[str, Any]] = (await sandbox.get("/__sandbox/installs")).json()
    return next((i for i in installs if i["salon_id"] == salon_id), None)
