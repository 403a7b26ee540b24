"""The read-only role BI logins are granted: `cdr_reader` (NOLOGIN, SELECT only).

    GRANT cdr_reader TO metabase;   -- a BI login can now read every table and view

`ensure_reader_role` sets it up from code, and Alembic revision 0002 runs the same steps
(`reader_role_do_block`) so `cdr-etl migrate` does it when the database user may. What it
grants: USAGE on the schema, SELECT on every table and view in it, and default privileges
so that tables and views the same user creates later (new migrations) are readable too.

Roles are cluster-wide, while grants live in each database: several databases on one
server (tests, staging) share the role. Creating it is idempotent and safe when two
migrations race (`duplicate_object` / `unique_violation` mean "someone else just did"),
and the downgrade of revision 0002 revokes what it granted in its database but does not
drop the role, which other databases may still use.

A database user without CREATEROLE cannot create the role: `ensure_reader_role` then
returns False and logs what to do, and the migration goes on with a warning. An
administrator runs `READER_ROLE_SQL` by hand in that case.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

__all__ = [
    "READER_ROLE",
    "READER_ROLE_SQL",
    "ensure_reader_role",
    "grant_statements",
    "reader_role_do_block",
    "reader_role_sql",
    "revoke_do_block",
]

log = logging.getLogger(__name__)

READER_ROLE = "cdr_reader"
SCHEMA = "public"

_LOCK_KEY = 726_355  # serializes grants within one database (pg_advisory_xact_lock)
_DUPLICATE_OBJECT = "42710"
_UNIQUE_VIOLATION = "23505"  # a concurrent CREATE ROLE of the same name committed first
_INSUFFICIENT_PRIVILEGE = "42501"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def grant_statements(role: str = READER_ROLE, schema: str = SCHEMA) -> list[str]:
    """The grants that make `role` a reader of `schema`, now and for objects created later
    by the user who runs them."""
    r, s = _ident(role), _ident(schema)
    return [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",  # views included
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}",
    ]


def reader_role_sql(role: str = READER_ROLE, schema: str = SCHEMA) -> str:
    """The SQL to set the role up by hand (see READER_ROLE_SQL)."""
    grants = ";\n".join(grant_statements(role, schema))
    return (
        "-- 1. As a superuser or a role with CREATEROLE (once per server):\n"
        f"CREATE ROLE {_ident(role)} NOLOGIN;\n"
        "-- 2. In the cdr-etl database, as the user cdr-etl connects with (the owner of its\n"
        "--    tables: default privileges apply to the objects their creator makes later):\n"
        f"{grants};\n"
        "-- 3. For each BI login:\n"
        f"-- GRANT {_ident(role)} TO some_bi_login;\n"
    )


READER_ROLE_SQL = reader_role_sql()
"""Run by hand when cdr-etl's database user may not create roles."""


def ensure_reader_role(engine: Engine, role: str = READER_ROLE, schema: str = SCHEMA) -> bool:
    """Create `role` (NOLOGIN) if missing and grant it read access to `schema`.

    Idempotent and safe concurrently. Returns False, after logging why and what to run by
    hand, when the database user may not create the role or grant on the schema.
    """
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if not _exists(conn, role) and not _create(conn, role):
            return False
        try:
            with conn.begin_nested():
                for statement in grant_statements(role, schema):
                    conn.execute(text(statement))
        except DBAPIError as exc:
            if _sqlstate(exc) != _INSUFFICIENT_PRIVILEGE:
                raise
            log.warning(
                "cannot grant read access to role %s: %s; ask the owner of the cdr-etl "
                "tables to run etl.db.roles.READER_ROLE_SQL (step 2)",
                role,
                _message(exc),
            )
            return False
    return True


def _exists(conn: Connection, role: str) -> bool:
    found = conn.execute(text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :r"), {"r": role})
    return found.first() is not None


def _create(conn: Connection, role: str) -> bool:
    """CREATE ROLE in a savepoint; True when the role exists afterwards."""
    try:
        with conn.begin_nested():
            conn.execute(text(f"CREATE ROLE {_ident(role)} NOLOGIN"))
    except DBAPIError as exc:
        state = _sqlstate(exc)
        if state in (_DUPLICATE_OBJECT, _UNIQUE_VIOLATION):
            return True  # created meanwhile by another session (roles are cluster-wide)
        if state != _INSUFFICIENT_PRIVILEGE:
            raise
        log.warning(
            "cannot create the read-only role %s: %s; the database user needs CREATEROLE, "
            "or a superuser runs etl.db.roles.READER_ROLE_SQL by hand",
            role,
            _message(exc),
        )
        return False
    log.info("created the read-only role %s", role)
    return True


def _sqlstate(exc: DBAPIError) -> str | None:
    state = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _message(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def reader_role_do_block(role: str = READER_ROLE, schema: str = SCHEMA) -> str:
    """The role set-up as one DO block for a migration: creates the role when it may,
    grants, and turns a missing privilege into a WARNING instead of an error."""
    grants = "\n".join(
        f"    EXECUTE {_literal(statement)};" for statement in grant_statements(role, schema)
    )
    return f"""DO $cdr_etl$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role)}) THEN
        BEGIN
            EXECUTE {_literal(f"CREATE ROLE {_ident(role)} NOLOGIN")};
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent migration: roles are cluster-wide
            WHEN insufficient_privilege THEN
                RAISE WARNING 'cdr-etl: cannot create role % (%): see READER_ROLE_SQL',
                    {_literal(role)}, SQLERRM;
                RETURN;
        END;
    END IF;
{grants}
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cdr-etl: cannot grant read access to % (%)', {_literal(role)}, SQLERRM;
END
$cdr_etl$"""


def revoke_do_block(role: str = READER_ROLE, schema: str = SCHEMA) -> str:
    """Undo `reader_role_do_block` in this database; the role itself stays (cluster-wide)."""
    r, s = _ident(role), _ident(schema)
    statements = [
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} REVOKE SELECT ON TABLES FROM {r}",
        f"REVOKE SELECT ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"REVOKE USAGE ON SCHEMA {s} FROM {r}",
    ]
    body = "\n".join(f"        EXECUTE {_literal(statement)};" for statement in statements)
    return f"""DO $cdr_etl$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role)}) THEN
{body}
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cdr-etl: cannot revoke the grants of % (%)', {_literal(role)}, SQLERRM;
END
$cdr_etl$"""
