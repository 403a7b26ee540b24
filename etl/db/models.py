"""The database schema as SQLAlchemy 2 models. Alembic migrations are checked against it.

Times the provider gives are stored as timestamptz (converted from the account's zone);
positions on the provider's wall clock (watermarks, windows) are stored as naive
`timestamp` because that is what the API filters on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)
WALL = DateTime(timezone=False)  # the provider's naive local wall clock


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(TZ, nullable=False, server_default=func.now())


class Account(Base):
    """One CallMyWay account as configured. Never a password."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    username: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Cdr(Base):
    """One CDR leg: typed columns named as the API fields, plus the raw record whole."""

    __tablename__ = "cdrs"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    callid: Mapped[str] = mapped_column(Text, primary_key=True)
    original_callid: Mapped[str | None] = mapped_column(Text)
    ref_callid: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    ani: Mapped[str | None] = mapped_column(Text)
    dnis: Mapped[str | None] = mapped_column(Text)
    ani_user: Mapped[str | None] = mapped_column(Text)
    dnis_user: Mapped[str | None] = mapped_column(Text)
    name_endpoint_ani: Mapped[str | None] = mapped_column(Text)
    name_endpoint_dnis: Mapped[str | None] = mapped_column(Text)
    route_name: Mapped[str | None] = mapped_column(Text)
    end_reason: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[int | None] = mapped_column(Integer)
    ring_time: Mapped[int | None] = mapped_column(Integer)
    detect_time: Mapped[datetime | None] = mapped_column(TZ)
    connect_time: Mapped[datetime | None] = mapped_column(TZ)
    disconnect_time: Mapped[datetime | None] = mapped_column(TZ)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    content_hash: Mapped[str] = mapped_column(String(32))
    # When the answer holding this content was received: an older read never overwrites a
    # newer one (a backfill page in flight beside the daemon's newer read of the same CDR).
    fetched_at: Mapped[datetime | None] = mapped_column(TZ)
    first_seen_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index(None, "account_id", "detect_time"),
        Index(None, "original_callid"),
    )


class Watermark(Base):
    """How far each pass of the incremental sync has read, on the provider's wall clock."""

    __tablename__ = "watermarks"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    pass_name: Mapped[str] = mapped_column(Text, primary_key=True)  # its delay: "2m", "1h"...
    position: Mapped[datetime] = mapped_column(WALL)
    updated_at: Mapped[datetime] = _now()


class Run(Base):
    """The audit trail: one row per account per run of any kind."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[str] = mapped_column(Text)  # shared by the accounts of one invocation
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)  # sync | backfill | verify | live
    range_start: Mapped[datetime | None] = mapped_column(WALL)
    range_end: Mapped[datetime | None] = mapped_column(WALL)
    windows: Mapped[int] = mapped_column(Integer, server_default="0")
    pages: Mapped[int] = mapped_column(Integer, server_default="0")
    requests: Mapped[int] = mapped_column(Integer, server_default="0")
    retries: Mapped[int] = mapped_column(Integer, server_default="0")
    fetched: Mapped[int] = mapped_column(BigInteger, server_default="0")
    inserted: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated: Mapped[int] = mapped_column(BigInteger, server_default="0")
    unchanged: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rejected: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # windows whose walk met a callid on two pages (the server's order moved under it)
    disturbed: Mapped[int] = mapped_column(Integer, server_default="0")
    # the extra requests spent re-reading those windows in a way that needs no order
    reread_requests: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(Text, server_default="running")  # running|ok|failed
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(TZ)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'ok', 'failed', 'skipped')", name="status"),
        Index(None, "account_id", "started_at"),
    )


class Reject(Base):
    """A record that could not be normalized, kept whole with the reason. One row per
    distinct raw record; `times_seen` counts the reads that met it again."""

    __tablename__ = "rejects"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    callid: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    raw_hash: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(Text)
    times_seen: Mapped[int] = mapped_column(Integer, server_default="1")
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()

    __table_args__ = (Index(None, "account_id", "raw_hash", unique=True),)


class LiveCall(Base):
    """The latest snapshot of calls in progress, replaced whole at each snapshot."""

    __tablename__ = "live_calls"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    callid: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text)  # ringing | talking
    type: Mapped[str | None] = mapped_column(Text)
    ani: Mapped[str | None] = mapped_column(Text)
    dnis: Mapped[str | None] = mapped_column(Text)
    ani_user: Mapped[str | None] = mapped_column(Text)
    dnis_user: Mapped[str | None] = mapped_column(Text)
    detect_time: Mapped[datetime | None] = mapped_column(TZ)
    connect_time: Mapped[datetime | None] = mapped_column(TZ)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    snapshot_at: Mapped[datetime] = mapped_column(TZ)


class LiveSample(Base):
    """Concurrent calls over time: one row per account per snapshot."""

    __tablename__ = "live_samples"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    sampled_at: Mapped[datetime] = mapped_column(TZ)
    active: Mapped[int] = mapped_column(Integer)
    ringing: Mapped[int] = mapped_column(Integer)
    talking: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index(None, "account_id", "sampled_at"),)


class Backfill(Base):
    """One backfill request: a range of one account read once, window by window."""

    __tablename__ = "backfills"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    range_start: Mapped[datetime] = mapped_column(WALL)
    range_end: Mapped[datetime] = mapped_column(WALL)
    window_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, server_default="running")  # running | done
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(TZ)

    __table_args__ = (Index(None, "account_id", "range_start", "range_end"),)


class BackfillWindow(Base):
    """A window of a backfill that is stored: a re-run after a crash skips it."""

    __tablename__ = "backfill_windows"

    backfill_id: Mapped[int] = mapped_column(
        ForeignKey("backfills.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(WALL, primary_key=True)
    window_end: Mapped[datetime] = mapped_column(WALL)
    fetched: Mapped[int] = mapped_column(Integer)
    done_at: Mapped[datetime] = _now()


# The Core tables, for the statements of the loader and the state module.
accounts = cast(Table, Account.__table__)
cdrs = cast(Table, Cdr.__table__)
watermarks = cast(Table, Watermark.__table__)
runs = cast(Table, Run.__table__)
rejects = cast(Table, Reject.__table__)
live_calls = cast(Table, LiveCall.__table__)
live_samples = cast(Table, LiveSample.__table__)
backfills = cast(Table, Backfill.__table__)
backfill_windows = cast(Table, BackfillWindow.__table__)
metadata = Base.metadata

# --- kept BI data (maintained by the load, see etl/db/rollup.py; revision 0005) ----------

_END_COUNTS = ("ok", "cancelled", "no_answer", "temporarily_unavailable", "not_found",
               "decline", "service_unavailable", "other")  # fmt: skip


def _big(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default="0")


call_legs = Table(
    "call_legs",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("callid", Text, primary_key=True),
    Column("link", Text),  # ref_callid of a trunk leg, original_callid of any other leg
    Column("call_id", Text, nullable=False),
    Column("role", Text, nullable=False),  # trunk | agent | single
    Column("direction", Text, nullable=False),  # incoming | outgoing
    Column("leg_start", TZ),
    Column("call_start", TZ),
    Column("bucket_start", TZ),  # the 5-minute bucket (UTC) of its call's start
    Column("talk_start", TZ),  # answered legs: connect_time (else disconnect - duration)
    Column("talk_end", TZ),  # talk_start + duration (at most a day)
    Index(None, "account_id", "link"),
    Index(None, "account_id", "bucket_start"),
)
"""One row per cdrs row: which call the leg belongs to, its role and its call's bucket."""

rollup_5min = Table(
    "rollup_5min",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_start", TZ, primary_key=True),
    Column("hour_start", TZ, nullable=False),  # the local hour holding the bucket
    Column("day", Date, nullable=False),
    Column("local_hour", WALL, nullable=False),
    _big("legs"),
    _big("calls"),
    _big("answered"),
    _big("answered_seconds"),  # sum of duration over answered legs
    _big("talk_seconds"),  # sum over answered calls of their longest leg
    *(_big(f"end_{r}") for r in _END_COUNTS),
    _big("network_failed"),  # unanswered calls whose own leg ended by the network's fault
    _big("inbound_calls"),
    _big("inbound_answered"),  # answered by a person (an agent, or a direct inbound leg)
    _big("answered_within_sl"),  # ... within rollup_settings.service_level_seconds
    _big("answer_wait_seconds"),  # sum of their waits
    _big("abandoned"),  # inbound, not answered by a person, not failed by the network
    _big("abandon_wait_seconds"),  # sum of the abandoned calls' time until they ended
    Index(None, "account_id", "day"),
)
"""Per account and 5 minutes (UTC buckets: every zone's offset is a multiple of 15 minutes,
so a bucket lies in one local hour): the figures of v_hourly_account and v_daily_account as
sums, calls counted in the bucket of their start. Small buckets keep the load's recompute
of the buckets a page touches small."""

rollup_endpoint_5min = Table(
    "rollup_endpoint_5min",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("bucket_start", TZ, nullable=False),
    Column("day", Date, nullable=False),
    Column("endpoint", Text),
    Column("endpoint_name", Text),  # the bucket's latest non-null name, by (name_at, name_callid)
    Column("name_at", TZ),
    Column("name_callid", Text),
    _big("legs"),
    _big("incoming_legs"),
    _big("outgoing_legs"),
    _big("answered"),
    _big("talk_seconds"),
    _big("ring_seconds"),
    Index(None, "account_id", "bucket_start"),
)
"""Per account, 5-minute bucket and endpoint (null endpoint included): v_daily_endpoint's sums."""

rollup_endpoint_hourly = Table(
    "rollup_endpoint_hourly",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("hour_start", TZ, nullable=False),
    Column("day", Date, nullable=False),
    Column("endpoint", Text),
    Column("endpoint_name", Text),
    Column("name_at", TZ),
    Column("name_callid", Text),
    _big("legs"),
    _big("incoming_legs"),
    _big("outgoing_legs"),
    _big("answered"),
    _big("talk_seconds"),
    _big("ring_seconds"),
    Index(None, "account_id", "day"),
    Index(None, "account_id", "hour_start"),
)
"""rollup_endpoint_5min summed per local hour (recomputed from it for the hours a page
touches): what v_daily_endpoint reads, 12 times fewer rows."""

concurrency_minute = Table(
    "concurrency_minute",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("minute", TZ, primary_key=True),
    Column("calls", Integer, nullable=False),
)
"""Per account and minute (UTC) with a call in progress: the answered calls whose talk span
(their legs' first talk_start to last talk_end) overlaps the minute. Kept by the load with
+1/-1 per minute of each call's old and new span; minutes with no call have no row."""

rollup_settings = Table(
    "rollup_settings",
    metadata,
    Column("id", Boolean, primary_key=True, server_default=text("true")),
    Column("service_level_seconds", Integer, nullable=False, server_default="20"),
    CheckConstraint("id", name="one_row"),
)
"""The definitions the kept data was computed with (one row): `[bi] service_level_seconds`
as of the last `cdr-etl rollup --rebuild`."""

inbound_calls = Table(
    "inbound_calls",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("call_id", Text, primary_key=True),  # the trunk (or direct inbound) leg's callid
    Column("customer_number", Text),
    Column("did", Text),
    Column("started_at", TZ),
    Column("day", Date),  # started_at's local date
    Column("ended_at", TZ),
    Column("answered", Boolean),
    Column("agent_answered", Boolean),
    Column("answered_by", Text),
    Column("answered_by_name", Text),
    Column("wait_seconds", Integer),
    Column("talk_seconds", Integer),
    Column("legs", BigInteger),
    Index(None, "account_id", "day"),
    Index(None, "account_id", "started_at"),
)
"""One row per inbound call, as v_inbound_calls lists them (each trunk leg with its agent
legs, each direct inbound leg): kept by the load for the legs a page touches, so that a
day's calls are one index range instead of a derivation over the account's whole table."""

account_totals = Table(
    "account_totals",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    _big("cdrs"),
)
"""Per account: rows in cdrs (v_sync_health.rows_stored without counting the table)."""

rollup_rebuilds = Table(
    "rollup_rebuilds",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("next_day", Date, nullable=False),
)
"""A rebuild in progress (`cdr-etl rollup --rebuild`): the next UTC day it will recompute."""
