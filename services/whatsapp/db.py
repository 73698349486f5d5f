"""Database access for thousands of sessions in one process without exhausting the connection pool.

A worker's pool has ~20 connections; 1,000 sessions pairing at once would queue 1,000 tasks on it and time
out after 30 s, lease renewal included. So the callers are split into groups, each limited by its own
semaphore (waiting there is orderly and has no timeout): session runners (``RUNNER_SLOTS``) and the engine's
I/O (emulated server, credential store: ``IO_SLOTS``). A runner step may call the engine, never the reverse,
so the two groups can't deadlock. The lease loop has a connection of its own (services/whatsapp/pool.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

RUNNER_SLOTS = 10
IO_SLOTS = 8


@contextlib.asynccontextmanager
async def open_db(
    sessionmaker: async_sessionmaker[AsyncSession], slots: asyncio.Semaphore | None, *, begin: bool = True
) -> AsyncIterator[AsyncSession]:
    """A session (in a transaction when ``begin``), once a slot is free."""
    async with contextlib.AsyncExitStack() as stack:
        if slots is not None:
            await stack.enter_async_context(slots)
        db = await stack.enter_async_context(sessionmaker())
        if begin:
            await stack.enter_async_context(db.begin())
        yield db
