"""whatsapp: session commands, state checks, the emulator's server schema, the neonize store schema

Revision ID: 0002_whatsapp
Revises: 1e0ccbdc8665
Create Date: 2026-11-26 07:33:45.287017+00:00

- ``whatsapp_sessions`` gets the pending command (``command_seq``/``applied_seq``, ``pairing_mode``,
  ``pairing_phone``), the command's ``correlation_id``, an index on ``owner`` (lease renewal) and checks on
  ``state``/``desired``.
- Schema ``whatsapp_emulator``: the emulated WhatsApp server (pairings, linked devices), shared by every
  whatsapp worker process (services/whatsapp/emulator/tables.py).
- Schema ``whatsmeow``: where the neonize engine's whatsmeow store keeps its own tables (it creates them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_whatsapp"
down_revision: str | None = "1e0ccbdc8665"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = (
    "'new','pairing','pairing_expired','connecting','connected','disconnected','paused',"
    "'logged_out','replaced','engine_unreachable'"
)


def upgrade() -> None:
    op.add_column("whatsapp_sessions", sa.Column("pairing_mode", sa.String(length=8), nullable=True))
    op.add_column("whatsapp_sessions", sa.Column("pairing_phone", sa.String(length=32), nullable=True))
    op.add_column("whatsapp_sessions", sa.Column("command_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("whatsapp_sessions", sa.Column("applied_seq", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("whatsapp_sessions", sa.Column("correlation_id", sa.String(length=64), nullable=True))
    op.create_index("ix_whatsapp_sessions_owner", "whatsapp_sessions", ["owner"], unique=False)
    op.create_check_constraint(op.f("ck_whatsapp_sessions_state"), "whatsapp_sessions", f"state IN ({STATES})")
    op.create_check_constraint(
        op.f("ck_whatsapp_sessions_desired"), "whatsapp_sessions", "desired IN ('running','paused','logged_out')"
    )

    op.execute("CREATE SCHEMA IF NOT EXISTS whatsapp_emulator")
    op.execute("CREATE SCHEMA IF NOT EXISTS whatsmeow")
    op.create_table(
        "pairings",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("attempt_id", sa.String(length=64), nullable=False),
        sa.Column("identity_pub", sa.Text(), nullable=False),
        sa.Column("qr_payload", sa.Text(), nullable=True),
        sa.Column("qr_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("code_phone", sa.String(length=32), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paired_phone", sa.String(length=32), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name="pk_pairings"),
        schema="whatsapp_emulator",
    )
    op.create_table(
        "devices",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("identity_pub", sa.Text(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connection_owner", sa.String(length=128), nullable=True),
        sa.Column("connection_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("connections", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_drop", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name="pk_devices"),
        schema="whatsapp_emulator",
    )


def downgrade() -> None:
    op.drop_table("devices", schema="whatsapp_emulator")
    op.drop_table("pairings", schema="whatsapp_emulator")
    op.execute("DROP SCHEMA IF EXISTS whatsapp_emulator")
    # The whatsmeow schema holds a real engine's credentials: never dropped by a migration.
    op.drop_constraint(op.f("ck_whatsapp_sessions_desired"), "whatsapp_sessions", type_="check")
    op.drop_constraint(op.f("ck_whatsapp_sessions_state"), "whatsapp_sessions", type_="check")
    op.drop_index("ix_whatsapp_sessions_owner", table_name="whatsapp_sessions")
    op.drop_column("whatsapp_sessions", "correlation_id")
    op.drop_column("whatsapp_sessions", "applied_seq")
    op.drop_column("whatsapp_sessions", "command_seq")
    op.drop_column("whatsapp_sessions", "pairing_phone")
    op.drop_column("whatsapp_sessions", "pairing_mode")
