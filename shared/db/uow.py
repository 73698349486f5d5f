"""The unit of work: one transaction per message or request; rollback unless committed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from sqlalchemy import delete, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import OutboxMessage
from shared.messages import Message, encode

# Core statements (not ORM-enabled ones): they are on every message's path, and the ORM's bulk layer costs
# more CPU than the round trip.
_OUTBOX_INSERT = insert(OutboxMessage.metadata.tables[OutboxMessage.__tablename__])
_CLAIM = text(
    "INSERT INTO processed_messages (consumer, message_id) SELECT :consumer, unnest(CAST(:ids AS uuid[]))"
    " ON CONFLICT DO NOTHING RETURNING message_id"
)


class UnitOfWork:
    """`async with uow: ...; await uow.commit()` — messages added with `emit` are committed with the state."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, producer: str) -> None:
        self._sessionmaker = sessionmaker
        self.producer = producer
        self._session: AsyncSession | None = None
        self.emitted: list[Message] = []
        self.committed_messages: list[Message] = []

    @property
    def session(self) -> AsyncSession:
        """The open session (only inside `async with`)."""
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessionmaker()
        self.emitted = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        try:
            await self._session.rollback()
        finally:
            await self._session.close()
            self._session = None
            self.emitted = []

    async def commit(self) -> None:
        """Commit the state and the emitted messages together (the outbox rows in one INSERT)."""
        if self.emitted:
            await (await self.session.connection()).execute(
                _OUTBOX_INSERT,
                [
                    {"id": m.id, "routing_key": m.type, "body": encode(m), "producer": self.producer, "attempts": 0}
                    for m in self.emitted
                ],
            )
        await self.session.commit()
        self.committed_messages.extend(self.emitted)
        self.emitted = []

    def emit(self, msg: Message) -> None:
        """Queue a follow-up message: written to the outbox with this transaction's commit, published after it."""
        self.emitted.append(msg)

    async def claim_message(self, consumer: str, message_id: uuid.UUID) -> bool:
        """Record that `consumer` applies `message_id`; False when it already did (a redelivery)."""
        return bool(await self.claim_messages(consumer, [message_id]))

    async def claim_messages(self, consumer: str, message_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Record that `consumer` applies these messages; returns the ids it had not applied before."""
        result = await (await self.session.connection()).execute(
            _CLAIM, {"consumer": consumer, "ids": list(message_ids)}
        )
        return {row[0] for row in result}

    def take_committed(self) -> list[Message]:
        """Messages committed since the last call (the caller publishes, then deletes them from the outbox)."""
        taken, self.committed_messages = self.committed_messages, []
        return taken


async def delete_outbox(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    """Remove published messages from the outbox."""
    if ids:
        await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))
        await session.commit()
