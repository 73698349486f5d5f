"""PostgreSQL LISTEN for the worker: wake-ups for commands and for the emulated server's changes.

One dedicated asyncpg connection per worker listens on the channels subscribed. A notification is only a
hint ("look at session X"); the state itself is always read from the tables. If the connection drops, it is
re-opened with backoff and every ``on_ready`` callback runs, so whatever was notified meanwhile is re-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def asyncpg_dsn(database_url: str) -> str:
    """The plain ``postgresql://`` DSN of a SQLAlchemy URL (``postgresql+asyncpg://`` ...)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """Dispatches notifications of subscribed channels to callbacks, keeping its connection alive."""

    def __init__(self, database_url: str, *, ping_s: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._ping_s = ping_s
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._on_ready: list[Callable[[], None]] = []
        self.connected = asyncio.Event()

    def subscribe(self, channel: str, handler: Callable[[str], None]) -> None:
        """Call ``handler(payload)`` for each notification on ``channel`` (subscribe before ``run``)."""
        self._handlers.setdefault(channel, []).append(handler)

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each (re)connection, to re-check what may have been missed."""
        self._on_ready.append(callback)

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for handler in self._handlers.get(channel, []):
            try:
                handler(payload)
            except Exception as exc:
                log.warning("notification handler failed", extra={"channel": channel, "error": repr(exc)})

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set, reconnecting with backoff."""
        delay = 0.5
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                for channel in self._handlers:
                    await conn.add_listener(channel, self._dispatch)
                self.connected.set()
                delay = 0.5
                for callback in self._on_ready:
                    callback()
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._ping_s)
                    if not stop.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notification listener disconnected", extra={"error": repr(exc), "retry_in_s": delay})
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 10.0)
