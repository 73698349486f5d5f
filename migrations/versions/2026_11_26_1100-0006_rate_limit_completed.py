"""rate limits record when each call was answered (long windows count that, not the reserved slot)

Revision ID: 0006_rate_limit_completed
Revises: 0005_audit_per_salon
Create Date: 2026-11-26 11:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_rate_limit_completed"
down_revision: str | None = "0005_audit_per_salon"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rate_limits",
        sa.Column("completed", postgresql.ARRAY(sa.DOUBLE_PRECISION()), server_default="{}", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("rate_limits", "completed")
