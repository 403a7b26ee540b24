"""NER, inbound service level and abandonment, and concurrency from the CDRs, kept as data:
new rollup_5min columns, call_legs.talk_start/talk_end, concurrency_minute, rollup_settings
(the service-level threshold); the load's functions recompute them (cdr_rollup_buckets,
cdr_rollup_refresh, cdr_concurrency_add, cdr_concurrency_rebuild); v_daily_account and
v_hourly_account gain their columns; v_concurrency_minute.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 01:00:00

The upgrade adds the columns and tables, replaces the functions, refreshes every account
day by day with them (the same function the load calls: new columns, talk spans and
concurrency filled from cdrs) and replaces the two views (same columns first, new ones
after). The downgrade puts revision 0005's functions and views back and drops the rest.
Every statement is frozen here as applied (generated once from etl/db/models.py,
etl/db/rollup.py and etl/db/views.py).
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long COMMENT lines stay as applied)
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
TABLES: list[str] = [
    'ALTER TABLE call_legs ADD COLUMN talk_start TIMESTAMP WITH TIME ZONE',
    'ALTER TABLE call_legs ADD COLUMN talk_end TIMESTAMP WITH TIME ZONE',
    "ALTER TABLE rollup_5min ADD COLUMN network_failed BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN inbound_calls BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN inbound_answered BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN answered_within_sl BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN answer_wait_seconds BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN abandoned BIGINT DEFAULT '0' NOT NULL",
    "ALTER TABLE rollup_5min ADD COLUMN abandon_wait_seconds BIGINT DEFAULT '0' NOT NULL",
    """CREATE TABLE concurrency_minute (
	account_id INTEGER NOT NULL,
	minute TIMESTAMP WITH TIME ZONE NOT NULL,
	calls INTEGER NOT NULL,
	CONSTRAINT pk_concurrency_minute PRIMARY KEY (account_id, minute),
	CONSTRAINT fk_concurrency_minute_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    """CREATE TABLE rollup_settings (
	id BOOLEAN DEFAULT true NOT NULL,
	service_level_seconds INTEGER DEFAULT '20' NOT NULL,
	CONSTRAINT pk_rollup_settings PRIMARY KEY (id),
	CONSTRAINT ck_rollup_settings_one_row CHECK (id)
)""",
    'INSERT INTO rollup_settings (id, service_level_seconds) VALUES (true, 20)',
    'DROP FUNCTION cdr_rollup_refresh(integer, text[])',
    'DROP FUNCTION cdr_rollup_buckets(integer, text, timestamptz[])',
]

FUNCTIONS: list[str] = [
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
$fn$""",
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
    """CREATE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[])
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
    WITH kept AS (
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
                    FROM unnest(v_targets) u(callid)
                    CROSS JOIN LATERAL (
                        SELECT * FROM cdrs c
                        WHERE c.account_id = p_account AND c.callid = u.callid
                        LIMIT 1
                    ) c
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
$fn$""",
]

FILL = """DO $fill$
DECLARE
    chunk record;
BEGIN
    FOR chunk IN
        SELECT account_id, array_agg(callid) AS callids
        FROM cdrs
        GROUP BY account_id, (detect_time AT TIME ZONE 'UTC')::date
        ORDER BY account_id, (detect_time AT TIME ZONE 'UTC')::date
    LOOP
        PERFORM cdr_rollup_refresh(chunk.account_id, chunk.callids);
    END LOOP;
END
$fill$"""

DROP_VIEWS: list[str] = [
    'DROP VIEW IF EXISTS v_concurrency_minute',
    'DROP VIEW IF EXISTS v_hourly_account',
    'DROP VIEW IF EXISTS v_daily_account',
]

NEW_VIEWS: list[str] = [
    """CREATE VIEW v_daily_account AS
SELECT
    g.account_id,
    g.account_name,
    g.day,
    g.legs, g.calls, g.answered, g.minutes, g.asr, g.acd,
    g.end_ok, g.end_cancelled, g.end_no_answer, g.end_temporarily_unavailable, g.end_not_found, g.end_decline, g.end_service_unavailable, g.end_other,
    round(1 - g.network_failed::numeric / nullif(g.calls, 0), 4) AS ner,
    g.inbound_calls,
    g.inbound_answered,
    g.answered_within_sl,
    round(g.answered_within_sl::numeric / nullif(g.inbound_calls, 0), 4) AS service_level,
    round(g.answer_wait_seconds::numeric / nullif(g.inbound_answered, 0), 2) AS asa,
    g.abandoned,
    round(g.abandoned::numeric / nullif(g.inbound_calls, 0), 4) AS abandon_rate,
    round(g.abandon_wait_seconds::numeric / nullif(g.abandoned, 0), 2) AS abandon_wait_avg,
    coalesce(p.calls, 0) AS peak_concurrent,
    p.minute AS peak_minute
FROM (
SELECT
    r.account_id,
    a.name AS account_name,
    a.timezone,
    r.day,
    sum(r.legs)::bigint AS legs,
    sum(r.calls)::bigint AS calls,
    sum(r.answered)::bigint AS answered,
    round(sum(r.answered_seconds) / 60.0, 2) AS minutes,
    round(sum(r.answered)::numeric / nullif(sum(r.calls), 0), 4) AS asr,
    round(sum(r.talk_seconds)::numeric / nullif(sum(r.answered), 0), 2) AS acd,
    sum(r.end_ok)::bigint AS end_ok,
    sum(r.end_cancelled)::bigint AS end_cancelled,
    sum(r.end_no_answer)::bigint AS end_no_answer,
    sum(r.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(r.end_not_found)::bigint AS end_not_found,
    sum(r.end_decline)::bigint AS end_decline,
    sum(r.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(r.end_other)::bigint AS end_other,
    sum(r.network_failed)::bigint AS network_failed,
    sum(r.inbound_calls)::bigint AS inbound_calls,
    sum(r.inbound_answered)::bigint AS inbound_answered,
    sum(r.answered_within_sl)::bigint AS answered_within_sl,
    sum(r.answer_wait_seconds)::bigint AS answer_wait_seconds,
    sum(r.abandoned)::bigint AS abandoned,
    sum(r.abandon_wait_seconds)::bigint AS abandon_wait_seconds
FROM rollup_5min r
JOIN accounts a ON a.id = r.account_id
GROUP BY r.account_id, a.id, r.day
) g
LEFT JOIN LATERAL cdr_concurrency_peak(g.account_id, (g.day::timestamp AT TIME ZONE g.timezone), ((g.day + 1)::timestamp AT TIME ZONE g.timezone)) p ON true""",
    """COMMENT ON VIEW v_daily_account IS 'Per account and day on the account''s clock (accounts.timezone): legs, calls, answered calls, minutes, ASR, ACD and legs by end_reason. A call counts on the local day of its start; an agent leg belongs to its trunk leg''s call.'""",
    "COMMENT ON COLUMN v_daily_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_daily_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_daily_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_daily_account.answered IS 'calls with duration > 0 on some leg'",
    """COMMENT ON COLUMN v_daily_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'""",
    """COMMENT ON COLUMN v_daily_account.asr IS 'answered / calls, rounded to 4 (null when no call)'""",
    """COMMENT ON COLUMN v_daily_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'""",
    "COMMENT ON COLUMN v_daily_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_daily_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_daily_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    """COMMENT ON COLUMN v_daily_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'""",
    "COMMENT ON COLUMN v_daily_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_daily_account.end_decline IS 'legs with end_reason DECLINE'",
    """COMMENT ON COLUMN v_daily_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_daily_account.end_other IS 'legs with any other end_reason, empty and null included'""",
    """COMMENT ON COLUMN v_daily_account.ner IS 'network effectiveness ratio (ITU-T E.411): 1 - calls failed by the network / calls, rounded to 4. A call failed by the network is unanswered and its own leg (trunk or single) ended with none of OK, CANCELLED, NO_ANSWER, DECLINE, BUSY, TEMPORARILY_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_daily_account.inbound_calls IS 'inbound calls (the rows of v_inbound_calls)'""",
    """COMMENT ON COLUMN v_daily_account.inbound_answered IS 'inbound calls answered by a person: an agent leg, or a direct inbound leg itself (an IVR answering the trunk leg does not count)'""",
    """COMMENT ON COLUMN v_daily_account.answered_within_sl IS 'inbound calls answered by a person within the service-level threshold (rollup_settings.service_level_seconds, default 20) of the call''s start'""",
    """COMMENT ON COLUMN v_daily_account.service_level IS 'answered_within_sl / inbound_calls, rounded to 4'""",
    """COMMENT ON COLUMN v_daily_account.asa IS 'average speed of answer: mean seconds from the call''s start to a person''s answer over inbound_answered, rounded to 2'""",
    """COMMENT ON COLUMN v_daily_account.abandoned IS 'inbound calls not answered by a person whose own leg ended OK or CANCELLED: the caller hung up, in the IVR or while agents rang'""",
    """COMMENT ON COLUMN v_daily_account.abandon_rate IS 'abandoned / inbound_calls, rounded to 4'""",
    """COMMENT ON COLUMN v_daily_account.abandon_wait_avg IS 'mean seconds from an abandoned call''s start to its end, rounded to 2'""",
    """COMMENT ON COLUMN v_daily_account.peak_concurrent IS 'most calls in progress in one minute of the period (v_concurrency_minute; 0 when none)'""",
    """COMMENT ON COLUMN v_daily_account.peak_minute IS 'the first minute that reached peak_concurrent (null when none)'""",
    """CREATE VIEW v_hourly_account AS
SELECT
    g.account_id,
    g.account_name,
    g.day, g.hour_start, g.local_hour,
    g.legs, g.calls, g.answered, g.minutes, g.asr, g.acd,
    g.end_ok, g.end_cancelled, g.end_no_answer, g.end_temporarily_unavailable, g.end_not_found, g.end_decline, g.end_service_unavailable, g.end_other,
    round(1 - g.network_failed::numeric / nullif(g.calls, 0), 4) AS ner,
    g.inbound_calls,
    g.inbound_answered,
    g.answered_within_sl,
    round(g.answered_within_sl::numeric / nullif(g.inbound_calls, 0), 4) AS service_level,
    round(g.answer_wait_seconds::numeric / nullif(g.inbound_answered, 0), 2) AS asa,
    g.abandoned,
    round(g.abandoned::numeric / nullif(g.inbound_calls, 0), 4) AS abandon_rate,
    round(g.abandon_wait_seconds::numeric / nullif(g.abandoned, 0), 2) AS abandon_wait_avg,
    coalesce(p.calls, 0) AS peak_concurrent,
    p.minute AS peak_minute
FROM (
SELECT
    r.account_id,
    a.name AS account_name,
    a.timezone,
    r.day, r.hour_start, r.local_hour,
    sum(r.legs)::bigint AS legs,
    sum(r.calls)::bigint AS calls,
    sum(r.answered)::bigint AS answered,
    round(sum(r.answered_seconds) / 60.0, 2) AS minutes,
    round(sum(r.answered)::numeric / nullif(sum(r.calls), 0), 4) AS asr,
    round(sum(r.talk_seconds)::numeric / nullif(sum(r.answered), 0), 2) AS acd,
    sum(r.end_ok)::bigint AS end_ok,
    sum(r.end_cancelled)::bigint AS end_cancelled,
    sum(r.end_no_answer)::bigint AS end_no_answer,
    sum(r.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(r.end_not_found)::bigint AS end_not_found,
    sum(r.end_decline)::bigint AS end_decline,
    sum(r.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(r.end_other)::bigint AS end_other,
    sum(r.network_failed)::bigint AS network_failed,
    sum(r.inbound_calls)::bigint AS inbound_calls,
    sum(r.inbound_answered)::bigint AS inbound_answered,
    sum(r.answered_within_sl)::bigint AS answered_within_sl,
    sum(r.answer_wait_seconds)::bigint AS answer_wait_seconds,
    sum(r.abandoned)::bigint AS abandoned,
    sum(r.abandon_wait_seconds)::bigint AS abandon_wait_seconds
FROM rollup_5min r
JOIN accounts a ON a.id = r.account_id
GROUP BY r.account_id, a.id, r.day, r.hour_start, r.local_hour
) g
LEFT JOIN LATERAL cdr_concurrency_peak(g.account_id, g.hour_start, g.hour_start + interval '1 hour') p ON true""",
    """COMMENT ON VIEW v_hourly_account IS 'v_daily_account per hour on the account''s clock: hour_start is the instant the local hour began (a repeated DST hour gives two rows).'""",
    "COMMENT ON COLUMN v_hourly_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_hourly_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_hourly_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_hourly_account.hour_start IS 'the instant the local hour began'",
    "COMMENT ON COLUMN v_hourly_account.local_hour IS 'the hour on the account''s wall clock'",
    "COMMENT ON COLUMN v_hourly_account.legs IS 'CDR legs of the calls'",
    """COMMENT ON COLUMN v_hourly_account.calls IS 'distinct calls (legs that are not agent legs)'""",
    "COMMENT ON COLUMN v_hourly_account.answered IS 'calls with duration > 0 on some leg'",
    """COMMENT ON COLUMN v_hourly_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'""",
    """COMMENT ON COLUMN v_hourly_account.asr IS 'answered / calls, rounded to 4 (null when no call)'""",
    """COMMENT ON COLUMN v_hourly_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'""",
    "COMMENT ON COLUMN v_hourly_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_hourly_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_hourly_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    """COMMENT ON COLUMN v_hourly_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'""",
    "COMMENT ON COLUMN v_hourly_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_hourly_account.end_decline IS 'legs with end_reason DECLINE'",
    """COMMENT ON COLUMN v_hourly_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_hourly_account.end_other IS 'legs with any other end_reason, empty and null included'""",
    """COMMENT ON COLUMN v_hourly_account.ner IS 'network effectiveness ratio (ITU-T E.411): 1 - calls failed by the network / calls, rounded to 4. A call failed by the network is unanswered and its own leg (trunk or single) ended with none of OK, CANCELLED, NO_ANSWER, DECLINE, BUSY, TEMPORARILY_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_hourly_account.inbound_calls IS 'inbound calls (the rows of v_inbound_calls)'""",
    """COMMENT ON COLUMN v_hourly_account.inbound_answered IS 'inbound calls answered by a person: an agent leg, or a direct inbound leg itself (an IVR answering the trunk leg does not count)'""",
    """COMMENT ON COLUMN v_hourly_account.answered_within_sl IS 'inbound calls answered by a person within the service-level threshold (rollup_settings.service_level_seconds, default 20) of the call''s start'""",
    """COMMENT ON COLUMN v_hourly_account.service_level IS 'answered_within_sl / inbound_calls, rounded to 4'""",
    """COMMENT ON COLUMN v_hourly_account.asa IS 'average speed of answer: mean seconds from the call''s start to a person''s answer over inbound_answered, rounded to 2'""",
    """COMMENT ON COLUMN v_hourly_account.abandoned IS 'inbound calls not answered by a person whose own leg ended OK or CANCELLED: the caller hung up, in the IVR or while agents rang'""",
    """COMMENT ON COLUMN v_hourly_account.abandon_rate IS 'abandoned / inbound_calls, rounded to 4'""",
    """COMMENT ON COLUMN v_hourly_account.abandon_wait_avg IS 'mean seconds from an abandoned call''s start to its end, rounded to 2'""",
    """COMMENT ON COLUMN v_hourly_account.peak_concurrent IS 'most calls in progress in one minute of the period (v_concurrency_minute; 0 when none)'""",
    """COMMENT ON COLUMN v_hourly_account.peak_minute IS 'the first minute that reached peak_concurrent (null when none)'""",
    """CREATE VIEW v_concurrency_minute AS
SELECT
    c.account_id,
    a.name AS account_name,
    c.minute,
    c.minute AT TIME ZONE a.timezone AS local_minute,
    c.calls
FROM concurrency_minute c
JOIN accounts a ON a.id = c.account_id""",
    """COMMENT ON VIEW v_concurrency_minute IS 'Calls in progress per account and minute, from the CDRs (not from live polling): answered calls whose talk span (their legs'' first connect to last connect + duration) overlaps the minute, so a 60-minute call counts in each of its 60 minutes. Minutes with no call in progress have no row.'""",
    "COMMENT ON COLUMN v_concurrency_minute.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_concurrency_minute.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_concurrency_minute.minute IS 'the minute (timestamptz)'",
    """COMMENT ON COLUMN v_concurrency_minute.local_minute IS 'the minute on the account''s wall clock'""",
    """COMMENT ON COLUMN v_concurrency_minute.calls IS 'answered calls in progress at some moment of the minute'""",
]

UNDO_TABLES: list[str] = [
    'DROP FUNCTION IF EXISTS cdr_rollup_refresh(integer, text[])',
    'DROP FUNCTION IF EXISTS cdr_rollup_buckets(integer, text, timestamptz[])',
    'DROP FUNCTION IF EXISTS cdr_concurrency_rebuild(integer)',
    'DROP FUNCTION IF EXISTS cdr_concurrency_peak(integer, timestamptz, timestamptz)',
    'DROP FUNCTION IF EXISTS cdr_concurrency_add(integer, tstzrange[], integer)',
    'DROP TABLE IF EXISTS rollup_settings',
    'DROP TABLE IF EXISTS concurrency_minute',
    'ALTER TABLE rollup_5min DROP COLUMN network_failed',
    'ALTER TABLE rollup_5min DROP COLUMN inbound_calls',
    'ALTER TABLE rollup_5min DROP COLUMN inbound_answered',
    'ALTER TABLE rollup_5min DROP COLUMN answered_within_sl',
    'ALTER TABLE rollup_5min DROP COLUMN answer_wait_seconds',
    'ALTER TABLE rollup_5min DROP COLUMN abandoned',
    'ALTER TABLE rollup_5min DROP COLUMN abandon_wait_seconds',
    'ALTER TABLE call_legs DROP COLUMN talk_end',
    'ALTER TABLE call_legs DROP COLUMN talk_start',
]

OLD_FUNCTIONS: list[str] = [
    """CREATE FUNCTION cdr_rollup_buckets(p_account integer, p_tz text, p_buckets timestamptz[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_hours timestamptz[];
BEGIN
    DELETE FROM rollup_5min WHERE account_id = p_account AND bucket_start = ANY(p_buckets);
    INSERT INTO rollup_5min (
        account_id, bucket_start, hour_start, day, local_hour, legs, calls, answered,
        answered_seconds, talk_seconds, end_ok, end_cancelled, end_no_answer,
        end_temporarily_unavailable, end_not_found, end_decline, end_service_unavailable, end_other
    )
    SELECT
        p_account,
        c.bucket_start,
        date_trunc('hour', c.bucket_start, p_tz),
        (c.bucket_start AT TIME ZONE p_tz)::date,
        date_trunc('hour', c.bucket_start AT TIME ZONE p_tz),
        sum(c.legs),
        count(*),
        count(*) FILTER (WHERE c.answered),
        coalesce(sum(c.answered_seconds), 0),
        coalesce(sum(c.talk_seconds) FILTER (WHERE c.answered), 0),
        sum(c.end_ok),
        sum(c.end_cancelled),
        sum(c.end_no_answer),
        sum(c.end_temporarily_unavailable),
        sum(c.end_not_found),
        sum(c.end_decline),
        sum(c.end_service_unavailable),
        sum(c.end_other)
    FROM (
        -- one row per call and bucket (every leg of a call has its call's start)
        SELECT
            k.bucket_start,
            k.call_id,
            count(*) AS legs,
            bool_or(coalesce(d.duration, 0) > 0) AS answered,
            sum(d.duration) FILTER (WHERE d.duration > 0) AS answered_seconds,
            max(d.duration) FILTER (WHERE d.duration > 0) AS talk_seconds,
                count(*) FILTER (WHERE d.end_reason = 'OK') AS end_ok,
                count(*) FILTER (WHERE d.end_reason = 'CANCELLED') AS end_cancelled,
                count(*) FILTER (WHERE d.end_reason = 'NO_ANSWER') AS end_no_answer,
                count(*) FILTER (WHERE d.end_reason = 'TEMPORARILY_UNAVAILABLE')
                    AS end_temporarily_unavailable,
                count(*) FILTER (WHERE d.end_reason = 'NOT_FOUND') AS end_not_found,
                count(*) FILTER (WHERE d.end_reason = 'DECLINE') AS end_decline,
                count(*) FILTER (WHERE d.end_reason = 'SERVICE_UNAVAILABLE')
                    AS end_service_unavailable,
            count(*) FILTER (
                WHERE d.end_reason IS NULL OR d.end_reason NOT IN (
                    'OK', 'CANCELLED', 'NO_ANSWER', 'TEMPORARILY_UNAVAILABLE', 'NOT_FOUND',
                    'DECLINE', 'SERVICE_UNAVAILABLE'
                )
            ) AS end_other
        FROM call_legs k
        JOIN cdrs d ON d.account_id = k.account_id AND d.callid = k.callid
        WHERE k.account_id = p_account AND k.bucket_start = ANY(p_buckets)
        GROUP BY k.bucket_start, k.call_id
    ) c
    GROUP BY c.bucket_start;

    DELETE FROM rollup_endpoint_5min
    WHERE account_id = p_account AND bucket_start = ANY(p_buckets);
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
            d.duration,
            d.ring_time,
            CASE WHEN k.direction = 'incoming' THEN d.dnis_user ELSE d.ani_user END
                AS endpoint,
            CASE
                WHEN k.direction = 'incoming' THEN d.name_endpoint_dnis
                ELSE d.name_endpoint_ani
            END AS endpoint_name
        FROM call_legs k
        JOIN cdrs d ON d.account_id = k.account_id AND d.callid = k.callid
        WHERE k.account_id = p_account AND k.bucket_start = ANY(p_buckets)
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
$fn$""",
    """CREATE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_tz text;
    v_links text[];
    v_targets text[];
    v_buckets timestamptz[];
    v_new bigint;
BEGIN
    -- one refresher per account at a time: the next one sees what this one commits
    PERFORM pg_advisory_xact_lock(726356, p_account);
    SELECT timezone INTO v_tz FROM accounts WHERE id = p_account;
    -- the links of the page's legs, as stored now and as kept before
    SELECT array_agg(DISTINCT x.link) INTO v_links
    FROM (
        SELECT
            CASE
                WHEN coalesce(c.ref_callid, '0') <> '0' THEN c.ref_callid
                ELSE c.original_callid
            END AS link
        FROM cdrs c
        WHERE c.account_id = p_account AND c.callid = ANY(p_callids)
        UNION ALL
        SELECT k.link
        FROM call_legs k
        WHERE k.account_id = p_account AND k.callid = ANY(p_callids)
    ) x
    WHERE x.link IS NOT NULL;
    -- the legs to recompute: the page's and every kept leg sharing one of those links
    SELECT array_agg(DISTINCT x.callid) INTO v_targets
    FROM (
        SELECT unnest(p_callids) AS callid
        UNION ALL
        SELECT k.callid
        FROM call_legs k
        WHERE k.account_id = p_account AND k.link = ANY(coalesce(v_links, '{}'))
    ) x;
    SELECT count(*) INTO v_new
    FROM cdrs c
    WHERE c.account_id = p_account AND c.callid = ANY(p_callids)
        AND NOT EXISTS (
            SELECT 1 FROM call_legs k WHERE k.account_id = p_account AND k.callid = c.callid
        );
    -- the buckets those legs counted in before
    SELECT array_agg(DISTINCT k.bucket_start) INTO v_buckets
    FROM call_legs k
    WHERE k.account_id = p_account AND k.callid = ANY(v_targets) AND k.bucket_start IS NOT NULL;

    DELETE FROM call_legs WHERE account_id = p_account AND callid = ANY(v_targets);
    INSERT INTO call_legs (
        account_id, callid, link, call_id, role, direction, leg_start, call_start, bucket_start
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
        to_timestamp(floor(extract(epoch FROM r.call_start) / 300) * 300)
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
                    coalesce(c.detect_time, c.connect_time, c.disconnect_time) AS leg_start,
                    coalesce(c.ref_callid, '0') <> '0' AS is_trunk,
                    CASE
                        WHEN coalesce(c.ref_callid, '0') <> '0' THEN c.ref_callid
                        ELSE c.original_callid
                    END AS link
                FROM cdrs c
                WHERE c.account_id = p_account AND c.callid = ANY(v_targets)
            ) j
        ) w
    ) r;

    -- every bucket those legs count in before or after
    SELECT array_agg(DISTINCT x.b) INTO v_buckets
    FROM (
        SELECT unnest(coalesce(v_buckets, '{}')) AS b
        UNION ALL
        SELECT k.bucket_start
        FROM call_legs k
        WHERE k.account_id = p_account AND k.callid = ANY(v_targets)
            AND k.bucket_start IS NOT NULL
    ) x;
    PERFORM cdr_rollup_buckets(p_account, v_tz, coalesce(v_buckets, '{}'));

    INSERT INTO account_totals (account_id, cdrs) VALUES (p_account, v_new)
    ON CONFLICT (account_id) DO UPDATE SET cdrs = account_totals.cdrs + excluded.cdrs;
END
$fn$""",
]

OLD_VIEWS: list[str] = [
    """CREATE VIEW v_daily_account AS
SELECT
    r.account_id,
    a.name AS account_name,
    r.day,
    sum(r.legs)::bigint AS legs,
    sum(r.calls)::bigint AS calls,
    sum(r.answered)::bigint AS answered,
    round(sum(r.answered_seconds) / 60.0, 2) AS minutes,
    round(sum(r.answered)::numeric / nullif(sum(r.calls), 0), 4) AS asr,
    round(sum(r.talk_seconds)::numeric / nullif(sum(r.answered), 0), 2) AS acd,
    sum(r.end_ok)::bigint AS end_ok,
    sum(r.end_cancelled)::bigint AS end_cancelled,
    sum(r.end_no_answer)::bigint AS end_no_answer,
    sum(r.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(r.end_not_found)::bigint AS end_not_found,
    sum(r.end_decline)::bigint AS end_decline,
    sum(r.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(r.end_other)::bigint AS end_other
FROM rollup_5min r
JOIN accounts a ON a.id = r.account_id
GROUP BY r.account_id, a.id, r.day""",
    """COMMENT ON VIEW v_daily_account IS 'Per account and day on the account''s clock (accounts.timezone): legs, calls, answered calls, minutes, ASR, ACD and legs by end_reason. A call counts on the local day of its start; an agent leg belongs to its trunk leg''s call.'""",
    "COMMENT ON COLUMN v_daily_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_daily_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_daily_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_daily_account.answered IS 'calls with duration > 0 on some leg'",
    """COMMENT ON COLUMN v_daily_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'""",
    """COMMENT ON COLUMN v_daily_account.asr IS 'answered / calls, rounded to 4 (null when no call)'""",
    """COMMENT ON COLUMN v_daily_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'""",
    "COMMENT ON COLUMN v_daily_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_daily_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_daily_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    """COMMENT ON COLUMN v_daily_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'""",
    "COMMENT ON COLUMN v_daily_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_daily_account.end_decline IS 'legs with end_reason DECLINE'",
    """COMMENT ON COLUMN v_daily_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_daily_account.end_other IS 'legs with any other end_reason, empty and null included'""",
    """CREATE VIEW v_hourly_account AS
SELECT
    r.account_id,
    a.name AS account_name,
    r.day,
    r.hour_start,
    r.local_hour,
    sum(r.legs)::bigint AS legs,
    sum(r.calls)::bigint AS calls,
    sum(r.answered)::bigint AS answered,
    round(sum(r.answered_seconds) / 60.0, 2) AS minutes,
    round(sum(r.answered)::numeric / nullif(sum(r.calls), 0), 4) AS asr,
    round(sum(r.talk_seconds)::numeric / nullif(sum(r.answered), 0), 2) AS acd,
    sum(r.end_ok)::bigint AS end_ok,
    sum(r.end_cancelled)::bigint AS end_cancelled,
    sum(r.end_no_answer)::bigint AS end_no_answer,
    sum(r.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(r.end_not_found)::bigint AS end_not_found,
    sum(r.end_decline)::bigint AS end_decline,
    sum(r.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(r.end_other)::bigint AS end_other
FROM rollup_5min r
JOIN accounts a ON a.id = r.account_id
GROUP BY r.account_id, a.id, r.hour_start, r.day, r.local_hour""",
    """COMMENT ON VIEW v_hourly_account IS 'v_daily_account per hour on the account''s clock: hour_start is the instant the local hour began (a repeated DST hour gives two rows).'""",
    "COMMENT ON COLUMN v_hourly_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_hourly_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_hourly_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_hourly_account.hour_start IS 'the instant the local hour began'",
    "COMMENT ON COLUMN v_hourly_account.local_hour IS 'the hour on the account''s wall clock'",
    "COMMENT ON COLUMN v_hourly_account.legs IS 'CDR legs of the calls'",
    """COMMENT ON COLUMN v_hourly_account.calls IS 'distinct calls (legs that are not agent legs)'""",
    "COMMENT ON COLUMN v_hourly_account.answered IS 'calls with duration > 0 on some leg'",
    """COMMENT ON COLUMN v_hourly_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'""",
    """COMMENT ON COLUMN v_hourly_account.asr IS 'answered / calls, rounded to 4 (null when no call)'""",
    """COMMENT ON COLUMN v_hourly_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'""",
    "COMMENT ON COLUMN v_hourly_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_hourly_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_hourly_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    """COMMENT ON COLUMN v_hourly_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'""",
    "COMMENT ON COLUMN v_hourly_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_hourly_account.end_decline IS 'legs with end_reason DECLINE'",
    """COMMENT ON COLUMN v_hourly_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'""",
    """COMMENT ON COLUMN v_hourly_account.end_other IS 'legs with any other end_reason, empty and null included'""",
]
# fmt: on


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(sa.text(statement))


def upgrade() -> None:
    _run(TABLES)
    _run(FUNCTIONS)
    op.execute(sa.text(FILL))
    _run(DROP_VIEWS)
    _run(NEW_VIEWS)


def downgrade() -> None:
    _run(DROP_VIEWS)
    _run(UNDO_TABLES)
    _run(OLD_FUNCTIONS)
    _run(OLD_VIEWS)
