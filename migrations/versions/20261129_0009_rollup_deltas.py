"""The load moves the rollups by the difference of the calls a page touches

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 08:00:00

cdr_rollup_refresh recomputed every 5-minute bucket a page touched from all of its legs
(about 1,600 legs a bucket in a busy hour, whatever the page's size). It now hands the legs
of the calls it re-keeps, as they were kept (taken out) and as they are kept now (put in),
to the new cdr_rollup_delta, which moves `rollup_5min`, `rollup_endpoint_5min` and
`rollup_endpoint_hourly` by the difference of their figures. An endpoint row's latest name
is counted again only when the leg that gave it is taken out and not put back as it was.
A rebuild still recomputes (cdr_rollup_refresh's new third argument, `p_recompute`): what
was kept may be wrong. No table changes, so the writers may keep running: the functions
are replaced in the migration's transaction. Every statement is frozen here as applied (the
functions generated once from etl/db/rollup.py); the downgrade puts revision 0008's back.
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long lines stay as applied)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
BUCKETS = """CREATE FUNCTION cdr_rollup_buckets(p_account integer, p_tz text, p_buckets timestamptz[])
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
        account_id, bucket_start, hour_start, day, local_hour, legs, calls, answered,
        answered_seconds, talk_seconds, end_ok, end_cancelled, end_no_answer,
        end_temporarily_unavailable, end_not_found, end_decline, end_service_unavailable,
        end_other, network_failed, inbound_calls, inbound_answered, answered_within_sl,
        answer_wait_seconds, abandoned, abandon_wait_seconds
    )
    SELECT
        p_account,
        b.bucket_start,
        date_trunc('hour', b.bucket_start, p_tz),
        (b.bucket_start AT TIME ZONE p_tz)::date,
        date_trunc('hour', b.bucket_start AT TIME ZONE p_tz),
        b.legs,
        b.calls,
        b.answered,
        b.answered_seconds,
        b.talk_seconds,
        b.end_ok,
        b.end_cancelled,
        b.end_no_answer,
        b.end_temporarily_unavailable,
        b.end_not_found,
        b.end_decline,
        b.end_service_unavailable,
        b.end_other,
        b.network_failed,
        b.inbound_calls,
        b.inbound_answered,
        b.answered_within_sl,
        b.answer_wait_seconds,
        b.abandoned,
        b.abandon_wait_seconds
    FROM (
        SELECT
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
        GROUP BY f.bucket_start
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
$fn$"""

DELTA = """CREATE FUNCTION cdr_rollup_delta(
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
        account_id, bucket_start, hour_start, day, local_hour, legs, calls, answered,
        answered_seconds, talk_seconds, end_ok, end_cancelled, end_no_answer,
        end_temporarily_unavailable, end_not_found, end_decline, end_service_unavailable,
        end_other, network_failed, inbound_calls, inbound_answered, answered_within_sl,
        answer_wait_seconds, abandoned, abandon_wait_seconds
    )
    SELECT
        p_account,
        b.bucket_start,
        date_trunc('hour', b.bucket_start, p_tz),
        (b.bucket_start AT TIME ZONE p_tz)::date,
        date_trunc('hour', b.bucket_start AT TIME ZONE p_tz),
        b.legs,
        b.calls,
        b.answered,
        b.answered_seconds,
        b.talk_seconds,
        b.end_ok,
        b.end_cancelled,
        b.end_no_answer,
        b.end_temporarily_unavailable,
        b.end_not_found,
        b.end_decline,
        b.end_service_unavailable,
        b.end_other,
        b.network_failed,
        b.inbound_calls,
        b.inbound_answered,
        b.answered_within_sl,
        b.answer_wait_seconds,
        b.abandoned,
        b.abandon_wait_seconds
    FROM (
        SELECT
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
        GROUP BY f.bucket_start
    ) b
    WHERE b.legs <> 0 OR b.calls <> 0 OR b.answered <> 0 OR b.answered_seconds <> 0 OR b.talk_seconds <> 0 OR b.end_ok <> 0 OR b.end_cancelled <> 0 OR b.end_no_answer <> 0 OR b.end_temporarily_unavailable <> 0 OR b.end_not_found <> 0 OR b.end_decline <> 0 OR b.end_service_unavailable <> 0 OR b.end_other <> 0 OR b.network_failed <> 0 OR b.inbound_calls <> 0 OR b.inbound_answered <> 0 OR b.answered_within_sl <> 0 OR b.answer_wait_seconds <> 0 OR b.abandoned <> 0 OR b.abandon_wait_seconds <> 0
    ORDER BY b.bucket_start
    ON CONFLICT (account_id, bucket_start) DO UPDATE SET
        legs = r.legs + excluded.legs,
        calls = r.calls + excluded.calls,
        answered = r.answered + excluded.answered,
        answered_seconds = r.answered_seconds + excluded.answered_seconds,
        talk_seconds = r.talk_seconds + excluded.talk_seconds,
        end_ok = r.end_ok + excluded.end_ok,
        end_cancelled = r.end_cancelled + excluded.end_cancelled,
        end_no_answer = r.end_no_answer + excluded.end_no_answer,
        end_temporarily_unavailable = r.end_temporarily_unavailable + excluded.end_temporarily_unavailable,
        end_not_found = r.end_not_found + excluded.end_not_found,
        end_decline = r.end_decline + excluded.end_decline,
        end_service_unavailable = r.end_service_unavailable + excluded.end_service_unavailable,
        end_other = r.end_other + excluded.end_other,
        network_failed = r.network_failed + excluded.network_failed,
        inbound_calls = r.inbound_calls + excluded.inbound_calls,
        inbound_answered = r.inbound_answered + excluded.inbound_answered,
        answered_within_sl = r.answered_within_sl + excluded.answered_within_sl,
        answer_wait_seconds = r.answer_wait_seconds + excluded.answer_wait_seconds,
        abandoned = r.abandoned + excluded.abandoned,
        abandon_wait_seconds = r.abandon_wait_seconds + excluded.abandon_wait_seconds
    RETURNING r.*
    )
    SELECT
        array_agg(kept.bucket_start) FILTER (WHERE kept.legs = 0 AND kept.calls = 0 AND kept.answered = 0 AND kept.answered_seconds = 0 AND kept.talk_seconds = 0 AND kept.end_ok = 0 AND kept.end_cancelled = 0 AND kept.end_no_answer = 0 AND kept.end_temporarily_unavailable = 0 AND kept.end_not_found = 0 AND kept.end_decline = 0 AND kept.end_service_unavailable = 0 AND kept.end_other = 0 AND kept.network_failed = 0 AND kept.inbound_calls = 0 AND kept.inbound_answered = 0 AND kept.answered_within_sl = 0 AND kept.answer_wait_seconds = 0 AND kept.abandoned = 0 AND kept.abandon_wait_seconds = 0),
        bool_or(kept.legs < 0 OR kept.calls < 0 OR kept.answered < 0 OR kept.answered_seconds < 0 OR kept.talk_seconds < 0 OR kept.end_ok < 0 OR kept.end_cancelled < 0 OR kept.end_no_answer < 0 OR kept.end_temporarily_unavailable < 0 OR kept.end_not_found < 0 OR kept.end_decline < 0 OR kept.end_service_unavailable < 0 OR kept.end_other < 0 OR kept.network_failed < 0 OR kept.inbound_calls < 0 OR kept.inbound_answered < 0 OR kept.answered_within_sl < 0 OR kept.answer_wait_seconds < 0 OR kept.abandoned < 0 OR kept.abandon_wait_seconds < 0 OR (kept.calls = 0 AND NOT (kept.legs = 0 AND kept.calls = 0 AND kept.answered = 0 AND kept.answered_seconds = 0 AND kept.talk_seconds = 0 AND kept.end_ok = 0 AND kept.end_cancelled = 0 AND kept.end_no_answer = 0 AND kept.end_temporarily_unavailable = 0 AND kept.end_not_found = 0 AND kept.end_decline = 0 AND kept.end_service_unavailable = 0 AND kept.end_other = 0 AND kept.network_failed = 0 AND kept.inbound_calls = 0 AND kept.inbound_answered = 0 AND kept.answered_within_sl = 0 AND kept.answer_wait_seconds = 0 AND kept.abandoned = 0 AND kept.abandon_wait_seconds = 0)))
    INTO v_empty, v_bad
    FROM kept;
    IF v_bad THEN
        RAISE EXCEPTION 'rollup_5min of account % would go negative', p_account
            USING ERRCODE = 'CE001';
    END IF;
    DELETE FROM rollup_5min
    WHERE account_id = p_account AND bucket_start = ANY(coalesce(v_empty, '{}'));
    -- per 5 minutes and endpoint
    WITH o AS (SELECT o.bucket_start AS key, CASE WHEN o.direction = 'incoming' THEN o.dnis_user ELSE o.ani_user END AS endpoint, CASE WHEN o.direction = 'incoming' THEN o.name_endpoint_dnis ELSE o.name_endpoint_ani END AS endpoint_name,
            o.callid, o.leg_start, o.direction, o.duration, o.ring_time
        FROM unnest(p_old) o
        WHERE o.bucket_start IS NOT NULL
    ), n AS (SELECT n.bucket_start AS key, CASE WHEN n.direction = 'incoming' THEN n.dnis_user ELSE n.ani_user END AS endpoint, CASE WHEN n.direction = 'incoming' THEN n.name_endpoint_dnis ELSE n.name_endpoint_ani END AS endpoint_name,
            n.callid, n.leg_start, n.direction, n.duration, n.ring_time
        FROM unnest(p_new) n
        WHERE n.bucket_start IS NOT NULL
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
            r.legs AS kept_legs, r.incoming_legs AS kept_incoming_legs, r.outgoing_legs AS
            kept_outgoing_legs, r.answered AS kept_answered, r.talk_seconds AS
            kept_talk_seconds, r.ring_seconds AS kept_ring_seconds,
            r.endpoint_name AS kept_name,
            r.name_at AS kept_name_at,
            r.name_callid AS kept_name_callid,
            coalesce(r.name_callid = ANY(d.changed), false) AS renamed
        FROM d
        LEFT JOIN named w ON w.key = d.key AND w.endpoint IS NOT DISTINCT FROM d.endpoint
        LEFT JOIN LATERAL (
            SELECT r.ctid, r.* FROM rollup_endpoint_5min r
            WHERE r.account_id = p_account AND r.bucket_start = d.key
                AND r.endpoint IS NOT DISTINCT FROM d.endpoint
            LIMIT 1
        ) r ON true
    ), dropped AS (
        DELETE FROM rollup_endpoint_5min
        WHERE ctid = ANY(ARRAY(SELECT m.kept_ctid FROM m WHERE m.kept_ctid IS NOT NULL))
    ), kept AS (
        INSERT INTO rollup_endpoint_5min (
            account_id, bucket_start, day, endpoint, endpoint_name, name_at, name_callid,
            legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
        )
        SELECT
            p_account,
            m.key,
            (m.key AT TIME ZONE p_tz)::date,
            m.endpoint,
            w.endpoint_name,
            w.name_at,
            w.name_callid,
            coalesce(m.kept_legs, 0) + m.legs, coalesce(m.kept_incoming_legs, 0) +
            m.incoming_legs, coalesce(m.kept_outgoing_legs, 0) + m.outgoing_legs,
            coalesce(m.kept_answered, 0) + m.answered, coalesce(m.kept_talk_seconds, 0) +
            m.talk_seconds, coalesce(m.kept_ring_seconds, 0) + m.ring_seconds
        FROM m
        LEFT JOIN LATERAL (
            SELECT x.*
            FROM (
                SELECT m.kept_name, m.kept_name_at, m.kept_name_callid WHERE NOT m.renamed
                UNION ALL
                SELECT m.endpoint_name, m.name_at, m.name_callid
                UNION ALL
                (SELECT CASE WHEN k.direction = 'incoming' THEN k.name_endpoint_dnis ELSE k.name_endpoint_ani END, k.leg_start, k.callid
                FROM call_legs k
                WHERE m.renamed AND k.account_id = p_account AND k.bucket_start = m.key
                    AND CASE WHEN k.direction = 'incoming' THEN k.dnis_user ELSE k.ani_user END IS NOT DISTINCT FROM m.endpoint AND CASE WHEN k.direction = 'incoming' THEN k.name_endpoint_dnis ELSE k.name_endpoint_ani END IS NOT NULL
                ORDER BY k.leg_start DESC NULLS LAST, k.callid DESC
                LIMIT 1)
            ) x(endpoint_name, name_at, name_callid)
            WHERE x.endpoint_name IS NOT NULL
            ORDER BY x.name_at DESC NULLS LAST, x.name_callid DESC
            LIMIT 1
        ) w ON true
        WHERE coalesce(m.kept_legs, 0) + m.legs <> 0 OR coalesce(m.kept_incoming_legs, 0) + m.incoming_legs <> 0 OR coalesce(m.kept_outgoing_legs, 0) + m.outgoing_legs <> 0 OR coalesce(m.kept_answered, 0) + m.answered <> 0 OR coalesce(m.kept_talk_seconds, 0) + m.talk_seconds <> 0 OR coalesce(m.kept_ring_seconds, 0) + m.ring_seconds <> 0
        RETURNING legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
    )
    SELECT bool_or(kept.legs <= 0 OR kept.legs < 0 OR kept.incoming_legs < 0 OR kept.outgoing_legs < 0 OR kept.answered < 0 OR kept.talk_seconds < 0 OR kept.ring_seconds < 0)
    INTO v_bad
    FROM kept;
    IF v_bad THEN
        RAISE EXCEPTION 'rollup_endpoint_5min of account % would go negative', p_account
            USING ERRCODE = 'CE001';
    END IF;
    -- per local hour and endpoint (after the 5-minute rows: a name may be counted
    -- again from them)
    WITH o AS (SELECT date_trunc('hour', o.bucket_start, p_tz) AS key, CASE WHEN o.direction = 'incoming' THEN o.dnis_user ELSE o.ani_user END AS endpoint, CASE WHEN o.direction = 'incoming' THEN o.name_endpoint_dnis ELSE o.name_endpoint_ani END AS endpoint_name,
            o.callid, o.leg_start, o.direction, o.duration, o.ring_time
        FROM unnest(p_old) o
        WHERE o.bucket_start IS NOT NULL
    ), n AS (SELECT date_trunc('hour', n.bucket_start, p_tz) AS key, CASE WHEN n.direction = 'incoming' THEN n.dnis_user ELSE n.ani_user END AS endpoint, CASE WHEN n.direction = 'incoming' THEN n.name_endpoint_dnis ELSE n.name_endpoint_ani END AS endpoint_name,
            n.callid, n.leg_start, n.direction, n.duration, n.ring_time
        FROM unnest(p_new) n
        WHERE n.bucket_start IS NOT NULL
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
            r.legs AS kept_legs, r.incoming_legs AS kept_incoming_legs, r.outgoing_legs AS
            kept_outgoing_legs, r.answered AS kept_answered, r.talk_seconds AS
            kept_talk_seconds, r.ring_seconds AS kept_ring_seconds,
            r.endpoint_name AS kept_name,
            r.name_at AS kept_name_at,
            r.name_callid AS kept_name_callid,
            coalesce(r.name_callid = ANY(d.changed), false) AS renamed
        FROM d
        LEFT JOIN named w ON w.key = d.key AND w.endpoint IS NOT DISTINCT FROM d.endpoint
        LEFT JOIN LATERAL (
            SELECT r.ctid, r.* FROM rollup_endpoint_hourly r
            WHERE r.account_id = p_account AND r.hour_start = d.key
                AND r.endpoint IS NOT DISTINCT FROM d.endpoint
            LIMIT 1
        ) r ON true
    ), dropped AS (
        DELETE FROM rollup_endpoint_hourly
        WHERE ctid = ANY(ARRAY(SELECT m.kept_ctid FROM m WHERE m.kept_ctid IS NOT NULL))
    ), kept AS (
        INSERT INTO rollup_endpoint_hourly (
            account_id, hour_start, day, endpoint, endpoint_name, name_at, name_callid,
            legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
        )
        SELECT
            p_account,
            m.key,
            (m.key AT TIME ZONE p_tz)::date,
            m.endpoint,
            w.endpoint_name,
            w.name_at,
            w.name_callid,
            coalesce(m.kept_legs, 0) + m.legs, coalesce(m.kept_incoming_legs, 0) +
            m.incoming_legs, coalesce(m.kept_outgoing_legs, 0) + m.outgoing_legs,
            coalesce(m.kept_answered, 0) + m.answered, coalesce(m.kept_talk_seconds, 0) +
            m.talk_seconds, coalesce(m.kept_ring_seconds, 0) + m.ring_seconds
        FROM m
        LEFT JOIN LATERAL (
            SELECT x.*
            FROM (
                SELECT m.kept_name, m.kept_name_at, m.kept_name_callid WHERE NOT m.renamed
                UNION ALL
                SELECT m.endpoint_name, m.name_at, m.name_callid
                UNION ALL
                (SELECT e.endpoint_name, e.name_at, e.name_callid
                FROM rollup_endpoint_5min e
                WHERE m.renamed AND e.account_id = p_account AND e.bucket_start >= m.key
                    AND e.bucket_start < m.key + interval '90 minutes'
                    AND date_trunc('hour', e.bucket_start, p_tz) = m.key
                    AND e.endpoint IS NOT DISTINCT FROM m.endpoint
                    AND e.endpoint_name IS NOT NULL
                ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC
                LIMIT 1)
            ) x(endpoint_name, name_at, name_callid)
            WHERE x.endpoint_name IS NOT NULL
            ORDER BY x.name_at DESC NULLS LAST, x.name_callid DESC
            LIMIT 1
        ) w ON true
        WHERE coalesce(m.kept_legs, 0) + m.legs <> 0 OR coalesce(m.kept_incoming_legs, 0) + m.incoming_legs <> 0 OR coalesce(m.kept_outgoing_legs, 0) + m.outgoing_legs <> 0 OR coalesce(m.kept_answered, 0) + m.answered <> 0 OR coalesce(m.kept_talk_seconds, 0) + m.talk_seconds <> 0 OR coalesce(m.kept_ring_seconds, 0) + m.ring_seconds <> 0
        RETURNING legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds
    )
    SELECT bool_or(kept.legs <= 0 OR kept.legs < 0 OR kept.incoming_legs < 0 OR kept.outgoing_legs < 0 OR kept.answered < 0 OR kept.talk_seconds < 0 OR kept.ring_seconds < 0)
    INTO v_bad
    FROM kept;
    IF v_bad THEN
        RAISE EXCEPTION 'rollup_endpoint_hourly of account % would go negative', p_account
            USING ERRCODE = 'CE001';
    END IF;
END
$fn$"""

REFRESH = """CREATE FUNCTION cdr_rollup_refresh(
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
        INSERT INTO inbound_calls (account_id, call_id, customer_number, did, started_at, day, ended_at, answered, agent_answered, answered_by, answered_by_name, wait_seconds, talk_seconds, legs)
SELECT
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
            (coalesce(t.detect_time, t.connect_time, t.disconnect_time) AT TIME ZONE v_tz)::date
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
        FROM legs t
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
                FROM legs g
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
) x
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
$fn$"""

OLD_BUCKETS = """CREATE FUNCTION cdr_rollup_buckets(p_account integer, p_tz text, p_buckets timestamptz[])
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
            k.bucket_start, k.call_id, k.callid, k.role, k.direction, k.leg_start, k.type,
            k.original_callid, k.end_reason, k.duration, k.ring_time, k.connect_time,
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
        account_id, bucket_start, hour_start, day, local_hour, legs, calls, answered,
        answered_seconds, talk_seconds, end_ok, end_cancelled, end_no_answer,
        end_temporarily_unavailable, end_not_found, end_decline, end_service_unavailable,
        end_other, network_failed, inbound_calls, inbound_answered, answered_within_sl,
        answer_wait_seconds, abandoned, abandon_wait_seconds
    )
    SELECT
        p_account,
        f.bucket_start,
        date_trunc('hour', f.bucket_start, p_tz),
        (f.bucket_start AT TIME ZONE p_tz)::date,
        date_trunc('hour', f.bucket_start AT TIME ZONE p_tz),
        sum(f.legs),
        count(*),
        count(*) FILTER (WHERE f.answered),
        coalesce(sum(f.answered_seconds), 0),
        coalesce(sum(f.talk_seconds) FILTER (WHERE f.answered), 0),
        sum(f.end_ok),
        sum(f.end_cancelled),
        sum(f.end_no_answer),
        sum(f.end_temporarily_unavailable),
        sum(f.end_not_found),
        sum(f.end_decline),
        sum(f.end_service_unavailable),
        sum(f.end_other),
        count(*) FILTER (WHERE f.network_failed),
        count(*) FILTER (WHERE f.inbound),
        count(*) FILTER (WHERE f.inbound AND f.person_answered),
        count(*) FILTER (WHERE f.inbound AND f.person_answered AND f.wait <= v_sl),
        coalesce(sum(f.wait) FILTER (WHERE f.inbound AND f.person_answered), 0),
        count(*) FILTER (WHERE f.inbound AND NOT f.person_answered AND f.caller_left),
        coalesce(
            sum(f.stayed) FILTER (
                WHERE f.inbound AND NOT f.person_answered AND f.caller_left
            ),
            0
        )
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
                -- the call's own leg (its trunk leg, or the single leg) ended by the user's side
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
                    coalesce(k.connect_time, k.disconnect_time - make_interval(secs => k.duration))
                ) FILTER (WHERE k.role <> 'trunk' AND k.duration > 0) AS person_answered_at,
                max(k.leg_start) FILTER (WHERE k.role <> 'agent') AS started_at,
                max(k.disconnect_time) AS ended_at
            FROM legs k
            GROUP BY k.bucket_start, k.call_id
        ) c
    ) f
    GROUP BY f.bucket_start
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
        AND e.bucket_start < h.hour_start + interval '1 hour'
    GROUP BY h.hour_start, e.endpoint;
END
$fn$"""

OLD_REFRESH = """CREATE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[])
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
    v_new_buckets timestamptz[];
    v_new_spans tstzrange[];
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
        INSERT INTO inbound_calls (account_id, call_id, customer_number, did, started_at, day, ended_at, answered, agent_answered, answered_by, answered_by_name, wait_seconds, talk_seconds, legs)
SELECT
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
            (coalesce(t.detect_time, t.connect_time, t.disconnect_time) AT TIME ZONE v_tz)::date
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
        FROM legs t
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
                FROM legs g
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
) x
    ), kept AS (
        INSERT INTO call_legs (
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
        RETURNING call_id, bucket_start, talk_start, talk_end
    )
    SELECT
        (SELECT array_agg(DISTINCT kept.bucket_start) FROM kept
            WHERE kept.bucket_start IS NOT NULL),
        (SELECT array_agg(tstzrange(s.talk_start, s.talk_end))
            FROM (
                SELECT min(kept.talk_start) AS talk_start, max(kept.talk_end) AS talk_end
                FROM kept
                WHERE kept.talk_start IS NOT NULL
                GROUP BY kept.call_id
            ) s)
    INTO v_new_buckets, v_new_spans;

    -- every bucket those legs count in before or after
    PERFORM cdr_rollup_buckets(
        p_account,
        v_tz,
        ARRAY(
            SELECT unnest(coalesce(v_buckets, '{}'))
            UNION
            SELECT unnest(coalesce(v_new_buckets, '{}'))
        )
    );
    -- concurrency: minus the calls' old talk spans, plus their new ones (exact: the old
    -- spans are the ones added when those legs were kept)
    PERFORM cdr_concurrency_add(p_account, v_spans, -1);
    PERFORM cdr_concurrency_add(p_account, v_new_spans, 1);

    -- the page's legs stored in cdrs that were not kept before are new rows
    INSERT INTO account_totals (account_id, cdrs)
    VALUES (p_account, v_found - v_kept)
    ON CONFLICT (account_id) DO UPDATE SET cdrs = account_totals.cdrs + excluded.cdrs;
END
$fn$"""

UPGRADE: list[str] = [
    "DROP FUNCTION cdr_rollup_refresh(integer, text[])",
    "DROP FUNCTION cdr_rollup_buckets(integer, text, timestamptz[])",
    BUCKETS,
    DELTA,
    REFRESH,
]

DOWNGRADE: list[str] = [
    "DROP FUNCTION cdr_rollup_refresh(integer, text[], boolean)",
    "DROP FUNCTION cdr_rollup_delta(integer, text, call_legs[], call_legs[])",
    "DROP FUNCTION cdr_rollup_buckets(integer, text, timestamptz[])",
    OLD_BUCKETS,
    OLD_REFRESH,
]
# fmt: on


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
