"""one audit row per (event type, message, salon): a multi-salon install records every salon

Revision ID: 0005_audit_per_salon
Revises: 0004_emulator_confirm
Create Date: 2026-11-26 10:45:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_audit_per_salon"
down_revision: str | None = "0004_emulator_confirm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("uq_marketplace_events_event_type_message_id", table_name="marketplace_events")
    op.create_index(
        "uq_marketplace_events_event_type_message_id_salon_id",
        "marketplace_events",
        ["event_type", "message_id", "salon_id"],
        unique=True,
        postgresql_where="message_id IS NOT NULL",
    )


def downgrade() -> None:
    # Rows that only the wider key allowed (the second salon of an install) would break the old index.
    op.execute(
        "DELETE FROM marketplace_events e USING marketplace_events o"
        " WHERE e.message_id IS NOT NULL AND e.message_id = o.message_id AND e.event_type = o.event_type"
        " AND e.id > o.id"
    )
    op.drop_index("uq_marketplace_events_event_type_message_id_salon_id", table_name="marketplace_events")
    op.create_index(
        "uq_marketplace_events_event_type_message_id",
        "marketplace_events",
        ["event_type", "message_id"],
        unique=True,
        postgresql_where="message_id IS NOT NULL",
    )
