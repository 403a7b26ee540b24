"""Kept BI data: call-level facts and hourly rollups, maintained by the load.

Tables (etl/db/models.py; created and first filled by Alembic revision 0005):

- `call_legs`: one row per `cdrs` row: its link (`ref_callid` of a trunk leg,
  `original_callid` of any other leg), the call it belongs to (`call_id`), its `role`
  (trunk | agent | single), `direction`, `leg_start`, `call_start` and `bucket_start` (the
  5-minute UTC bucket of the call's start), by the rules of etl/db/views.py; and, since
  revision 0008, the leg's CDR columns that the figures need (type, end_reason, duration,
  ...), so that a bucket's figures are one index range of `call_legs`.
- `rollup_5min`: per account and 5 minutes (UTC buckets inside one local hour), the sums
  behind `v_hourly_account` and `v_daily_account` (an hour or a day is the sum of its
  buckets: a call counts in the bucket of its start).
- `rollup_endpoint_5min`: per account, 5-minute bucket and endpoint, the sums behind
  `v_daily_endpoint`.
- `rollup_endpoint_hourly`: the same summed per local hour, what `v_daily_endpoint` reads.
- `account_totals`: rows in `cdrs` per account (`v_sync_health.rows_stored`).
- `concurrency_minute`: per account and UTC minute, the answered calls in progress
  (revision 0006); `rollup_settings`: the service-level threshold in use.
- `inbound_calls`: one row per inbound call as `v_inbound_calls` lists it (revision 0007).

`call_legs` and `inbound_calls` have no foreign key to `accounts` (a check per row at
load); the trigger function `cdr_forget_account` deletes a deleted account's rows of them
(revision 0008), as the other tables' cascade does.

How they stay current: `load_page` calls `refresh(conn, account_id, callids)` after it
stores the page, in the page's transaction. The server-side function
`cdr_rollup_refresh` (SQL frozen in revisions 0005 to 0009, each as it applied it):

1. takes a transaction-scoped advisory lock per account, so two writers of one account (a
   backfill beside the daemon) refresh one after the other: the second one, in READ
   COMMITTED, sees everything the first committed, so no figure is computed from a
   snapshot that misses a committed page. The lock is taken after the page's rows are
   written and the refresh touches no `cdrs` row lock, so it cannot close a deadlock cycle
   (one page per transaction, as the pipeline does);
2. finds the legs to recompute: the page's legs and every kept leg sharing a link with
   them, before or after the page (an agent leg stored before its trunk leg is re-classed
   when the trunk arrives, in another page, window, run or pass; an updated CDR that
   changed its link leaves its old call right too);
3. deletes and re-inserts those legs' `call_legs` rows and the `inbound_calls` rows they
   head, both recomputed from one read of the legs' `cdrs` rows (a trunk leg's agent legs
   are among the legs: they share its link; a leg that no longer heads a call loses its
   row);
4. brings the rollup rows of every bucket those legs were in before or are in now in step,
   by the cheaper of two exact ways (revision 0009): `cdr_rollup_delta` moves them by the
   difference of those calls' figures as kept before (the `call_legs` rows it replaced)
   and as kept now (a cost per leg re-kept, whatever the size of the buckets); or
   `cdr_rollup_buckets` recomputes the buckets from all their `call_legs` rows (a cost per
   leg in them, less than half the other's per leg: a page of a sparse bucket). Every
   figure is a sum, so the difference is exact; an endpoint's latest name is not, so it
   is counted again from the rows under it when the leg that gave it is taken out and not
   put back as it was. Where the difference would take a figure below zero (kept rows
   that no longer match: edited by hand, kept under another timezone or threshold until a
   rebuild runs, a bug), it is undone and the buckets are recomputed instead, with a
   server WARNING that names `cdr-etl rollup --rebuild` (the engine logs it);
5. takes each recomputed call's old talk span (from the `call_legs` rows it replaced) out
   of `concurrency_minute` and puts its new one in (`cdr_concurrency_add`, -1 / +1 per
   minute): exact, since the old span is precisely the one added when it was kept;
6. adds the page's new legs to `account_totals`.

Every lookup by key in the refresh is one index probe per key (a LATERAL subquery with
LIMIT / OFFSET 0): a table loaded faster than autovacuum analyzes it once made the planner
read the account's whole index range for each page, a cost that grew with the table. The
buckets' legs are read once for both rollups (a MATERIALIZED CTE).

The functions also re-plan their statements on every call (`plan_cache_mode =
force_custom_plan`): a plan cached by a long-lived session while a table was small (the
daemon's, a backfill's) was kept as the table grew, and one such plan read the account's
whole index range for every leg of a bucket.

So at every committed moment the kept data equals a full recomputation from `cdrs`
(tests/test_rollup.py compares them with the old view SQL kept as an oracle).

`rebuild` forgets the account's calls in progress, then recomputes everything of the
account day by day (by `detect_time`), each day in its own transaction, with the position
stored in `rollup_rebuilds` so a killed rebuild resumes where it stopped: after a timezone
fix, a change of definition, or kept counts that no longer match (the load refuses to take
a minute's count, or a rollup figure, below zero and says so). A rebuild always
recomputes the buckets (what was kept may be wrong).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import DateTime, Text

__all__ = [
    "FUNCTIONS",
    "RebuildProgress",
    "kept_service_level",
    "rebuild",
    "refresh",
    "set_service_level",
]

INBOUND_COLUMNS: tuple[str, ...] = (
    "account_id", "call_id", "customer_number", "did", "started_at", "day", "ended_at",
    "answered", "agent_answered", "answered_by", "answered_by_name", "wait_seconds",
    "talk_seconds", "legs",
)  # fmt: skip
"""The columns of `inbound_calls`, in the order `inbound_rows` gives them."""


_INBOUND_ROWS = """SELECT
    x.account_id,
    x.call_id,
    x.customer_number,
    x.did,
    x.started_at,
    x.day,
    x.ended_at,
    x.agent_callid IS NOT NULL OR x.trunk_answered,
    x.agent_callid IS NOT NULL,
    CASE
        WHEN x.agent_callid IS NOT NULL THEN x.agent_endpoint
        WHEN x.trunk_answered THEN x.trunk_endpoint
    END,
    CASE
        WHEN x.agent_callid IS NOT NULL THEN x.agent_endpoint_name
        WHEN x.trunk_answered THEN x.trunk_endpoint_name
    END,
    CASE
        WHEN x.waited_until < x.started_at THEN 0  -- the provider's clocks disagree
        ELSE floor(extract(epoch FROM x.waited_until - x.started_at))::integer
    END,
    CASE
        WHEN x.agent_callid IS NOT NULL THEN x.agent_duration
        WHEN x.trunk_answered THEN x.trunk_duration
        ELSE 0
    END,
    1 + x.agent_legs
FROM (
    SELECT
        y.*,
        -- the answering leg: the first agent leg to answer, else the trunk leg if answered
        CASE
            WHEN y.agent_callid IS NOT NULL THEN y.agent_answered_at
            WHEN y.trunk_answered THEN y.trunk_answered_at
            ELSE y.ended_at
        END AS waited_until
    FROM (
        SELECT
            t.account_id,
            t.callid AS call_id,
            t.ani AS customer_number,
            t.dnis AS did,
            t.dnis_user AS trunk_endpoint,
            t.name_endpoint_dnis AS trunk_endpoint_name,
            coalesce(t.detect_time, t.connect_time, t.disconnect_time) AS started_at,
            (coalesce(t.detect_time, t.connect_time, t.disconnect_time) AT TIME ZONE {tz})::date
                AS day,
            greatest(t.disconnect_time, g.ended_at) AS ended_at,
            coalesce(t.duration, 0) > 0 AS trunk_answered,
            t.duration AS trunk_duration,
            coalesce(t.connect_time, t.disconnect_time - make_interval(secs => t.duration))
                AS trunk_answered_at,
            coalesce(g.agent_legs, 0) AS agent_legs,
            g.agent_callid,
            g.agent_endpoint,
            g.agent_endpoint_name,
            g.agent_duration,
            g.agent_answered_at
        FROM {legs} t
        LEFT JOIN (
            -- agent legs (not trunk legs themselves) per account and original_callid
            SELECT
                g.account_id,
                g.original_callid,
                count(*) AS agent_legs,
                max(g.disconnect_time) AS ended_at,
                (array_agg(g.callid ORDER BY g.answered_at, g.callid)
                    FILTER (WHERE g.duration > 0))[1] AS agent_callid,
                (array_agg(g.dnis_user ORDER BY g.answered_at, g.callid)
                    FILTER (WHERE g.duration > 0))[1] AS agent_endpoint,
                (array_agg(g.name_endpoint_dnis ORDER BY g.answered_at, g.callid)
                    FILTER (WHERE g.duration > 0))[1] AS agent_endpoint_name,
                (array_agg(g.duration ORDER BY g.answered_at, g.callid)
                    FILTER (WHERE g.duration > 0))[1] AS agent_duration,
                (array_agg(g.answered_at ORDER BY g.answered_at, g.callid)
                    FILTER (WHERE g.duration > 0))[1] AS agent_answered_at
            FROM (
                SELECT
                    g.*,
                    coalesce(
                        g.connect_time, g.disconnect_time - make_interval(secs => g.duration)
                    ) AS answered_at
                FROM {legs} g
                WHERE coalesce(g.ref_callid, '0') = '0' AND g.original_callid IS NOT NULL
            ) g
            GROUP BY g.account_id, g.original_callid
        ) g
            ON g.account_id = t.account_id
            AND g.original_callid = t.ref_callid
            AND t.ref_callid <> '0'
        WHERE coalesce(t.ref_callid, '0') <> '0'
            OR (t.type = 'incoming' AND (t.original_callid IS NULL OR t.original_callid = t.callid))
    ) y
) x"""


def inbound_rows(legs: str, tz: str) -> str:
    """The SELECT of the `inbound_calls` rows of the `cdrs` rows in `legs` (a table or CTE
    with cdrs' columns), with local days on zone `tz` (an expression of `t`, the heading leg):
    each trunk leg (a real ref_callid) with its agent legs (in `legs`, same account,
    original_callid = its ref_callid, not trunk legs themselves), and each direct inbound leg
    (incoming, not a trunk leg, original_callid null or its own callid). The definitions are
    v_inbound_calls' (etl/db/views.py). The agent legs are aggregated per original_callid and
    hash-joined to the trunk legs: no probe per call."""
    return _INBOUND_ROWS.format(legs=legs, tz=tz)


ROLLUP_FIGURES: tuple[str, ...] = (
    "legs", "calls", "answered", "answered_seconds", "talk_seconds", "end_ok", "end_cancelled",
    "end_no_answer", "end_temporarily_unavailable", "end_not_found", "end_decline",
    "end_service_unavailable", "end_other", "network_failed", "inbound_calls",
    "inbound_answered", "answered_within_sl", "answer_wait_seconds", "abandoned",
    "abandon_wait_seconds",
)  # fmt: skip
"""The figures of `rollup_5min`: each a sum over the bucket's calls."""

# Per 5-minute bucket, rollup_5min's figures of the calls of `legs` (call_legs rows with a
# `sign`: 1 counts a call, -1 takes it out), so one text serves the recompute (every sign 1)
# and the load's difference of a page's calls as kept before (-1) and now (+1).
_BUCKET_FIGURES = """        SELECT
            f.bucket_start,
            sum(f.sign * f.legs) AS legs,
            sum(f.sign) AS calls,
            coalesce(sum(f.sign) FILTER (WHERE f.answered), 0) AS answered,
            coalesce(sum(f.sign * f.answered_seconds), 0) AS answered_seconds,
            coalesce(sum(f.sign * f.talk_seconds) FILTER (WHERE f.answered), 0) AS talk_seconds,
            sum(f.sign * f.end_ok) AS end_ok,
            sum(f.sign * f.end_cancelled) AS end_cancelled,
            sum(f.sign * f.end_no_answer) AS end_no_answer,
            sum(f.sign * f.end_temporarily_unavailable) AS end_temporarily_unavailable,
            sum(f.sign * f.end_not_found) AS end_not_found,
            sum(f.sign * f.end_decline) AS end_decline,
            sum(f.sign * f.end_service_unavailable) AS end_service_unavailable,
            sum(f.sign * f.end_other) AS end_other,
            coalesce(sum(f.sign) FILTER (WHERE f.network_failed), 0) AS network_failed,
            coalesce(sum(f.sign) FILTER (WHERE f.inbound), 0) AS inbound_calls,
            coalesce(sum(f.sign) FILTER (WHERE f.inbound AND f.person_answered), 0)
                AS inbound_answered,
            coalesce(
                sum(f.sign) FILTER (WHERE f.inbound AND f.person_answered AND f.wait <= v_sl), 0
            ) AS answered_within_sl,
            coalesce(sum(f.sign * f.wait) FILTER (WHERE f.inbound AND f.person_answered), 0)
                AS answer_wait_seconds,
            coalesce(
                sum(f.sign) FILTER (WHERE f.inbound AND NOT f.person_answered AND f.caller_left),
                0
            ) AS abandoned,
            coalesce(
                sum(f.sign * f.stayed) FILTER (
                    WHERE f.inbound AND NOT f.person_answered AND f.caller_left
                ),
                0
            ) AS abandon_wait_seconds
        FROM (
            -- one row per call: its flags (see etl/db/views.py for the definitions)
            SELECT
                c.*,
                NOT c.answered AND NOT c.user_ended AS network_failed,
                c.trunk OR c.direct_inbound AS inbound,
                greatest(floor(extract(epoch FROM c.person_answered_at - c.started_at)), 0)
                    AS wait,
                coalesce(greatest(floor(extract(epoch FROM c.ended_at - c.started_at)), 0), 0)
                    AS stayed
            FROM (
                SELECT
                    k.sign,
                    k.bucket_start,
                    k.call_id,
                    count(*) AS legs,
                    bool_or(coalesce(k.duration, 0) > 0) AS answered,
                    sum(k.duration) FILTER (WHERE k.duration > 0) AS answered_seconds,
                    max(k.duration) FILTER (WHERE k.duration > 0) AS talk_seconds,
                    count(*) FILTER (WHERE k.end_reason = 'OK') AS end_ok,
                    count(*) FILTER (WHERE k.end_reason = 'CANCELLED') AS end_cancelled,
                    count(*) FILTER (WHERE k.end_reason = 'NO_ANSWER') AS end_no_answer,
                    count(*) FILTER (WHERE k.end_reason = 'TEMPORARILY_UNAVAILABLE')
                        AS end_temporarily_unavailable,
                    count(*) FILTER (WHERE k.end_reason = 'NOT_FOUND') AS end_not_found,
                    count(*) FILTER (WHERE k.end_reason = 'DECLINE') AS end_decline,
                    count(*) FILTER (WHERE k.end_reason = 'SERVICE_UNAVAILABLE')
                        AS end_service_unavailable,
                    count(*) FILTER (
                        WHERE k.end_reason IS NULL OR k.end_reason NOT IN (
                            'OK', 'CANCELLED', 'NO_ANSWER', 'TEMPORARILY_UNAVAILABLE',
                            'NOT_FOUND', 'DECLINE', 'SERVICE_UNAVAILABLE'
                        )
                    ) AS end_other,
                    -- the call's own leg (its trunk leg, or the single leg) ended by the
                    -- user's side
                    coalesce(
                        bool_or(
                            k.role <> 'agent' AND k.end_reason IN (
                                'OK', 'CANCELLED', 'NO_ANSWER', 'DECLINE', 'BUSY',
                                'TEMPORARILY_UNAVAILABLE'
                            )
                        ),
                        false
                    ) AS user_ended,
                    -- ... by the caller hanging up (after the IVR or while agents rang, or before)
                    coalesce(
                        bool_or(k.role <> 'agent' AND k.end_reason IN ('OK', 'CANCELLED')), false
                    ) AS caller_left,
                    bool_or(k.role = 'trunk') AS trunk,
                    coalesce(
                        bool_or(
                            k.role = 'single' AND k.type = 'incoming'
                            AND (k.original_callid IS NULL OR k.original_callid = k.callid)
                        ),
                        false
                    ) AS direct_inbound,
                    -- answered by a person: an agent leg, or a direct inbound leg itself
                    coalesce(bool_or(k.role <> 'trunk' AND k.duration > 0), false)
                        AS person_answered,
                    min(
                        coalesce(
                            k.connect_time, k.disconnect_time - make_interval(secs => k.duration)
                        )
                    ) FILTER (WHERE k.role <> 'trunk' AND k.duration > 0) AS person_answered_at,
                    max(k.leg_start) FILTER (WHERE k.role <> 'agent') AS started_at,
                    max(k.disconnect_time) AS ended_at
                FROM legs k
                GROUP BY k.sign, k.bucket_start, k.call_id
            ) c
        ) f
        GROUP BY f.bucket_start"""


def _listed(items: Sequence[str], indent: int) -> str:
    """SQL list items, comma-separated, wrapped at 92 characters with this indent."""
    pad = " " * indent
    return textwrap.fill(", ".join(items), 92, initial_indent=pad, subsequent_indent=pad)


_ROLLUP_COLUMNS = _listed(
    ("account_id", "bucket_start", "hour_start", "day", "local_hour", *ROLLUP_FIGURES), 8
)
_ROLLUP_VALUES = ",\n".join(
    f"        {value}"
    for value in (
        "p_account",
        "b.bucket_start",
        "date_trunc('hour', b.bucket_start, p_tz)",
        "(b.bucket_start AT TIME ZONE p_tz)::date",
        "date_trunc('hour', b.bucket_start AT TIME ZONE p_tz)",
        *(f"b.{name}" for name in ROLLUP_FIGURES),
    )
)


_ENDPOINT_FIGURES: tuple[str, ...] = (
    "legs", "incoming_legs", "outgoing_legs", "answered", "talk_seconds", "ring_seconds",
)  # fmt: skip
_ENDPOINT_OF = "CASE WHEN {a}.direction = 'incoming' THEN {a}.dnis_user ELSE {a}.ani_user END"
_NAME_OF = (
    "CASE WHEN {a}.direction = 'incoming' THEN {a}.name_endpoint_dnis "
    "ELSE {a}.name_endpoint_ani END"
)
# A kept endpoint row's latest name, counted again from what is under it, when the leg that
# gave it is gone or changed: from the bucket's legs, or from the hour's 5-minute rows.
_NAME_FROM_LEGS = """SELECT {name}, k.leg_start, k.callid
                FROM call_legs k
                WHERE m.renamed AND k.account_id = p_account AND k.bucket_start = m.key
                    AND {endpoint} IS NOT DISTINCT FROM m.endpoint AND {name} IS NOT NULL
                ORDER BY k.leg_start DESC NULLS LAST, k.callid DESC
                LIMIT 1""".format(endpoint=_ENDPOINT_OF.format(a="k"), name=_NAME_OF.format(a="k"))
_NAME_FROM_BUCKETS = """SELECT e.endpoint_name, e.name_at, e.name_callid
                FROM rollup_endpoint_5min e
                WHERE m.renamed AND e.account_id = p_account AND e.bucket_start >= m.key
                    AND e.bucket_start < m.key + interval '90 minutes'
                    AND date_trunc('hour', e.bucket_start, p_tz) = m.key
                    AND e.endpoint IS NOT DISTINCT FROM m.endpoint
                    AND e.endpoint_name IS NOT NULL
                ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC
                LIMIT 1"""


# The statement of _endpoint_delta, with its parts to fill in.
_ENDPOINT_DELTA = """    WITH o AS ({old}
    ), n AS ({new}
    ), named AS (
        -- per key, the latest named leg put in
        SELECT DISTINCT ON (n.key, n.endpoint)
            n.key, n.endpoint, n.endpoint_name, n.leg_start AS name_at, n.callid AS name_callid
        FROM n
        WHERE n.endpoint_name IS NOT NULL
        ORDER BY n.key, n.endpoint, n.leg_start DESC NULLS LAST, n.callid DESC
    ), d AS (
        SELECT
            e.key,
            e.endpoint,
            sum(e.sign) AS legs,
            coalesce(sum(e.sign) FILTER (WHERE e.direction = 'incoming'), 0) AS incoming_legs,
            coalesce(sum(e.sign) FILTER (WHERE e.direction = 'outgoing'), 0) AS outgoing_legs,
            coalesce(sum(e.sign) FILTER (WHERE e.duration > 0), 0) AS answered,
            coalesce(sum(e.sign * e.duration) FILTER (WHERE e.duration > 0), 0) AS talk_seconds,
            coalesce(sum(e.sign * greatest(e.ring_time, 0)), 0) AS ring_seconds,
            array_agg(e.callid) FILTER (WHERE e.changed) AS changed
        FROM (
            -- a leg taken out is changed unless it is put back with the same key, endpoint,
            -- start and name
            SELECT
                -1 AS sign, o.*,
                n.callid IS NULL
                    OR (n.key, n.endpoint, n.leg_start, n.endpoint_name)
                        IS DISTINCT FROM (o.key, o.endpoint, o.leg_start, o.endpoint_name)
                    AS changed
            FROM o
            LEFT JOIN n ON n.callid = o.callid
            UNION ALL
            SELECT 1, n.*, false FROM n
        ) e
        GROUP BY e.key, e.endpoint
    ), m AS MATERIALIZED (
        -- each key's kept row, if any: one index range (the bucket's or hour's rows) per key
        SELECT
            d.*,
            w.endpoint_name,
            w.name_at,
            w.name_callid,
            r.ctid AS kept_ctid,
{kept_figures},
            r.endpoint_name AS kept_name,
            r.name_at AS kept_name_at,
            r.name_callid AS kept_name_callid,
            coalesce(r.name_callid = ANY(d.changed), false) AS renamed
        FROM d
        LEFT JOIN named w ON w.key = d.key AND w.endpoint IS NOT DISTINCT FROM d.endpoint
        LEFT JOIN LATERAL (
            SELECT r.ctid, r.* FROM {table} r
            WHERE r.account_id = p_account AND r.{key} = d.key
                AND r.endpoint IS NOT DISTINCT FROM d.endpoint
            LIMIT 1
        ) r ON true
    ), dropped AS (
        DELETE FROM {table}
        WHERE ctid = ANY(ARRAY(SELECT m.kept_ctid FROM m WHERE m.kept_ctid IS NOT NULL))
    ), kept AS (
        INSERT INTO {table} (
            account_id, {key}, day, endpoint, endpoint_name, name_at, name_callid,
{figures}
        )
        SELECT
            p_account,
            m.key,
            (m.key AT TIME ZONE p_tz)::date,
            m.endpoint,
            w.endpoint_name,
            w.name_at,
            w.name_callid,
{totals}
        FROM m
        LEFT JOIN LATERAL (
            SELECT x.*
            FROM (
                SELECT m.kept_name, m.kept_name_at, m.kept_name_callid WHERE NOT m.renamed
                UNION ALL
                SELECT m.endpoint_name, m.name_at, m.name_callid
                UNION ALL
                ({name_again})
            ) x(endpoint_name, name_at, name_callid)
            WHERE x.endpoint_name IS NOT NULL
            ORDER BY x.name_at DESC NULLS LAST, x.name_callid DESC
            LIMIT 1
        ) w ON true
        WHERE {any_total}
        RETURNING {returned}
    )
    SELECT bool_or(kept.legs <= 0 OR {any_negative})
    INTO v_bad
    FROM kept;
    IF v_bad THEN
        RAISE EXCEPTION '{table} of account % would go negative', p_account
            USING ERRCODE = 'CE001';
    END IF;"""


def _endpoint_delta(table: str, key: str, key_of: str, name_again: str) -> str:
    """The statement that moves the endpoint rollup `table` (keyed by account, `key` and
    endpoint) by the difference of the legs p_old (taken out) and p_new (put in).

    The sums move by the difference. The latest name (by leg start, then callid) cannot be
    subtracted: the kept one stays unless the leg that gave it is among the legs taken out
    and not put back as it was; then it is counted again (`name_again`). Either way a newer
    name among the legs put in wins."""
    legs = """SELECT {key_of} AS key, {endpoint} AS endpoint, {name} AS endpoint_name,
            {a}.callid, {a}.leg_start, {a}.direction, {a}.duration, {a}.ring_time
        FROM unnest(p_{side}) {a}
        WHERE {a}.bucket_start IS NOT NULL"""
    old, new = (
        legs.format(
            key_of=key_of.format(a=a),
            endpoint=_ENDPOINT_OF.format(a=a),
            name=_NAME_OF.format(a=a),
            a=a,
            side=side,
        )
        for a, side in (("o", "old"), ("n", "new"))
    )
    totals = [f"coalesce(m.kept_{f}, 0) + m.{f}" for f in _ENDPOINT_FIGURES]
    return _ENDPOINT_DELTA.format(
        old=old,
        new=new,
        table=table,
        key=key,
        name_again=name_again,
        kept_figures=_listed([f"r.{f} AS kept_{f}" for f in _ENDPOINT_FIGURES], 12),
        figures=_listed(_ENDPOINT_FIGURES, 12),
        totals=_listed(totals, 12),
        any_total=" OR ".join(f"{t} <> 0" for t in totals),
        returned=", ".join(_ENDPOINT_FIGURES),
        any_negative=" OR ".join(f"kept.{f} < 0" for f in _ENDPOINT_FIGURES),
    )


_DELTA = (
    """CREATE FUNCTION cdr_rollup_delta(
    p_account integer, p_tz text, p_old call_legs[], p_new call_legs[]
)
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    v_sl integer;
    v_bad boolean;
    v_empty timestamptz[];
BEGIN
    -- The legs of some calls as they were kept (p_old) and as they are kept now (p_new):
    -- whole calls (every leg sharing a link with them), so each rollup moves by the
    -- difference of their figures, exactly, reading no other leg. A figure that would go
    -- below zero means the kept rows no longer match call_legs: the error (CE001) makes
    -- cdr_rollup_refresh undo this and recompute the buckets instead.
    SELECT service_level_seconds INTO v_sl FROM rollup_settings;
    WITH legs AS MATERIALIZED (
        SELECT -1 AS sign, o.* FROM unnest(p_old) o WHERE o.bucket_start IS NOT NULL
        UNION ALL
        SELECT 1, n.* FROM unnest(p_new) n WHERE n.bucket_start IS NOT NULL
    ), kept AS (
    INSERT INTO rollup_5min AS r (
__ROLLUP_COLUMNS__
    )
    SELECT
__ROLLUP_VALUES__
    FROM (
__BUCKET_FIGURES__
    ) b
    WHERE __ANY_CHANGE__
    ORDER BY b.bucket_start
    ON CONFLICT (account_id, bucket_start) DO UPDATE SET
__ADD_FIGURES__
    RETURNING r.*
    )
    SELECT
        array_agg(kept.bucket_start) FILTER (WHERE __ALL_ZERO__),
        bool_or(__ANY_NEGATIVE__ OR (kept.calls = 0 AND NOT (__ALL_ZERO__)))
    INTO v_empty, v_bad
    FROM kept;
    IF v_bad THEN
        RAISE EXCEPTION 'rollup_5min of account % would go negative', p_account
            USING ERRCODE = 'CE001';
    END IF;
    DELETE FROM rollup_5min
    WHERE account_id = p_account AND bucket_start = ANY(coalesce(v_empty, '{}'));
__ENDPOINT_5MIN__
__ENDPOINT_HOURLY__
END
$fn$""".replace("__ROLLUP_COLUMNS__", _ROLLUP_COLUMNS)
    .replace("__ROLLUP_VALUES__", _ROLLUP_VALUES)
    .replace("__BUCKET_FIGURES__", _BUCKET_FIGURES)
    .replace("__ANY_CHANGE__", " OR ".join(f"b.{f} <> 0" for f in ROLLUP_FIGURES))
    .replace(
        "__ADD_FIGURES__",
        ",\n".join(f"        {f} = r.{f} + excluded.{f}" for f in ROLLUP_FIGURES),
    )
    .replace("__ALL_ZERO__", " AND ".join(f"kept.{f} = 0" for f in ROLLUP_FIGURES))
    .replace("__ANY_NEGATIVE__", " OR ".join(f"kept.{f} < 0" for f in ROLLUP_FIGURES))
    .replace(
        "__ENDPOINT_5MIN__",
        "    -- per 5 minutes and endpoint\n"
        + _endpoint_delta(
            "rollup_endpoint_5min", "bucket_start", "{a}.bucket_start", _NAME_FROM_LEGS
        ),
    )
    .replace(
        "__ENDPOINT_HOURLY__",
        "    -- per local hour and endpoint (after the 5-minute rows: a name may be counted\n"
        "    -- again from them)\n"
        + _endpoint_delta(
            "rollup_endpoint_hourly",
            "hour_start",
            "date_trunc('hour', {a}.bucket_start, p_tz)",
            _NAME_FROM_BUCKETS,
        ),
    )
)
"""cdr_rollup_delta: the load's update of the rollups for the legs of the calls a page
touched, as the difference of their old and new figures."""


FUNCTIONS: tuple[str, ...] = (
    """CREATE FUNCTION cdr_rollup_buckets(p_account integer, p_tz text, p_buckets timestamptz[])
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    v_hours timestamptz[];
    v_sl integer;
BEGIN
    SELECT service_level_seconds INTO v_sl FROM rollup_settings;
    DELETE FROM rollup_5min WHERE account_id = p_account AND bucket_start = ANY(p_buckets);
    DELETE FROM rollup_endpoint_5min
    WHERE account_id = p_account AND bucket_start = ANY(p_buckets);
    -- the buckets' legs, read once for both rollups: one index range of call_legs, which
    -- carries the CDR columns the figures need (no probe of cdrs per leg)
    WITH legs AS MATERIALIZED (
        SELECT
            1 AS sign, k.bucket_start, k.call_id, k.callid, k.role, k.direction, k.leg_start,
            k.type, k.original_callid, k.end_reason, k.duration, k.ring_time, k.connect_time,
            k.disconnect_time, k.dnis_user, k.ani_user, k.name_endpoint_dnis,
            k.name_endpoint_ani
        FROM unnest(p_buckets) b(bucket_start)
        CROSS JOIN LATERAL (
            SELECT * FROM call_legs k
            WHERE k.account_id = p_account AND k.bucket_start = b.bucket_start
            OFFSET 0
        ) k
    ), calls AS (
    INSERT INTO rollup_5min (
__ROLLUP_COLUMNS__
    )
    SELECT
__ROLLUP_VALUES__
    FROM (
__BUCKET_FIGURES__
    ) b
    )
    INSERT INTO rollup_endpoint_5min (
        account_id, bucket_start, day, endpoint, endpoint_name, name_at, name_callid, legs,
        incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
    )
    SELECT
        p_account,
        e.bucket_start,
        (e.bucket_start AT TIME ZONE p_tz)::date,
        e.endpoint,
        (array_agg(e.endpoint_name ORDER BY e.leg_start DESC NULLS LAST, e.callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        (array_agg(e.leg_start ORDER BY e.leg_start DESC NULLS LAST, e.callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        (array_agg(e.callid ORDER BY e.leg_start DESC NULLS LAST, e.callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        count(*),
        count(*) FILTER (WHERE e.direction = 'incoming'),
        count(*) FILTER (WHERE e.direction = 'outgoing'),
        count(*) FILTER (WHERE e.duration > 0),
        coalesce(sum(e.duration) FILTER (WHERE e.duration > 0), 0),
        coalesce(sum(greatest(e.ring_time, 0)), 0)
    FROM (
        SELECT
            k.bucket_start,
            k.callid,
            k.direction,
            k.leg_start,
            k.duration,
            k.ring_time,
            CASE WHEN k.direction = 'incoming' THEN k.dnis_user ELSE k.ani_user END
                AS endpoint,
            CASE
                WHEN k.direction = 'incoming' THEN k.name_endpoint_dnis
                ELSE k.name_endpoint_ani
            END AS endpoint_name
        FROM legs k
    ) e
    GROUP BY e.bucket_start, e.endpoint;

    -- the local hours holding those buckets, recomputed from their buckets
    SELECT array_agg(DISTINCT date_trunc('hour', b, p_tz)) INTO v_hours
    FROM unnest(p_buckets) b;
    DELETE FROM rollup_endpoint_hourly
    WHERE account_id = p_account AND hour_start = ANY(coalesce(v_hours, '{}'));
    INSERT INTO rollup_endpoint_hourly (
        account_id, hour_start, day, endpoint, endpoint_name, name_at, name_callid, legs,
        incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
    )
    SELECT
        p_account,
        h.hour_start,
        (h.hour_start AT TIME ZONE p_tz)::date,
        e.endpoint,
        (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        (array_agg(e.name_at ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        (array_agg(e.name_callid ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
            FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
        sum(e.legs),
        sum(e.incoming_legs),
        sum(e.outgoing_legs),
        sum(e.answered),
        sum(e.talk_seconds),
        sum(e.ring_seconds)
    FROM unnest(coalesce(v_hours, '{}')) h(hour_start)
    JOIN rollup_endpoint_5min e
        ON e.account_id = p_account
        AND e.bucket_start >= h.hour_start
        -- a local hour's buckets lie within 90 minutes of its start (Lord Howe's DST moves
        -- by half an hour): the range bounds the index scan, the key picks the hour's
        AND e.bucket_start < h.hour_start + interval '90 minutes'
        AND date_trunc('hour', e.bucket_start, p_tz) = h.hour_start
    GROUP BY h.hour_start, e.endpoint;
END
$fn$""".replace("__ROLLUP_COLUMNS__", _ROLLUP_COLUMNS)
    .replace("__ROLLUP_VALUES__", _ROLLUP_VALUES)
    .replace("__BUCKET_FIGURES__", _BUCKET_FIGURES),
    _DELTA,
    """CREATE FUNCTION cdr_concurrency_add(p_account integer, p_spans tstzrange[], p_n integer)
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    v_minutes timestamptz[];
    v_negative boolean;
BEGIN
    -- every minute a span overlaps: from its start's minute to the minute before its end
    WITH delta AS (
        SELECT m.minute, count(*) * p_n AS n
        FROM unnest(coalesce(p_spans, '{}')) s(span),
            generate_series(
                date_trunc('minute', lower(s.span), 'UTC'),
                upper(s.span) - interval '1 microsecond',
                interval '1 minute'
            ) m(minute)
        WHERE NOT isempty(s.span)
        GROUP BY m.minute
    ), kept AS (
        INSERT INTO concurrency_minute AS c (account_id, minute, calls)
        SELECT p_account, d.minute, d.n FROM delta d ORDER BY d.minute
        ON CONFLICT (account_id, minute) DO UPDATE SET calls = c.calls + excluded.calls
        RETURNING c.minute, c.calls
    )
    SELECT array_agg(kept.minute) FILTER (WHERE kept.calls = 0), bool_or(kept.calls < 0)
    INTO v_minutes, v_negative
    FROM kept;
    IF v_negative THEN  -- never silently wrong: the kept counts no longer match call_legs
        RAISE EXCEPTION
            'concurrency_minute of account % would go negative: run cdr-etl rollup --rebuild',
            p_account;
    END IF;
    DELETE FROM concurrency_minute
    WHERE account_id = p_account AND minute = ANY(coalesce(v_minutes, '{}'));
END
$fn$""",
    """CREATE FUNCTION cdr_concurrency_peak(
    p_account integer, p_from timestamptz, p_to timestamptz, OUT calls integer,
    OUT minute timestamptz
)
RETURNS record LANGUAGE plpgsql STABLE COST 10 AS $fn$
BEGIN
    -- the busiest minute of [p_from, p_to): one index range. A function (not inlined) so
    -- that the views' planner counts it as cheap: as a LATERAL subquery its range estimate
    -- made a 30-day query look costly enough to be JIT-compiled (20-30 ms each time)
    SELECT c.calls, c.minute INTO calls, minute
    FROM concurrency_minute c
    WHERE c.account_id = p_account AND c.minute >= p_from AND c.minute < p_to
    ORDER BY c.calls DESC, c.minute
    LIMIT 1;
END
$fn$""",
    """CREATE FUNCTION cdr_concurrency_rebuild(p_account integer)
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
BEGIN
    DELETE FROM concurrency_minute WHERE account_id = p_account;
    PERFORM cdr_concurrency_add(
        p_account,
        (
            SELECT array_agg(tstzrange(s.talk_start, s.talk_end))
            FROM (
                SELECT min(k.talk_start) AS talk_start, max(k.talk_end) AS talk_end
                FROM call_legs k
                WHERE k.account_id = p_account AND k.talk_start IS NOT NULL
                GROUP BY k.call_id
            ) s
        ),
        1
    );
END
$fn$""",
    """CREATE FUNCTION cdr_rollup_refresh(
    p_account integer, p_callids text[], p_recompute boolean DEFAULT false
)
RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    v_tz text;
    v_links text[];
    v_found bigint;
    v_kept bigint;
    v_old call_legs[];
    v_ctids tid[];
    v_targets text[];
    v_buckets timestamptz[];
    v_spans tstzrange[];
    v_new call_legs[];
    v_new_spans tstzrange[];
    v_way text;
BEGIN
    -- one refresher per account at a time: the next one sees what this one commits
    PERFORM pg_advisory_xact_lock(726356, p_account);
    SELECT timezone INTO v_tz FROM accounts WHERE id = p_account;
    -- Every lookup below is one probe per key through a LATERAL ... LIMIT / OFFSET 0, so it
    -- stays a probe of the right index whatever the statistics say (a table loaded since
    -- its last ANALYZE made the planner scan the account's whole index range per page).
    -- the page's legs as stored now: their links
    SELECT count(*), array_agg(DISTINCT c.link) FILTER (WHERE c.link IS NOT NULL)
    INTO v_found, v_links
    FROM unnest(p_callids) u(callid)
    CROSS JOIN LATERAL (
        SELECT
            CASE
                WHEN coalesce(c.ref_callid, '0') <> '0' THEN c.ref_callid
                ELSE c.original_callid
            END AS link
        FROM cdrs c
        WHERE c.account_id = p_account AND c.callid = u.callid
        LIMIT 1
    ) c;
    -- the kept rows of the page's legs, and of every kept leg sharing a link with them (as
    -- kept before, or as stored now)
    SELECT array_agg(x.k), array_agg(x.ctid), count(*) FILTER (WHERE x.page)
    INTO v_old, v_ctids, v_kept
    FROM (
        SELECT DISTINCT ON ((k.k).callid) k.k, k.ctid, k.page
        FROM (
            SELECT k.k, k.ctid, true AS page
            FROM unnest(p_callids) u(callid)
            CROSS JOIN LATERAL (
                SELECT k AS k, k.ctid FROM call_legs k
                WHERE k.account_id = p_account AND k.callid = u.callid
                LIMIT 1
            ) k
            UNION ALL
            SELECT k.k, k.ctid, false AS page
            FROM (
                SELECT DISTINCT l.link
                FROM (
                    SELECT unnest(coalesce(v_links, '{}')) AS link
                    UNION ALL
                    SELECT k.link
                    FROM unnest(p_callids) u(callid)
                    CROSS JOIN LATERAL (
                        SELECT k.link FROM call_legs k
                        WHERE k.account_id = p_account AND k.callid = u.callid
                        LIMIT 1
                    ) k
                ) l
                WHERE l.link IS NOT NULL
            ) l
            CROSS JOIN LATERAL (
                SELECT k AS k, k.ctid FROM call_legs k
                WHERE k.account_id = p_account AND k.link = l.link
                OFFSET 0
            ) k
        ) k
        ORDER BY (k.k).callid, k.page DESC
    ) x;
    v_targets := ARRAY(
        SELECT unnest(p_callids) UNION SELECT (o).callid FROM unnest(v_old) o
    );
    -- what those legs counted in before: their buckets, their calls' talk spans
    SELECT array_agg(DISTINCT o.bucket_start) FILTER (WHERE o.bucket_start IS NOT NULL)
    INTO v_buckets
    FROM unnest(v_old) o;
    SELECT array_agg(tstzrange(s.talk_start, s.talk_end)) INTO v_spans
    FROM (
        SELECT min(o.talk_start) AS talk_start, max(o.talk_end) AS talk_end
        FROM unnest(v_old) o
        WHERE o.talk_start IS NOT NULL
        GROUP BY o.call_id
    ) s;

    DELETE FROM call_legs WHERE ctid = ANY(coalesce(v_ctids, '{}'));  -- read under our lock
    -- v_inbound_calls: the rows those legs head go too (a leg that no longer heads an inbound
    -- call loses its row) and come back below
    DELETE FROM inbound_calls
    WHERE ctid = ANY(ARRAY(
        SELECT i.ctid
        FROM unnest(v_targets) u(callid)
        CROSS JOIN LATERAL (
            SELECT i.ctid FROM inbound_calls i
            WHERE i.account_id = p_account AND i.call_id = u.callid
            LIMIT 1
        ) i
    ));
    -- the legs as stored now, read once for call_legs and inbound_calls. A trunk leg's agent
    -- legs are among them: they share its link, and every leg sharing a link with one of
    -- them is (the lookup above)
    WITH legs AS MATERIALIZED (
        SELECT
            c.account_id, c.callid, c.original_callid, c.ref_callid, c.type, c.ani, c.dnis,
            c.ani_user, c.dnis_user, c.name_endpoint_ani, c.name_endpoint_dnis, c.end_reason,
            c.duration, c.ring_time, c.detect_time, c.connect_time, c.disconnect_time
        FROM unnest(v_targets) u(callid)
        CROSS JOIN LATERAL (
            SELECT * FROM cdrs c
            WHERE c.account_id = p_account AND c.callid = u.callid
            LIMIT 1
        ) c
    ), inbound AS (
        INSERT INTO inbound_calls (__INBOUND_COLUMNS__)
__INBOUND_ROWS__
    ), kept AS (
        INSERT INTO call_legs AS k (
            account_id, callid, link, call_id, role, direction, leg_start, call_start,
            bucket_start, talk_start, talk_end, type, original_callid, end_reason, duration,
            ring_time, connect_time, disconnect_time, dnis_user, ani_user, name_endpoint_dnis,
            name_endpoint_ani
        )
        SELECT
            r.account_id,
            r.callid,
            r.link,
            CASE WHEN r.role = 'agent' THEN r.trunk_callid ELSE r.callid END,
            r.role,
            CASE
                WHEN r.type = 'incoming' THEN 'incoming'
                WHEN r.type IS NULL AND r.role IN ('trunk', 'agent') THEN 'incoming'
                ELSE 'outgoing'
            END,
            r.leg_start,
            r.call_start,
            to_timestamp(floor(extract(epoch FROM r.call_start) / 300) * 300),
            r.talk_start,
            r.talk_start + make_interval(secs => least(r.duration, 86400)),
            r.type,
            r.original_callid,
            r.end_reason,
            r.duration,
            r.ring_time,
            r.connect_time,
            r.disconnect_time,
            r.dnis_user,
            r.ani_user,
            r.name_endpoint_dnis,
            r.name_endpoint_ani
        FROM (
            SELECT
                w.*,
                CASE
                    WHEN w.is_trunk THEN 'trunk'
                    WHEN w.trunk_callid IS NOT NULL THEN 'agent'
                    ELSE 'single'
                END AS role,
                CASE
                    WHEN NOT w.is_trunk AND w.trunk_callid IS NOT NULL
                        THEN coalesce(w.trunk_start, w.leg_start)
                    ELSE w.leg_start
                END AS call_start
            FROM (
                SELECT
                    j.*,
                    min(CASE WHEN j.is_trunk THEN j.callid END) OVER (PARTITION BY j.link)
                        AS trunk_callid,
                    min(CASE WHEN j.is_trunk THEN j.leg_start END) OVER (PARTITION BY j.link)
                        AS trunk_start
                FROM (
                    SELECT
                        c.account_id,
                        c.callid,
                        c.type,
                        c.duration,
                        c.original_callid,
                        c.end_reason,
                        c.ring_time,
                        c.connect_time,
                        c.disconnect_time,
                        c.dnis_user,
                        c.ani_user,
                        c.name_endpoint_dnis,
                        c.name_endpoint_ani,
                        CASE WHEN c.duration > 0 THEN coalesce(
                            c.connect_time, c.disconnect_time - make_interval(secs => c.duration)
                        ) END AS talk_start,
                        coalesce(c.detect_time, c.connect_time, c.disconnect_time) AS leg_start,
                        coalesce(c.ref_callid, '0') <> '0' AS is_trunk,
                        CASE
                            WHEN coalesce(c.ref_callid, '0') <> '0' THEN c.ref_callid
                            ELSE c.original_callid
                        END AS link
                    FROM legs c
                ) j
            ) w
        ) r
        RETURNING k
    )
    SELECT array_agg(kept.k) INTO v_new FROM kept;
    SELECT array_agg(tstzrange(s.talk_start, s.talk_end)) INTO v_new_spans
    FROM (
        SELECT min(n.talk_start) AS talk_start, max(n.talk_end) AS talk_end
        FROM unnest(v_new) n
        WHERE n.talk_start IS NOT NULL
        GROUP BY n.call_id
    ) s;

    -- every bucket those legs count in before or after
    v_buckets := ARRAY(
        SELECT unnest(coalesce(v_buckets, '{}'))
        UNION
        SELECT n.bucket_start FROM unnest(v_new) n WHERE n.bucket_start IS NOT NULL
    );
    -- The rollups, by the cheaper of two exact ways: move them by the difference of those
    -- calls' figures (a cost per leg re-kept), or recompute the buckets from all their legs
    -- (a cost per leg in them, less than half the other's: bench/refresh.py). A rebuild
    -- always recomputes: what was kept may be wrong. The setting cdr_etl.rollup_way
    -- ('delta' or 'recompute') imposes one way, for tests and benchmarks.
    v_way := current_setting('cdr_etl.rollup_way', true);
    IF v_way IN ('delta', 'recompute') THEN
        p_recompute := p_recompute OR v_way = 'recompute';
    ELSIF NOT p_recompute THEN
        SELECT coalesce(sum(r.legs), 0) < 2 * (
            coalesce(cardinality(v_old), 0) + coalesce(cardinality(v_new), 0)
        )
        INTO p_recompute
        FROM unnest(v_buckets) b(bucket_start)
        CROSS JOIN LATERAL (
            SELECT r.legs FROM rollup_5min r
            WHERE r.account_id = p_account AND r.bucket_start = b.bucket_start
        ) r;
    END IF;
    IF NOT p_recompute THEN
        BEGIN
            PERFORM cdr_rollup_delta(p_account, v_tz, v_old, v_new);
        EXCEPTION WHEN SQLSTATE 'CE001' THEN
            -- what was kept does not match the calls (a rebuild pending after a change of
            -- timezone or threshold, a hand edit): the difference is undone, and the
            -- buckets recomputed, as exact as ever for them
            RAISE WARNING '% (kept rows that no longer match call_legs): its buckets are '
                'recomputed; run cdr-etl rollup --rebuild', SQLERRM;
            p_recompute := true;
        END;
    END IF;
    IF p_recompute THEN
        PERFORM cdr_rollup_buckets(p_account, v_tz, v_buckets);
    END IF;
    -- concurrency: minus the calls' old talk spans, plus their new ones (exact: the old
    -- spans are the ones added when those legs were kept)
    PERFORM cdr_concurrency_add(p_account, v_spans, -1);
    PERFORM cdr_concurrency_add(p_account, v_new_spans, 1);

    -- the page's legs stored in cdrs that were not kept before are new rows
    INSERT INTO account_totals (account_id, cdrs)
    VALUES (p_account, v_found - v_kept)
    ON CONFLICT (account_id) DO UPDATE SET cdrs = account_totals.cdrs + excluded.cdrs;
END
$fn$""".replace("__INBOUND_COLUMNS__", ", ".join(INBOUND_COLUMNS)).replace(
        "__INBOUND_ROWS__", inbound_rows("legs", "v_tz")
    ),
    """CREATE FUNCTION cdr_forget_account() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- the per-leg kept tables have no foreign key to accounts (a check per row at load)
    DELETE FROM call_legs WHERE account_id = OLD.id;
    DELETE FROM inbound_calls WHERE account_id = OLD.id;
    RETURN OLD;
END
$fn$""",
)
"""The server-side functions of the kept data (frozen into the revisions as applied: 0005,
0006, 0007, 0008, 0009): the load's, and the trigger function that deletes a deleted account's
kept legs and inbound calls (those two tables have no foreign key: a check per row at load)."""

_REFRESH = text("SELECT cdr_rollup_refresh(:account_id, :callids, :recompute)").bindparams(
    bindparam("callids", type_=ARRAY(Text))
)


def refresh(
    conn: Connection, account_id: int, callids: Sequence[str], *, recompute: bool = False
) -> None:
    """Bring the kept data of these legs (and of their calls and hours) in step with
    `cdrs`, in the caller's transaction. The rollups move by the difference of the calls'
    figures; with `recompute`, every bucket they touch is recomputed from its legs instead
    (a rebuild: what was kept may be wrong)."""
    if callids:
        conn.execute(
            _REFRESH,
            {"account_id": account_id, "callids": list(callids), "recompute": recompute},
        )


@dataclass
class RebuildProgress:
    account: str
    done: int
    total: int


_DAYS = text(
    "SELECT min(detect_time)::date, max(detect_time)::date FROM cdrs WHERE account_id = :a"
)
_DAY_CALLIDS = text(
    "SELECT callid FROM cdrs WHERE account_id = :a "
    "AND detect_time >= CAST(:d AS date) AND detect_time < CAST(:d AS date) + 1"
)
_UNTIMED_CALLIDS = text("SELECT callid FROM cdrs WHERE account_id = :a AND detect_time IS NULL")
_STATE = text("SELECT next_day FROM rollup_rebuilds WHERE account_id = :a")
_SAVE = text(
    "INSERT INTO rollup_rebuilds (account_id, next_day) VALUES (:a, :d) "
    "ON CONFLICT (account_id) DO UPDATE SET next_day = excluded.next_day"
)
_FORGET = text("DELETE FROM rollup_rebuilds WHERE account_id = :a")
_TOTALS = text(
    "INSERT INTO account_totals (account_id, cdrs) "
    "SELECT :a, count(*) FROM cdrs WHERE account_id = :a "
    "ON CONFLICT (account_id) DO UPDATE SET cdrs = excluded.cdrs"
)
_LOCK = text("SELECT pg_advisory_xact_lock(726356, :a)")
_CONCURRENCY = text("SELECT cdr_concurrency_rebuild(:a)")
# A rebuild first forgets the kept talk spans and their counts, so that each day's refresh
# only adds (a drifted count cannot be taken down below zero); the last step recounts.
_FORGET_SPANS = (
    text("DELETE FROM concurrency_minute WHERE account_id = :a"),
    text(
        "UPDATE call_legs SET talk_start = NULL, talk_end = NULL "
        "WHERE account_id = :a AND talk_start IS NOT NULL"
    ),
)
# ... and the kept rows of CDRs no longer in cdrs (deleted by hand): their legs leave the
# buckets they counted in (recomputed at once), their inbound calls go.
_FORGET_GONE_LEGS = text(
    "DELETE FROM call_legs k WHERE k.account_id = :a AND NOT EXISTS "
    "(SELECT FROM cdrs c WHERE c.account_id = :a AND c.callid = k.callid) "
    "RETURNING k.bucket_start"
)
_FORGET_GONE_CALLS = text(
    "DELETE FROM inbound_calls i WHERE i.account_id = :a AND NOT EXISTS "
    "(SELECT FROM cdrs c WHERE c.account_id = :a AND c.callid = i.call_id)"
)
_BUCKETS = text(
    "SELECT cdr_rollup_buckets(:a, (SELECT timezone FROM accounts WHERE id = :a), :b)"
).bindparams(bindparam("b", type_=ARRAY(DateTime(timezone=True))))
_KEPT_SL = text("SELECT service_level_seconds FROM rollup_settings")
_SET_SL = text(
    "INSERT INTO rollup_settings (id, service_level_seconds) VALUES (true, :s) "
    "ON CONFLICT (id) DO UPDATE SET service_level_seconds = excluded.service_level_seconds"
)


def kept_service_level(conn: Connection) -> int:
    """The service-level threshold (seconds) the kept data is computed with."""
    return int(conn.execute(_KEPT_SL).scalar_one())


def set_service_level(conn: Connection, seconds: int) -> None:
    """Compute the kept data with this threshold from now on (a rebuild applies it to the
    data kept before)."""
    conn.execute(_SET_SL, {"s": seconds})


# All of an account's hourly endpoint rows again from its 5-minute rows: after a change of
# timezone to one of another sub-hour offset (India's :30), old hour keys match no new hour.
_ENDPOINT_HOURS = (
    text("DELETE FROM rollup_endpoint_hourly WHERE account_id = :a"),
    text(
        """
INSERT INTO rollup_endpoint_hourly (
    account_id, hour_start, day, endpoint, endpoint_name, name_at, name_callid, legs,
    incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
)
SELECT
    e.account_id,
    date_trunc('hour', e.bucket_start, a.timezone),
    (date_trunc('hour', e.bucket_start, a.timezone) AT TIME ZONE a.timezone)::date,
    e.endpoint,
    (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
        FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
    (array_agg(e.name_at ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
        FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
    (array_agg(e.name_callid ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
        FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
    sum(e.legs), sum(e.incoming_legs), sum(e.outgoing_legs), sum(e.answered),
    sum(e.talk_seconds), sum(e.ring_seconds)
FROM rollup_endpoint_5min e
JOIN accounts a ON a.id = e.account_id
WHERE e.account_id = :a
GROUP BY e.account_id, a.timezone, date_trunc('hour', e.bucket_start, a.timezone), e.endpoint
"""
    ),
)


def _forget_gone(conn: Connection, account_id: int) -> None:
    """Delete the kept legs and inbound calls of CDRs no longer in `cdrs` (deleted by hand;
    the day-by-day refresh only finds CDRs that are there) and recompute the buckets those
    legs counted in."""
    gone = conn.execute(_FORGET_GONE_LEGS, {"a": account_id}).scalars().all()
    buckets = sorted({b for b in gone if b is not None})
    if buckets:
        conn.execute(_BUCKETS, {"a": account_id, "b": buckets})
    conn.execute(_FORGET_GONE_CALLS, {"a": account_id})


def rebuild(
    engine: Engine,
    account_id: int,
    account: str,
    on_progress: Callable[[RebuildProgress], None] = lambda _: None,
) -> int:
    """Recompute an account's kept data from `cdrs`, one UTC day of `detect_time` per
    transaction, resuming after the last day a previous (killed) rebuild committed.
    Returns the number of days recomputed in this call."""
    with engine.connect() as conn:
        first, last = conn.execute(_DAYS, {"a": account_id}).one()
        resume = conn.execute(_STATE, {"a": account_id}).scalar()
    if first is None:
        first = last = datetime.now(UTC).date()
    day: date = max(first, resume) if resume else first
    if not resume:  # kept counts may have drifted: start calls in progress from nothing
        with engine.begin() as conn:
            conn.execute(_LOCK, {"a": account_id})
            for statement in _FORGET_SPANS:
                conn.execute(statement, {"a": account_id})
            _forget_gone(conn, account_id)
            conn.execute(_SAVE, {"a": account_id, "d": day})
    total = (last - first).days + 2  # every day, then the legs with no detect_time
    done: int = (day - first).days
    on_progress(RebuildProgress(account, done, total))
    while day <= last:
        with engine.begin() as conn:
            callids = list(conn.execute(_DAY_CALLIDS, {"a": account_id, "d": day}).scalars())
            refresh(conn, account_id, callids, recompute=True)
            day += timedelta(days=1)
            conn.execute(_SAVE, {"a": account_id, "d": day})
        done += 1
        on_progress(RebuildProgress(account, done, total))
    with engine.begin() as conn:
        untimed = list(conn.execute(_UNTIMED_CALLIDS, {"a": account_id}).scalars())
        refresh(conn, account_id, untimed, recompute=True)
        conn.execute(_LOCK, {"a": account_id})
        conn.execute(_TOTALS, {"a": account_id})  # recount: the refreshes above added nothing new
        conn.execute(_CONCURRENCY, {"a": account_id})  # every minute again, from call_legs
        for statement in _ENDPOINT_HOURS:
            conn.execute(statement, {"a": account_id})
        conn.execute(_FORGET, {"a": account_id})
    done += 1
    on_progress(RebuildProgress(account, done, total))
    return done
