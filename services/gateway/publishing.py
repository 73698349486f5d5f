"""The gateway never acknowledges what it might lose: confirmed publish, else the Postgres outbox, else 503."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.bus.errors import PublishError
from shared.bus.outbox import notify_outbox
from shared.db.models import OutboxMessage
from shared.messages import Message, encode
from shared.metrics import PUBLISHED, labelled

log = logging.getLogger(__name__)
PRODUCER = "gateway"

Outcome = Literal["published", "stored"]


class Unavailable(Exception):
    """Neither the broker nor the database took the message: the caller answers 503."""


async def store_in_outbox(msg: Message, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Keep the message in the outbox for the relay (raises SQLAlchemyError/OSError when PostgreSQL is down)."""
    async with sessionmaker() as session:
        # attempts=1: the publish already failed once, so the relay takes the row without its grace period.
        session.add(OutboxMessage(id=msg.id, routing_key=msg.type, body=encode(msg), producer=PRODUCER, attempts=1))
        await notify_outbox(session)
        await session.commit()


class MessageSink:
    """Publishes a message with confirm, falling back to the outbox."""

    def __init__(self, broker: Broker, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.broker = broker
        self.sessionmaker = sessionmaker

    async def send(self, msg: Message) -> Outcome:
        """Return once the message is safe (confirmed by the broker or committed to the outbox)."""
        try:
            await self.broker.publish(msg)
            labelled(PUBLISHED, msg.type).inc()
            return "published"
        except PublishError as exc:
            log.warning("broker did not confirm; storing in outbox", extra={"error": str(exc)})
        try:
            await store_in_outbox(msg, self.sessionmaker)
            return "stored"
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.error("broker and database both unavailable", extra={"error": repr(exc)})
            raise Unavailable("broker and database unavailable") from exc


async def get_sink(request: Request) -> MessageSink:
    """The request's message sink."""
    return sink_of(request)


SinkDep = Annotated[MessageSink, Depends(get_sink)]


def sink_of(request: Request) -> MessageSink:
    """The request's message sink, for routes that take no dependencies (see `services.gateway.direct`)."""
    return MessageSink(request.app.state.broker, request.app.state.sessionmaker)
