"""rate limits learn the scheduling jitter their callers see

Revision ID: 0003_rate_limit_jitter
Revises: 0002_whatsapp
Create Date: 2026-11-26 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_rate_limit_jitter"
down_revision: str | None = "0002_whatsapp"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rate_limits", sa.Column("jitter_s", sa.DOUBLE_PRECISION(), server_default=sa.text("0"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("rate_limits", "jitter_s")
