"""Migrations: up from empty, down to base, up again, and no drift from the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from etl.db.engine import make_engine
from etl.db.migrate import alembic_config, current_revision, downgrade, head_revision, upgrade
from etl.db.models import metadata
from etl.db.rollup import FUNCTIONS
from etl.db.views import VIEWS
from tests.dbutil import fresh_database

CDR_COLUMNS = {
    "account_id", "callid", "original_callid", "ref_callid", "type", "ani", "dnis",
    "ani_user", "dnis_user", "name_endpoint_ani", "name_endpoint_dnis", "route_name",
    "end_reason", "duration", "ring_time", "detect_time", "connect_time", "disconnect_time",
    "raw", "content_hash", "fetched_at", "first_seen_at", "updated_at",
}  # fmt: skip


def test_single_head() -> None:
    """The migration history has exactly one head."""
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_upgrade_downgrade_upgrade_and_no_drift() -> None:
    """From empty to head, back to base, to head again; then the models match the schema."""
    with fresh_database("cdr_etl_migr") as url:
        engine = make_engine(url, pool_size=1)
        try:
            upgrade(engine)
            assert current_revision(engine) == head_revision()
            upgrade(engine)  # idempotent
            downgrade(engine, "base")
            assert current_revision(engine) is None
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
            upgrade(engine)
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
        finally:
            engine.dispose()


def test_schema_follows_the_database_contract() -> None:
    """cdrs has every contract column with the contract types, keyed by (account_id, callid)."""
    with fresh_database("cdr_etl_migr") as url:
        engine = make_engine(url, pool_size=1)
        try:
            upgrade(engine)
            inspector = inspect(engine)
            columns = {c["name"]: c for c in inspector.get_columns("cdrs")}
            assert set(columns) == CDR_COLUMNS
            for name in ("detect_time", "connect_time", "disconnect_time", "first_seen_at"):
                assert getattr(columns[name]["type"], "timezone", None) is True, name
            assert str(columns["raw"]["type"]) == "JSONB"
            assert str(columns["duration"]["type"]) == "INTEGER"
            assert str(columns["ring_time"]["type"]) == "INTEGER"
            key = inspector.get_pk_constraint("cdrs")["constrained_columns"]
            assert key == ["account_id", "callid"]
            indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("cdrs")}
            assert ("account_id", "detect_time") in indexed
            assert ("original_callid",) in indexed
            every_column = {
                c["name"]
                for table in inspector.get_table_names()
                for c in inspector.get_columns(table)
            }
            assert not [c for c in every_column if "password" in c.lower()]
        finally:
            engine.dispose()


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    """The quick head lookup (no Alembic import) agrees with Alembic's own."""
    from alembic.script import ScriptDirectory

    from etl.db.migrate import alembic_config, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_current_revision_of_an_empty_database_is_none() -> None:
    """A database never migrated has no revision (and no error)."""
    from etl.db.engine import make_engine
    from etl.db.migrate import current_revision
    from tests.dbutil import fresh_database

    with fresh_database() as url:
        engine = make_engine(url, pool_size=1)
        try:
            assert current_revision(engine) is None
        finally:
            engine.dispose()


def test_no_revision_imports_application_code() -> None:
    """Every revision holds its own SQL: none imports `etl`, so history never follows the code."""
    import ast
    from pathlib import Path

    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    offenders = []
    for path in sorted(versions.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "etl"]
    assert offenders == []


def test_head_applied_the_view_and_function_sql_the_code_holds(engine: Engine) -> None:
    """The views and server functions at head are the ones etl/db/views.py and
    etl/db/rollup.py hold: a change to either needs a new revision that applies it."""
    with engine.connect() as conn:
        conn.execute(text("CREATE SCHEMA scratch"))
        conn.execute(text("SET LOCAL search_path = scratch, public"))
        for view in VIEWS:
            conn.execute(text(view.create().replace(view.name, f"scratch.{view.name}", 1)))
            applied, held = (
                conn.execute(
                    text(f"SELECT pg_get_viewdef('{schema}.{view.name}'::regclass)")
                ).scalar_one()
                for schema in ("public", "scratch")
            )
            assert applied == held, view.name
        for statement in FUNCTIONS:
            name = statement.split("(", 1)[0].split()[-1]
            body = statement.split("$fn$")[1]
            applied = conn.execute(
                text("SELECT prosrc FROM pg_proc WHERE proname = :n"), {"n": name}
            ).scalar_one()
            assert applied == body, name
        conn.rollback()
