"""runs.disturbed and runs.reread_requests: windows whose paged read was disturbed by the
server's order (a callid met on two pages), and the requests spent re-reading them in a
way that does not rest on order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("disturbed", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "runs", sa.Column("reread_requests", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("runs", "reread_requests")
    op.drop_column("runs", "disturbed")
