"""The database schema as SQLAlchemy 2 models. Alembic migrations are checked against it.

Core `Table`s, not declarative classes: the loader and the state module build their
statements from the tables, and nothing maps rows to objects, so no command pays for
importing the ORM (about 0.1 s of every command's start).

Times the provider gives are stored as timestamptz (converted from the account's zone);
positions on the provider's wall clock (watermarks, windows) are stored as naive
`timestamp` because that is what the API filters on.
"""

from __future__ import annotations

from datetime import datetime

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

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)
WALL = DateTime(timezone=False)  # the provider's naive local wall clock


metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now(name: str) -> Column[datetime]:
    return Column(name, TZ, nullable=False, server_default=func.now())


accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", Text, unique=True, nullable=False),
    Column("username", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    _now("created_at"),
    _now("updated_at"),
)
"""One CallMyWay account as configured. Never a password."""

cdrs = Table(
    "cdrs",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("callid", Text, primary_key=True),
    Column("original_callid", Text),
    Column("ref_callid", Text),
    Column("type", Text),
    Column("ani", Text),
    Column("dnis", Text),
    Column("ani_user", Text),
    Column("dnis_user", Text),
    Column("name_endpoint_ani", Text),
    Column("name_endpoint_dnis", Text),
    Column("route_name", Text),
    Column("end_reason", Text),
    Column("duration", Integer),
    Column("ring_time", Integer),
    Column("detect_time", TZ),
    Column("connect_time", TZ),
    Column("disconnect_time", TZ),
    Column("raw", JSONB, nullable=False),
    Column("content_hash", String(32), nullable=False),
    # When the answer holding this content was received: an older read never overwrites a
    # newer one (a backfill page in flight beside the daemon's newer read of the same CDR).
    Column("fetched_at", TZ),
    _now("first_seen_at"),
    _now("updated_at"),
    Index(None, "account_id", "detect_time"),
    Index(None, "original_callid"),
)
"""One CDR leg: typed columns named as the API fields, plus the raw record whole."""

watermarks = Table(
    "watermarks",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("pass_name", Text, primary_key=True),  # its delay: "2m", "1h"...
    Column("position", WALL, nullable=False),
    _now("updated_at"),
)
"""How far each pass of the incremental sync has read, on the provider's wall clock."""

runs = Table(
    "runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("run_id", Text, nullable=False),  # shared by the accounts of one invocation
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),  # sync | backfill | verify | live
    Column("range_start", WALL),
    Column("range_end", WALL),
    Column("windows", Integer, server_default="0", nullable=False),
    Column("pages", Integer, server_default="0", nullable=False),
    Column("requests", Integer, server_default="0", nullable=False),
    Column("retries", Integer, server_default="0", nullable=False),
    Column("fetched", BigInteger, server_default="0", nullable=False),
    Column("inserted", BigInteger, server_default="0", nullable=False),
    Column("updated", BigInteger, server_default="0", nullable=False),
    Column("unchanged", BigInteger, server_default="0", nullable=False),
    Column("rejected", BigInteger, server_default="0", nullable=False),
    # windows whose walk met a callid on two pages (the server's order moved under it)
    Column("disturbed", Integer, server_default="0", nullable=False),
    # the extra requests spent re-reading those windows in a way that needs no order
    Column("reread_requests", Integer, server_default="0", nullable=False),
    Column("status", Text, server_default="running", nullable=False),  # running|ok|failed
    Column("error", Text),
    _now("started_at"),
    Column("finished_at", TZ),
    CheckConstraint("status IN ('running', 'ok', 'failed', 'skipped')", name="status"),
    Index(None, "account_id", "started_at"),
)
"""The audit trail: one row per account per run of any kind."""

rejects = Table(
    "rejects",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("callid", Text),
    Column("reason", Text, nullable=False),
    Column("raw", JSONB, nullable=False),
    Column("raw_hash", String(32), nullable=False),
    Column("run_id", Text),
    Column("times_seen", Integer, server_default="1", nullable=False),
    _now("first_seen_at"),
    _now("last_seen_at"),
    Index(None, "account_id", "raw_hash", unique=True),
)
"""A record that could not be normalized, kept whole with the reason. One row per
distinct raw record; `times_seen` counts the reads that met it again."""

live_calls = Table(
    "live_calls",
    metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("callid", Text, primary_key=True),
    Column("state", Text, nullable=False),  # ringing | talking
    Column("type", Text),
    Column("ani", Text),
    Column("dnis", Text),
    Column("ani_user", Text),
    Column("dnis_user", Text),
    Column("detect_time", TZ),
    Column("connect_time", TZ),
    Column("raw", JSONB, nullable=False),
    Column("snapshot_at", TZ, nullable=False),
)
"""The latest snapshot of calls in progress, replaced whole at each snapshot."""

live_samples = Table(
    "live_samples",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("sampled_at", TZ, nullable=False),
    Column("active", Integer, nullable=False),
    Column("ringing", Integer, nullable=False),
    Column("talking", Integer, nullable=False),
    Index(None, "account_id", "sampled_at"),
)
"""Concurrent calls over time: one row per account per snapshot."""

backfills = Table(
    "backfills",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("range_start", WALL, nullable=False),
    Column("range_end", WALL, nullable=False),
    Column("window_seconds", Integer, nullable=False),
    Column("status", Text, server_default="running", nullable=False),  # running | done
    _now("created_at"),
    Column("finished_at", TZ),
    Index(None, "account_id", "range_start", "range_end"),
)
"""One backfill request: a range of one account read once, window by window."""

backfill_windows = Table(
    "backfill_windows",
    metadata,
    Column("backfill_id", ForeignKey("backfills.id", ondelete="CASCADE"), primary_key=True),
    Column("window_start", WALL, primary_key=True),
    Column("window_end", WALL, nullable=False),
    Column("fetched", Integer, nullable=False),
    _now("done_at"),
)
"""A window of a backfill that is stored: a re-run after a crash skips it."""

# --- kept BI data (maintained by the load, see etl/db/rollup.py; revision 0005) ----------

_END_COUNTS = ("ok", "cancelled", "no_answer", "temporarily_unavailable", "not_found",
               "decline", "service_unavailable", "other")  # fmt: skip


def _big(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default="0")


call_legs = Table(
    "call_legs",
    metadata,
    # No foreign key: its per-row check, with inbound_calls', cost the load about 10 us per
    # leg. The trigger accounts_forget_kept_legs deletes an account's rows (revision 0008)
    Column("account_id", Integer, primary_key=True),
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
    # the leg's CDR columns its figures need, so that a bucket's figures are one index range
    # of call_legs, not a probe of cdrs per leg (revision 0008)
    Column("type", Text),
    Column("original_callid", Text),
    Column("end_reason", Text),
    Column("duration", Integer),
    Column("ring_time", Integer),
    Column("connect_time", TZ),
    Column("disconnect_time", TZ),
    Column("dnis_user", Text),
    Column("ani_user", Text),
    Column("name_endpoint_dnis", Text),
    Column("name_endpoint_ani", Text),
    Index(None, "account_id", "link"),
    Index(None, "account_id", "bucket_start"),
)
"""One row per cdrs row: which call the leg belongs to, its role and its call's bucket, and a
copy of the leg's CDR columns that its call's figures need."""

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
    Column("account_id", Integer, primary_key=True),  # no foreign key: as call_legs
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
