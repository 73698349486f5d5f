"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 07:21:39.697873+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("yclients_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("integration_status", sa.String(length=32), nullable=False),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("marketplace_user_id", sa.String(length=255), nullable=True),
        sa.Column("marketplace_user_name", sa.String(length=255), nullable=True),
        sa.Column("marketplace_user_phone", sa.String(length=64), nullable=True),
        sa.Column("marketplace_user_email", sa.String(length=255), nullable=True),
        sa.Column("whatsapp_connected", sa.Boolean(), nullable=False),
        sa.Column("whatsapp_phone", sa.String(length=64), nullable=True),
        sa.Column("api_key_hash", sa.String(length=128), nullable=True),
        sa.Column("api_key_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "integration_status IN ('pending_whatsapp','activating','active','activation_failed','frozen','uninstalled')",
            name=op.f("ck_companies_integration_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_companies")),
        sa.UniqueConstraint("yclients_id", name=op.f("uq_companies_yclients_id")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("routing_key", sa.String(length=128), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("producer", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_table(
        "processed_messages",
        sa.Column("consumer", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_processed_messages")),
    )
    op.create_table(
        "whatsapp_sessions",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("salon_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("desired", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt_id", sa.String(length=64), nullable=True),
        sa.Column("qr_payload", sa.Text(), nullable=True),
        sa.Column("qr_seq", sa.Integer(), nullable=True),
        sa.Column("qr_max", sa.Integer(), nullable=True),
        sa.Column("qr_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pairing_code", sa.String(length=16), nullable=True),
        sa.Column("pairing_code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("last_disconnect_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_whatsapp_sessions")),
    )
    op.create_index(op.f("ix_whatsapp_sessions_salon_id"), "whatsapp_sessions", ["salon_id"], unique=False)
    op.create_table(
        "activation_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("salon_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_activation_attempts_company_id_companies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_attempts")),
    )
    op.create_index(op.f("ix_activation_attempts_salon_id"), "activation_attempts", ["salon_id"], unique=False)
    op.create_table(
        "marketplace_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("salon_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("event_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"],
            ["companies.id"],
            name=op.f("fk_marketplace_events_company_id_companies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_events")),
    )
    op.create_index(
        "ix_marketplace_events_salon_id_created_at", "marketplace_events", ["salon_id", "created_at"], unique=False
    )
    op.create_index(
        "uq_marketplace_events_event_type_message_id",
        "marketplace_events",
        ["event_type", "message_id"],
        unique=True,
        postgresql_where="message_id IS NOT NULL",
    )
    op.create_table(
        "whatsapp_auth",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=255), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["whatsapp_sessions.session_id"],
            name=op.f("fk_whatsapp_auth_session_id_whatsapp_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "kind", "key_id", name=op.f("pk_whatsapp_auth")),
    )


def downgrade() -> None:
    op.drop_table("whatsapp_auth")
    op.drop_index(
        "uq_marketplace_events_event_type_message_id",
        table_name="marketplace_events",
        postgresql_where="message_id IS NOT NULL",
    )
    op.drop_index("ix_marketplace_events_salon_id_created_at", table_name="marketplace_events")
    op.drop_table("marketplace_events")
    op.drop_index(op.f("ix_activation_attempts_salon_id"), table_name="activation_attempts")
    op.drop_table("activation_attempts")
    op.drop_index(op.f("ix_whatsapp_sessions_salon_id"), table_name="whatsapp_sessions")
    op.drop_table("whatsapp_sessions")
    op.drop_table("processed_messages")
    op.drop_table("outbox")
    op.drop_table("companies")
