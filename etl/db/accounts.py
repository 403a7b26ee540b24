"""The `accounts` table follows the configuration: upserted by name when a command starts."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from etl.config import AccountConfig
from etl.db.models import accounts


def upsert_accounts(engine: Engine, configured: Iterable[AccountConfig]) -> dict[str, int]:
    """Insert or update each configured account; return {name: id}. Never stores a password."""
    rows = [{"name": a.name, "username": a.username, "timezone": a.timezone} for a in configured]
    if not rows:
        return {}
    statement = insert(accounts).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[accounts.c.name],
        set_={
            "username": statement.excluded.username,
            "timezone": statement.excluded.timezone,
            "updated_at": func.now(),
        },
        where=(accounts.c.username != statement.excluded.username)
        | (accounts.c.timezone != statement.excluded.timezone),
    )
    with engine.begin() as connection:
        connection.execute(statement)
        names = [row["name"] for row in rows]
        found = connection.execute(
            select(accounts.c.name, accounts.c.id).where(accounts.c.name.in_(names))
        )
        return {name: account_id for name, account_id in found.tuples()}
