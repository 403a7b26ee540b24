"""bi views and the read-only role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:00:00

The views' SQL lives in `etl.db.views` (described there) and the role's in
`etl.db.roles`. The upgrade creates the views with their comments, then creates the
`cdr_reader` role when the database user may (a warning otherwise) and grants it SELECT
on every table and view, now and for tables created later. The downgrade drops the views
and revokes the grants in this database; it keeps the role, which is cluster-wide and may
serve other databases (drop it by hand: `DROP ROLE cdr_reader` once no database uses it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from etl.db.roles import reader_role_do_block, revoke_do_block
from etl.db.views import create_statements, drop_statements

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for statement in create_statements():
        op.execute(sa.text(statement))
    op.execute(sa.text(reader_role_do_block()))


def downgrade() -> None:
    op.execute(sa.text(revoke_do_block()))
    for statement in drop_statements():
        op.execute(sa.text(statement))
