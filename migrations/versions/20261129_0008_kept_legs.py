"""call_legs carries the CDR columns of its figures; no foreign keys on the per-leg tables

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 07:00:00

Two costs of the load's kept data, measured with bench/refresh.py:

- `call_legs` and `inbound_calls` lose their foreign key to `accounts` (a check per row the
  load writes: about 10 us of server time per leg, a fifth of the backfill's server time).
  A trigger on `accounts` deletes an account's rows of both tables when it is deleted, as
  their cascade did (the other tables keep their keys and cascades).
- `call_legs` gains the leg's CDR columns that the rollups' figures need (type,
  original_callid, end_reason, duration, ring_time, connect and disconnect time, the
  endpoints and their names), filled here from `cdrs`; cdr_rollup_refresh writes them, and
  cdr_rollup_buckets reads a bucket's legs from `call_legs` alone instead of probing
  `cdrs` once per leg.

The upgrade holds `cdrs` in SHARE mode throughout. Stop the writers (daemon, backfills,
rebuilds) before it: dropping the foreign keys locks `accounts` whole, and a writer that
holds a lock on `accounts` while it waits for `cdrs` deadlocks with it (PostgreSQL aborts
one of the two; nothing is lost, but one must be run again). The downgrade puts revision
0007's functions, columns and keys back. Every statement is frozen here as applied (the
functions generated once from etl/db/rollup.py).
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long lines stay as applied)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
FORGET = """CREATE FUNCTION cdr_forget_account() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- the per-leg kept tables have no foreign key to accounts (a check per row at load)
    DELETE FROM call_legs WHERE account_id = OLD.id;
    DELETE FROM inbound_calls WHERE account_id = OLD.id;
    RETURN OLD;
END
$fn$"""

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

REFRESH = """CREATE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[])
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
    -- the buckets' legs, read once for both rollups
    WITH legs AS MATERIALIZED (
        SELECT
            k.bucket_start, k.call_id, k.callid, k.role, k.direction, k.leg_start, d.type,
            d.original_callid, d.end_reason, d.duration, d.ring_time, d.connect_time,
            d.disconnect_time, d.dnis_user, d.ani_user, d.name_endpoint_dnis,
            d.name_endpoint_ani
        FROM unnest(p_buckets) b(bucket_start)
        CROSS JOIN LATERAL (
            SELECT * FROM call_legs k
            WHERE k.account_id = p_account AND k.bucket_start = b.bucket_start
            OFFSET 0
        ) k
        CROSS JOIN LATERAL (
            SELECT * FROM cdrs d
            WHERE d.account_id = p_account AND d.callid = k.callid
            LIMIT 1
        ) d
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
            c.dnis_user, c.name_endpoint_dnis, c.duration, c.detect_time, c.connect_time,
            c.disconnect_time
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
            bucket_start, talk_start, talk_end
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
            r.talk_start + make_interval(secs => least(r.duration, 86400))
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
    "LOCK TABLE cdrs IN SHARE MODE",
    FORGET,
    "CREATE TRIGGER accounts_forget_kept_legs AFTER DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION cdr_forget_account()",
    "ALTER TABLE call_legs DROP CONSTRAINT fk_call_legs_account_id_accounts",
    "ALTER TABLE inbound_calls DROP CONSTRAINT fk_inbound_calls_account_id_accounts",
    'ALTER TABLE call_legs ADD COLUMN type TEXT, ADD COLUMN original_callid TEXT, ADD COLUMN end_reason TEXT, ADD COLUMN duration INTEGER, ADD COLUMN ring_time INTEGER, ADD COLUMN connect_time TIMESTAMP WITH TIME ZONE, ADD COLUMN disconnect_time TIMESTAMP WITH TIME ZONE, ADD COLUMN dnis_user TEXT, ADD COLUMN ani_user TEXT, ADD COLUMN name_endpoint_dnis TEXT, ADD COLUMN name_endpoint_ani TEXT',
    'UPDATE call_legs k SET type = c.type, original_callid = c.original_callid, end_reason = c.end_reason, duration = c.duration, ring_time = c.ring_time, connect_time = c.connect_time, disconnect_time = c.disconnect_time, dnis_user = c.dnis_user, ani_user = c.ani_user, name_endpoint_dnis = c.name_endpoint_dnis, name_endpoint_ani = c.name_endpoint_ani FROM cdrs c WHERE c.account_id = k.account_id AND c.callid = k.callid',
    "DROP FUNCTION cdr_rollup_buckets(integer, text, timestamptz[])",
    BUCKETS,
    "DROP FUNCTION cdr_rollup_refresh(integer, text[])",
    REFRESH,
]

DOWNGRADE: list[str] = [
    "DROP FUNCTION cdr_rollup_refresh(integer, text[])",
    OLD_REFRESH,
    "DROP FUNCTION cdr_rollup_buckets(integer, text, timestamptz[])",
    OLD_BUCKETS,
    'ALTER TABLE call_legs DROP COLUMN type, DROP COLUMN original_callid, DROP COLUMN end_reason, DROP COLUMN duration, DROP COLUMN ring_time, DROP COLUMN connect_time, DROP COLUMN disconnect_time, DROP COLUMN dnis_user, DROP COLUMN ani_user, DROP COLUMN name_endpoint_dnis, DROP COLUMN name_endpoint_ani',
    "DELETE FROM call_legs k WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = k.account_id)",
    "DELETE FROM inbound_calls i WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = i.account_id)",
    "ALTER TABLE call_legs ADD CONSTRAINT fk_call_legs_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "ALTER TABLE inbound_calls ADD CONSTRAINT fk_inbound_calls_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "DROP TRIGGER accounts_forget_kept_legs ON accounts",
    "DROP FUNCTION cdr_forget_account()",
]
# fmt: on


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
