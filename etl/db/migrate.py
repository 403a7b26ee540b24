"""Alembic glue: bring a database to the newest revision from code (`cdr-etl migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    # A wheel carries the migrations as etl/migrations (see pyproject.toml); a checkout
    # has them at the top level. Either way `cdr-etl migrate` works from any folder.
    location = MIGRATIONS if MIGRATIONS.is_dir() else ROOT / "migrations"
    config = Config()
    config.set_main_option("script_location", str(location))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision` under an advisory lock, so concurrent `migrate`s are safe."""
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_advisory_lock(726354)")
        try:
            command.upgrade(alembic_config(connection), revision)
            connection.commit()
        finally:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(726354)")
            connection.commit()


def downgrade(engine: Engine, revision: str = "base") -> None:
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()
