"""A tap on the exchange: a durable queue bound to every routing key, so the checks see each message published.

It connects to the real broker directly (not through the proxy the services use), survives a broker restart
(robust connection, durable queue, persistent messages), and keeps one record per delivery; the checks count
distinct message ids, so the at-least-once copies of a relay are not mistaken for duplicate effects.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from chaos.model import PublishedFact
from shared.bus.topology import EXCHANGE, declare_exchange
from shared.messages import salon_id_from_session

log = logging.getLogger(__name__)
TAP_QUEUE = "chaos.tap"


def published_fact(body: bytes, message_id: str | None = None) -> PublishedFact | None:
    """What the checks need from one envelope (None for a body that is not one)."""
    try:
        raw: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    data: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
    salon_id = raw.get("salon_id")
    if not isinstance(salon_id, int):
        salon_id = data.get("salon_id") if isinstance(data.get("salon_id"), int) else None
    if salon_id is None and isinstance(data.get("session_id"), str):
        with contextlib.suppress(ValueError):
            salon_id = salon_id_from_session(data["session_id"])
    msg_id = raw.get("id") or message_id
    msg_type = raw.get("type")
    if not isinstance(msg_id, str) or not isinstance(msg_type, str):
        return None
    status = data.get("status") if isinstance(data.get("status"), str) else None
    correlation = raw.get("correlation_id") if isinstance(raw.get("correlation_id"), str) else None
    return PublishedFact(msg_id, msg_type, salon_id, correlation, status)


class Tap:
    """Records every message published to the `marketplace` exchange of one vhost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.records: list[PublishedFact] = []
        self.deliveries = 0
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def start(self) -> None:
        """Declare the tap queue, bind it to `#`, and start recording."""
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "chaos-tap"}, timeout=10
        )
        channel = await self._connection.channel()
        self._channel = channel
        await channel.set_qos(prefetch_count=500)
        await declare_exchange(channel)
        queue = await channel.declare_queue(TAP_QUEUE, durable=True)
        await queue.bind(EXCHANGE, routing_key="#")
        await queue.consume(self._on_message)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        self.deliveries += 1
        fact = published_fact(incoming.body, incoming.message_id)
        if fact is not None:
            self.records.append(fact)
        await incoming.ack()

    def facts(self, salon_ids: set[int]) -> list[PublishedFact]:
        """Records about the given salons."""
        return [r for r in self.records if r.salon_id in salon_ids]

    async def close(self) -> None:
        """Delete the tap queue and disconnect."""
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.queue_delete(TAP_QUEUE)
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
