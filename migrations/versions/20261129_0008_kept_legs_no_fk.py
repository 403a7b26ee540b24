"""call_legs and inbound_calls without a foreign key to accounts

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 07:00:00

The load writes a `call_legs` row for every leg and an `inbound_calls` row for every
inbound call, and each paid a foreign key check against `accounts` (about 10 us of server
time per leg, a fifth of the backfill's server time). Both keys go; a trigger on `accounts`
deletes an account's rows of both tables when it is deleted, as their cascade did (the
other tables keep their keys and cascades). The downgrade deletes rows of accounts that no
longer exist and puts the keys back. Every statement is frozen here as applied (the
function generated once from etl/db/rollup.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
FORGET = """CREATE FUNCTION cdr_forget_account() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- the per-leg kept tables have no foreign key to accounts (a check per row at load)
    DELETE FROM call_legs WHERE account_id = OLD.id;
    DELETE FROM inbound_calls WHERE account_id = OLD.id;
    RETURN OLD;
END
$fn$"""

UPGRADE: list[str] = [
    FORGET,
    "CREATE TRIGGER accounts_forget_kept_legs AFTER DELETE ON accounts "
    "FOR EACH ROW EXECUTE FUNCTION cdr_forget_account()",
    "ALTER TABLE call_legs DROP CONSTRAINT fk_call_legs_account_id_accounts",
    "ALTER TABLE inbound_calls DROP CONSTRAINT fk_inbound_calls_account_id_accounts",
]

DOWNGRADE: list[str] = [
    "DELETE FROM call_legs k WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = k.account_id)",
    "DELETE FROM inbound_calls i "
    "WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = i.account_id)",
    "ALTER TABLE call_legs ADD CONSTRAINT fk_call_legs_account_id_accounts "
    "FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "ALTER TABLE inbound_calls ADD CONSTRAINT fk_inbound_calls_account_id_accounts "
    "FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "DROP TRIGGER accounts_forget_kept_legs ON accounts",
    "DROP FUNCTION cdr_forget_account()",
]
# fmt: on


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
