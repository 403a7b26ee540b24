"""Test databases on a real PostgreSQL: TEST_DATABASE_URL's server, else the embedded one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text

from etl.db.models import metadata

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_HOME = ROOT / ".cdr-etl-test"


def server_url() -> str:
    """A URL of the server the tests use (any database on it)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    from etl.db.engine import embedded_url

    return embedded_url(EMBEDDED_HOME)


def database_url(name: str) -> str:
    return make_url(server_url()).set(database=name).render_as_string(hide_password=False)


def create_database(prefix: str = "cdr_etl_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return database_url(name)


def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def fresh_database(prefix: str = "cdr_etl_test") -> Iterator[str]:
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def truncate_all(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO rollup_settings DEFAULT VALUES"))  # as migrated
    engine.dispose()


def impose_rollup_way(engine: Engine, way: str) -> None:
    """Every connection of `engine` keeps the rollups by one way ('delta': moved by the
    calls' difference; 'recompute': their buckets recomputed) instead of the cheaper one,
    through the setting cdr_etl.rollup_way that cdr_rollup_refresh reads."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"SET cdr_etl.rollup_way = '{way}'")
        dbapi_connection.commit()

    event.listen(engine, "connect", on_connect)
