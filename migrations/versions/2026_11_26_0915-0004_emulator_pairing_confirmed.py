"""the emulated WhatsApp server links a device only when its client confirms the scan

Revision ID: 0004_emulator_confirm
Revises: 0003_rate_limit_jitter
Create Date: 2026-11-26 09:15:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_emulator_confirm"
down_revision: str | None = "0003_rate_limit_jitter"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "pairings", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True), schema="whatsapp_emulator"
    )


def downgrade() -> None:
    op.drop_column("pairings", "confirmed_at", schema="whatsapp_emulator")
