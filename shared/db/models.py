"""SQLAlchemy 2 models for every table (DESIGN §4); the seed's table names are kept."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

INTEGRATION_STATUSES = ("pending_whatsapp", "activating", "active", "activation_failed", "frozen", "uninstalled")


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return func.now()


class Company(Base):
    """A YClients branch (salon) that installed the app."""

    __tablename__ = "companies"
    __table_args__ = (
        CheckConstraint(
            "integration_status IN ('" + "','".join(INTEGRATION_STATUSES) + "')", name="integration_status"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    yclients_id: Mapped[int] = mapped_column(BigInteger, unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    integration_status: Mapped[str] = mapped_column(String(32), nullable=False, default="pending_whatsapp")
    enriched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    marketplace_user_id: Mapped[str | None] = mapped_column(String(255))
    marketplace_user_name: Mapped[str | None] = mapped_column(String(255))
    marketplace_user_phone: Mapped[str | None] = mapped_column(String(64))
    marketplace_user_email: Mapped[str | None] = mapped_column(String(255))
    whatsapp_connected: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    whatsapp_phone: Mapped[str | None] = mapped_column(String(64))
    api_key_hash: Mapped[str | None] = mapped_column(String(128))
    api_key_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )


class MarketplaceEvent(Base):
    """The audit trail of everything that happened to a salon."""

    __tablename__ = "marketplace_events"
    __table_args__ = (
        Index("ix_marketplace_events_salon_id_created_at", "salon_id", "created_at"),
        # One row per (event type, causing message, salon): redelivery cannot write the same event twice, and
        # an install of several salons records each of them.
        Index(
            "uq_marketplace_events_event_type_message_id_salon_id",
            "event_type",
            "message_id",
            "salon_id",
            unique=True,
            postgresql_where="message_id IS NOT NULL",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    salon_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    event_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())


class WhatsAppSession(Base):
    """A salon's WhatsApp session: state, owner lease, current QR or pairing code, pending command.

    Commands are recorded by whichever worker receives them (``desired``, ``pairing_mode``/``pairing_phone``,
    ``command_seq`` + 1) and applied by the session's owner, which then sets ``applied_seq``.
    """

    __tablename__ = "whatsapp_sessions"
    __table_args__ = (
        Index("ix_whatsapp_sessions_owner", "owner"),
        CheckConstraint(
            "state IN ('new','pairing','pairing_expired','connecting','connected','disconnected','paused',"
            "'logged_out','replaced','engine_unreachable')",
            name="state",
        ),
        CheckConstraint("desired IN ('running','paused','logged_out')", name="desired"),
    )

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    salon_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    state: Mapped[str] = mapped_column(String(32), nullable=False, default="new")
    desired: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    qr_payload: Mapped[str | None] = mapped_column(Text)
    qr_seq: Mapped[int | None] = mapped_column(Integer)
    qr_max: Mapped[int | None] = mapped_column(Integer)
    qr_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pairing_code: Mapped[str | None] = mapped_column(String(16))
    pairing_code_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    phone: Mapped[str | None] = mapped_column(String(32))
    last_disconnect_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pairing_mode: Mapped[str | None] = mapped_column(String(8))
    pairing_phone: Mapped[str | None] = mapped_column(String(32))
    command_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    applied_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )


class WhatsAppAuth(Base):
    """One piece of an engine's credentials (creds, pre-keys, sessions ...) for one session."""

    __tablename__ = "whatsapp_auth"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("whatsapp_sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    engine: Mapped[str] = mapped_column(String(32), nullable=False)
    value: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )


class ActivationAttempt(Base):
    """One call (or status check) towards YClients while activating a salon."""

    __tablename__ = "activation_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    salon_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False, default="callback")
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())


class ProcessedMessage(Base):
    """Message ids a consumer already applied (idempotency under redelivery)."""

    __tablename__ = "processed_messages"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())


class OutboxMessage(Base):
    """A message committed with the state that caused it, published (and deleted) after the broker confirms."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    routing_key: Mapped[str] = mapped_column(String(128), nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    producer: Mapped[str] = mapped_column(String(64), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=_now())


class RateLimit(Base):
    """A limit shared by every process: the reserved call times (DB clock, epoch seconds) still in its windows."""

    __tablename__ = "rate_limits"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    slots: Mapped[list[float]] = mapped_column(ARRAY(DOUBLE_PRECISION), nullable=False, server_default="{}")
    # When each slot's call was answered (an upper bound of its arrival), NULL until reported; may be shorter.
    completed: Mapped[list[float | None]] = mapped_column(ARRAY(DOUBLE_PRECISION), nullable=False, server_default="{}")
    # How late callers woke up for their slots recently (decaying maximum): the windows widen by it.
    jitter_s: Mapped[float] = mapped_column(DOUBLE_PRECISION, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=_now(), onupdate=_now()
    )
