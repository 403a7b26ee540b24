"""The read-only role: created by the migration, SELECT only, on tables made later too, and
its set-up idempotent, safe concurrently, and harmless without the privilege to do it.

Roles are cluster-wide and the test server may hold many test databases at once: the tests
that need a role of their own name it uniquely and drop it at the end.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

from etl.db.engine import make_engine
from etl.db.migrate import downgrade, upgrade
from etl.db.models import metadata
from etl.db.roles import (
    READER_ROLE,
    READER_ROLE_SQL,
    ensure_reader_role,
    reader_role_do_block,
    reader_role_sql,
)
from etl.db.views import VIEWS
from tests.dbutil import fresh_database

TABLES = [table.name for table in metadata.sorted_tables]
VIEW_NAMES = [view.name for view in VIEWS]


@pytest.fixture(autouse=True)
def _superuser(engine: Engine) -> None:
    """These tests create roles and SET ROLE: they need a superuser (the test servers, the
    machine's and the embedded one, are)."""
    with engine.connect() as conn:
        superuser = conn.execute(
            text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        ).scalar()
    assert superuser, "the role tests need TEST_DATABASE_URL to name a superuser"


def unique_role(prefix: str = "cdr_test_reader") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_role(engine: Engine, role: str) -> None:
    """Drop a test role: its privileges in this database first (other databases are gone)."""
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


@contextmanager
def as_role(engine: Engine, role: str) -> Iterator[Connection]:
    """A connection acting as `role` in a transaction that is rolled back at the end."""
    with engine.connect() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        try:
            yield conn
        finally:
            conn.rollback()


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def privileges(conn: Connection, role: str, names: list[str], privilege: str) -> dict[str, bool]:
    return {
        name: conn.execute(
            text("SELECT has_table_privilege(:r, :t, :p)"), {"r": role, "t": name, "p": privilege}
        ).scalar_one()
        for name in names
    }


def test_reader_role_exists_after_migrate(engine: Engine) -> None:
    """`cdr-etl migrate` (Alembic head) leaves a NOLOGIN role cdr_reader on the server."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = :r"),
            {"r": READER_ROLE},
        ).one()
    assert tuple(row) == (False, False)


def test_reader_can_select_every_table_and_view(engine: Engine) -> None:
    """cdr_reader has SELECT on cdrs, every other table and every view, and can read them."""
    with engine.connect() as conn:
        assert privileges(conn, READER_ROLE, TABLES + VIEW_NAMES, "SELECT") == dict.fromkeys(
            TABLES + VIEW_NAMES, True
        )
    with as_role(engine, READER_ROLE) as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == READER_ROLE
        for name in TABLES + VIEW_NAMES:
            conn.execute(text(f"SELECT * FROM {name} LIMIT 1")).all()


def test_reader_cannot_write(engine: Engine) -> None:
    """Acting as cdr_reader, an INSERT fails with insufficient_privilege; no write privilege."""
    with as_role(engine, READER_ROLE) as conn, pytest.raises(DBAPIError) as raised:
        conn.execute(
            text("INSERT INTO accounts (name, username, timezone) VALUES ('x', '1', 'UTC')")
        )
    assert sqlstate(raised.value) == "42501"
    with engine.connect() as conn:
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not any(privileges(conn, READER_ROLE, TABLES, privilege).values()), privilege


def test_tables_created_later_are_readable(engine: Engine) -> None:
    """Default privileges: a table the migrating user creates after 0002 is readable."""
    with engine.connect() as conn:
        try:
            conn.execute(text("CREATE TABLE reader_probe (x integer)"))
            conn.execute(text("INSERT INTO reader_probe VALUES (42)"))
            conn.execute(text(f"SET LOCAL ROLE {READER_ROLE}"))
            assert conn.execute(text("SELECT x FROM reader_probe")).scalar_one() == 42
        finally:
            conn.rollback()  # nothing stays behind in the shared test database


def test_ensure_reader_role_is_idempotent(engine: Engine) -> None:
    """ensure_reader_role on an existing, granted role does it again and says True."""
    assert ensure_reader_role(engine) is True
    assert ensure_reader_role(engine) is True
    with engine.connect() as conn:
        assert all(privileges(conn, READER_ROLE, ["cdrs", "v_daily_account"], "SELECT").values())


def test_ensure_reader_role_creates_a_role_concurrently_in_two_databases(engine: Engine) -> None:
    """Four sessions in two databases creating one new role at once all succeed."""
    role = unique_role()
    try:
        with fresh_database("cdr_etl_roles") as other_url:
            other = make_engine(other_url, pool_size=2)
            try:
                engines = [engine, engine, other, other]
                barrier = threading.Barrier(len(engines))
                results: list[Any] = [None] * len(engines)

                def run(index: int) -> None:
                    try:
                        barrier.wait()
                        results[index] = ensure_reader_role(engines[index], role)
                    except BaseException as exc:
                        results[index] = exc

                threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert results == [True] * len(engines)
                for each in (engine, other):
                    with each.connect() as conn:
                        usage = text("SELECT has_schema_privilege(:r, 'public', 'USAGE')")
                        assert conn.execute(usage, {"r": role}).scalar_one()
            finally:
                other.dispose()
        with engine.connect() as conn:
            assert all(privileges(conn, role, TABLES, "SELECT").values())
    finally:
        drop_role(engine, role)


def test_without_createrole_it_returns_false_and_says_why(
    engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A user who may not create roles gets False and a message naming READER_ROLE_SQL."""
    nobody, missing = unique_role("cdr_test_nobody"), unique_role()
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{nobody}" NOLOGIN'))
    weak = make_engine(db_url, pool_size=1)

    @event.listens_for(weak, "connect")
    def _become_nobody(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f'SET ROLE "{nobody}"')
        dbapi_connection.commit()

    try:
        with caplog.at_level(logging.WARNING, logger="etl.db.roles"):
            assert ensure_reader_role(weak, missing) is False
        assert "READER_ROLE_SQL" in caplog.text
        assert missing in caplog.text
        # the migration's DO block goes on too, with a warning instead of an error
        with weak.connect() as conn:
            conn.execute(text(reader_role_do_block(missing)))
            conn.rollback()
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": missing})
            assert found.first() is None
    finally:
        weak.dispose()
        drop_role(engine, nobody)


def test_reader_role_sql_runs_by_hand(engine: Engine) -> None:
    """READER_ROLE_SQL is valid SQL that sets up a working reader when run as is."""
    assert "CREATE ROLE cdr_reader NOLOGIN" in READER_ROLE_SQL.replace('"', "")
    role = unique_role()
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute(reader_role_sql(role))  # type: ignore[union-attr]
            conn.commit()
            assert all(privileges(conn, role, TABLES + VIEW_NAMES, "SELECT").values())
    finally:
        drop_role(engine, role)


def test_downgrade_revokes_but_keeps_the_role_and_upgrade_regrants() -> None:
    """0002's downgrade drops the views and revokes the grants; the role stays; upgrade redoes."""
    with fresh_database("cdr_etl_roles") as url:
        engine = make_engine(url, pool_size=1)
        try:
            upgrade(engine)
            downgrade(engine, "0001")
            with engine.connect() as conn:
                views = text("SELECT count(*) FROM pg_views WHERE viewname LIKE 'v\\_%'")
                assert conn.execute(views).scalar_one() == 0
                present = [  # the tables of later revisions are gone at 0001
                    t
                    for t in TABLES
                    if conn.execute(text("SELECT to_regclass(:t)"), {"t": t}).scalar()
                ]
                assert not any(privileges(conn, READER_ROLE, present, "SELECT").values())
                defaults = conn.execute(
                    text("SELECT count(*) FROM pg_default_acl WHERE defaclacl::text LIKE :r"),
                    {"r": f"%{READER_ROLE}=%"},
                ).scalar_one()
                assert defaults == 0
                role = text("SELECT 1 FROM pg_roles WHERE rolname = :r")
                assert conn.execute(role, {"r": READER_ROLE}).first() is not None
            upgrade(engine)
            with engine.connect() as conn:
                assert all(privileges(conn, READER_ROLE, TABLES + VIEW_NAMES, "SELECT").values())
        finally:
            engine.dispose()
