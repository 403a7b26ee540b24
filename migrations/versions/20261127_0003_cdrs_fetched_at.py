"""cdrs.fetched_at: when the stored content was read, so an older read never overwrites a
newer one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 14:21:46.355683
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cdrs", sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("cdrs", "fetched_at")
