"""The `accounts` table follows the configuration: upserted by name when a command starts.

Plain SQL, run through an engine or a bare psycopg connection (`status`, which answers
without SQLAlchemy's import).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from etl.config import AccountConfig

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow
    from sqlalchemy import Engine

# One statement for every account: a name seen again takes the configured endpoint and zone
# (the row is rewritten only when one of them changed). Never a password.
_UPSERT = """
INSERT INTO accounts (name, username, timezone)
SELECT * FROM unnest(%(names)s::text[], %(usernames)s::text[], %(timezones)s::text[])
ON CONFLICT (name) DO UPDATE SET
    username = excluded.username, timezone = excluded.timezone, updated_at = now()
WHERE accounts.username <> excluded.username OR accounts.timezone <> excluded.timezone
"""
_IDS = "SELECT name, id FROM accounts WHERE name = ANY(%(names)s::text[])"


def _params(configured: Iterable[AccountConfig]) -> dict[str, list[str]]:
    chosen = list(configured)
    return {
        "names": [a.name for a in chosen],
        "usernames": [a.username for a in chosen],
        "timezones": [a.timezone for a in chosen],
    }


def upsert_accounts(engine: Engine, configured: Iterable[AccountConfig]) -> dict[str, int]:
    """Insert or update each configured account; return {name: id}."""
    params = _params(configured)
    if not params["names"]:
        return {}
    with engine.begin() as connection:
        connection.exec_driver_sql(_UPSERT, params)
        return dict(connection.exec_driver_sql(_IDS, params).tuples().all())


def upsert_accounts_on(
    connection: psycopg.Connection[DictRow], configured: Iterable[AccountConfig]
) -> dict[str, int]:
    """`upsert_accounts` on a psycopg connection."""
    params = _params(configured)
    if not params["names"]:
        return {}
    with connection.transaction():
        connection.execute(_UPSERT, params)
        return {row["name"]: row["id"] for row in connection.execute(_IDS, params)}
