"""The bulk load: a page of normalized CDRs into `cdrs`, on one connection and transaction.

1. dedup the page by `callid` (the same key twice in one statement breaks ON CONFLICT);
2. a page none of whose CDRs is stored yet (a backfill, a first read) is COPied straight
   into `cdrs` under a savepoint: all inserted. Should a concurrent writer have stored one
   of them meanwhile, the unique key refuses the COPY and the page takes step 3;
3. otherwise COPY the rows, in binary, into a session-private temporary staging table
   (never shared between runs: every connection has its own; it empties itself at
   commit), then one INSERT ... SELECT ... ON CONFLICT (account_id, callid) DO UPDATE ...
   WHERE the content hash differs, built by SQLAlchemy from the models, counting what it
   did.

The fast path (see bench/): binary COPY halves both our CPU and the server's per row
against text COPY; `raw` goes out as the bytes orjson gives, in jsonb's binary wire form
(a version byte, 1, then the JSON text), so it is neither decoded to `str` nor re-encoded.

4. bring the kept BI data of the page's legs in step (etl/db/rollup.py), in the same
   transaction, so dashboards never see a page half counted.

Rows are inserted in `callid` order so concurrent writers of overlapping pages (a backfill
beside the daemon) take row locks in the same order and do not deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

from etl.db.models import cdrs, rejects
from etl.db.rollup import refresh
from etl.errors import LoadError
from etl.normalize import Cdr, Reject, content_hash, dedup

# The columns a load writes, in COPY order: account_id, then the Cdr fields.
LOAD_COLUMNS: tuple[str, ...] = ("account_id", *Cdr._fields, "fetched_at")
DATA_COLUMNS: tuple[str, ...] = tuple(c for c in Cdr._fields if c != "callid")

staging = Table(
    "cdr_staging",
    MetaData(),
    *(Column(name, cdrs.c[name].type) for name in LOAD_COLUMNS),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    def add(self, other: LoadCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected


def _count_statement() -> Select[tuple[int, int]]:
    """The upsert from staging, wrapped to return (inserted, inserted + updated)."""
    source = select(*(staging.c[name] for name in LOAD_COLUMNS)).order_by(staging.c.callid)
    statement = insert(cdrs).from_select(list(LOAD_COLUMNS), source)
    statement = statement.on_conflict_do_update(
        index_elements=[cdrs.c.account_id, cdrs.c.callid],
        set_={
            **{name: statement.excluded[name] for name in DATA_COLUMNS},
            "fetched_at": statement.excluded.fetched_at,
            "updated_at": func.now(),
        },
        # Rewrite a row only when its content changed, and never with an older read.
        where=(cdrs.c.content_hash != statement.excluded.content_hash)
        & ((cdrs.c.fetched_at.is_(None)) | (cdrs.c.fetched_at <= statement.excluded.fetched_at)),
    )
    # xmax = 0 marks a row this statement inserted; a row it updated carries our xid.
    done = statement.returning(literal_column("xmax = 0", Boolean).label("inserted")).cte("done")
    return select(func.count().filter(done.c.inserted), func.count()).select_from(done)


def _copy_type(sql_type: TypeEngine[Any]) -> str:
    """The name psycopg knows a column's binary COPY type by, from the model's type."""
    if isinstance(sql_type, JSONB):
        return "bytea"  # sent as jsonb's wire form, b"\x01" + JSON text (see module doc)
    if isinstance(sql_type, DateTime):
        return "timestamptz" if sql_type.timezone else "timestamp"
    if isinstance(sql_type, Integer):
        return "int8" if sql_type.__visit_name__ == "big_integer" else "int4"
    if isinstance(sql_type, String):  # Text and String(n) share the wire form
        return "text"
    raise TypeError(f"no binary COPY type for {sql_type!r}")  # pragma: no cover


_UPSERT = _count_statement()
_COPY = f"COPY cdr_staging ({', '.join(LOAD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_NEW = f"COPY cdrs ({', '.join(LOAD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# One primary-key probe per callid, stopping at the first found. Written as a LATERAL probe
# so that it stays one whatever the planner's statistics say: as `callid = ANY(...) LIMIT 1`
# a table loaded since its last ANALYZE (autovacuum off, or behind a fast backfill) got a
# walk of the account's whole (account_id, detect_time) index per page, looking for a
# match that a page of new CDRs never has.
_PAGE = (
    func.unnest(bindparam("callids", type_=ARRAY(Text))).table_valued("callid").render_derived("u")
)
_PROBE = (
    select(cdrs.c.callid)
    .where(cdrs.c.account_id == bindparam("account_id"), cdrs.c.callid == _PAGE.c.callid)
    .limit(1)
    .lateral("c")
)
_EXISTING = select(_PROBE.c.callid).select_from(_PAGE.join(_PROBE, true())).limit(1)
_COPY_TYPES = [_copy_type(staging.c[name].type) for name in LOAD_COLUMNS]
_JSONB_WIRE = b"\x01"  # jsonb binary format version


@contextmanager
def database_errors() -> Iterator[None]:
    """The boundary of the driver: a database error becomes a LoadError (kind "database")
    carrying the driver's first line."""
    try:
        yield
    except DBAPIError as exc:
        lines = str(exc.orig or exc).strip().splitlines()
        raise LoadError(lines[0] if lines else type(exc).__name__) from exc


def load_page(
    conn: Connection,
    account_id: int,
    rows: Sequence[Cdr],
    bad: Sequence[Reject] = (),
    run_id: str | None = None,
    fetched_at: datetime | None = None,
) -> LoadCounts:
    """Store one page in the caller's transaction and say what happened to each row.

    `fetched_at` is when the page's answer was received (default: now): a stored row read
    later than that is not overwritten by this older read (counted unchanged)."""
    fetched_at = fetched_at or datetime.now(UTC)
    counts = LoadCounts(rejected=len(bad))
    if bad:
        store_rejects(conn, account_id, bad, run_id)
    unique = dedup(rows)
    if not unique:
        return counts
    if not _existing(conn, account_id, unique) and _copy_new(conn, account_id, unique, fetched_at):
        counts.inserted = len(unique)  # a page of new CDRs: straight into cdrs
        refresh(conn, account_id, [r[0] for r in unique])  # kept BI data, same transaction
        return counts
    _prepare_staging(conn)
    _copy(conn, _COPY, account_id, unique, fetched_at)
    inserted, changed = conn.execute(_UPSERT).one()
    counts.inserted = inserted
    counts.updated = changed - inserted
    counts.unchanged = len(unique) - changed
    if changed:
        refresh(conn, account_id, [r[0] for r in unique])  # kept BI data, same transaction
    return counts


def _existing(conn: Connection, account_id: int, rows: Sequence[Cdr]) -> bool:
    """Whether any of these CDRs is stored already (one primary-key probe per row)."""
    found = conn.execute(_EXISTING, {"account_id": account_id, "callids": [r[0] for r in rows]})
    return found.first() is not None


def _copy_new(conn: Connection, account_id: int, rows: Sequence[Cdr], fetched_at: datetime) -> bool:
    """COPY rows that were not stored a moment ago straight into cdrs, under a savepoint.

    A concurrent writer (a backfill beside the daemon) may store one of them in between:
    the unique key then refuses the COPY, the savepoint rolls it back, and the caller
    takes the upsert path. Returns whether the rows are in."""
    try:
        with conn.begin_nested():
            _copy(conn, _COPY_NEW, account_id, rows, fetched_at)
    except psycopg.errors.UniqueViolation:
        return False
    return True


def _copy(
    conn: Connection, statement: str, account_id: int, rows: Sequence[Cdr], fetched_at: datetime
) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    dumps, wire = orjson.dumps, _JSONB_WIRE
    with cursor.copy(statement) as copy:
        copy.set_types(_COPY_TYPES)
        write = copy.write_row
        for row in rows:
            try:
                raw = dumps(row[-2])
            except TypeError:  # an integer beyond 64 bits, kept exact by the decoder
                raw = _exact_dumps(row[-2])
            write((account_id, *row[:-2], wire + raw, row[-1], fetched_at))


def _exact_dumps(raw: dict[str, Any]) -> bytes:
    """The record as JSON by the standard library, which writes integers of any size
    (jsonb holds them as numeric), for the records orjson refuses."""
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode()


def _prepare_staging(conn: Connection) -> None:
    """Create this session's staging table if it has none (the transaction that created
    it may have rolled back); else empty it (it also empties itself at commit)."""
    if conn.exec_driver_sql("SELECT to_regclass('pg_temp.cdr_staging')").scalar() is None:
        conn.execute(CreateTable(staging))
    else:
        conn.exec_driver_sql("DELETE FROM cdr_staging")


def store_rejects(
    conn: Connection, account_id: int, bad: Sequence[Reject], run_id: str | None
) -> None:
    """Keep each bad record whole with its reason; a record met again is counted, not doubled."""
    latest = {content_hash(r.raw): r for r in bad}
    statement = insert(rejects).values(
        [
            {
                "account_id": account_id,
                "callid": r.callid,
                "reason": r.reason,
                "raw": r.raw,
                "raw_hash": key,
                "run_id": run_id,
            }
            for key, r in sorted(latest.items())
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[rejects.c.account_id, rejects.c.raw_hash],
        set_={
            "times_seen": rejects.c.times_seen + 1,
            "last_seen_at": func.now(),
            "reason": statement.excluded.reason,
            "run_id": statement.excluded.run_id,
        },
    )
    conn.execute(statement)
