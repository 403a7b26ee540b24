"""Alembic glue: bring a database to the newest revision from code (`cdr-etl migrate`).

Alembic itself is imported only to migrate: the check every command makes (is the
database at the newest revision?) reads the revision files and `alembic_version` directly,
which costs a command a few milliseconds instead of Alembic's import.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config
    from psycopg.rows import DictRow
    from sqlalchemy import Connection, Engine

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


_REVISION = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(?:\"([^\"]*)\"|None)", re.M)


def _location() -> Path:
    # A wheel carries the migrations as etl/migrations (see pyproject.toml); a checkout
    # has them at the top level. Either way `cdr-etl migrate` works from any folder.
    return MIGRATIONS if MIGRATIONS.is_dir() else ROOT / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision: the one no other revision names as its `down_revision`."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_location() / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            if value:
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one: {sorted(heads)}")
    return heads.pop()


_HAS_VERSION = "SELECT to_regclass('alembic_version') IS NOT NULL AS found"
_READ_VERSION = "SELECT version_num AS version FROM alembic_version"


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None: never migrated)."""
    with engine.connect() as connection:
        if not connection.exec_driver_sql(_HAS_VERSION).scalar():
            return None
        version: str | None = connection.exec_driver_sql(_READ_VERSION).scalar()
        return version


def current_revision_on(connection: psycopg.Connection[DictRow]) -> str | None:
    """`current_revision` on a psycopg connection."""
    found = connection.execute(_HAS_VERSION).fetchone()
    if not found or not found["found"]:
        return None
    row = connection.execute(_READ_VERSION).fetchone()
    return row["version"] if row else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision` under an advisory lock, so concurrent `migrate`s are safe."""
    from alembic import command

    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_advisory_lock(726354)")
        try:
            command.upgrade(alembic_config(connection), revision)
            connection.commit()
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(726354)")
            connection.commit()


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()
