"""Kept BI data: call_legs, rollup_5min, rollup_endpoint_5min, rollup_endpoint_hourly,
account_totals,
rollup_rebuilds; the functions the load calls to keep them (cdr_rollup_refresh,
cdr_rollup_buckets); v_daily_account, v_hourly_account, v_daily_endpoint and v_sync_health
read them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 21:30:00

The upgrade creates the tables and functions, fills them from the existing `cdrs` (one
refresh per account and UTC day, the same function the load calls), and replaces the four
views with ones of the same names and columns that read the kept data. The downgrade puts
the views of revision 0002 back and drops the rest. Every statement is frozen here as
applied (generated once from etl/db/models.py, etl/db/rollup.py and etl/db/views.py).
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long COMMENT lines stay as applied)
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
TABLES: list[str] = [
    """CREATE TABLE call_legs (
	account_id INTEGER NOT NULL,
	callid TEXT NOT NULL,
	link TEXT,
	call_id TEXT NOT NULL,
	role TEXT NOT NULL,
	direction TEXT NOT NULL,
	leg_start TIMESTAMP WITH TIME ZONE,
	call_start TIMESTAMP WITH TIME ZONE,
	bucket_start TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_call_legs PRIMARY KEY (account_id, callid),
	CONSTRAINT fk_call_legs_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    'CREATE INDEX ix_call_legs_account_id_bucket_start ON call_legs (account_id, bucket_start)',
    'CREATE INDEX ix_call_legs_account_id_link ON call_legs (account_id, link)',
    """CREATE TABLE rollup_5min (
	account_id INTEGER NOT NULL,
	bucket_start TIMESTAMP WITH TIME ZONE NOT NULL,
	hour_start TIMESTAMP WITH TIME ZONE NOT NULL,
	day DATE NOT NULL,
	local_hour TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	legs BIGINT DEFAULT '0' NOT NULL,
	calls BIGINT DEFAULT '0' NOT NULL,
	answered BIGINT DEFAULT '0' NOT NULL,
	answered_seconds BIGINT DEFAULT '0' NOT NULL,
	talk_seconds BIGINT DEFAULT '0' NOT NULL,
	end_ok BIGINT DEFAULT '0' NOT NULL,
	end_cancelled BIGINT DEFAULT '0' NOT NULL,
	end_no_answer BIGINT DEFAULT '0' NOT NULL,
	end_temporarily_unavailable BIGINT DEFAULT '0' NOT NULL,
	end_not_found BIGINT DEFAULT '0' NOT NULL,
	end_decline BIGINT DEFAULT '0' NOT NULL,
	end_service_unavailable BIGINT DEFAULT '0' NOT NULL,
	end_other BIGINT DEFAULT '0' NOT NULL,
	CONSTRAINT pk_rollup_5min PRIMARY KEY (account_id, bucket_start),
	CONSTRAINT fk_rollup_5min_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    'CREATE INDEX ix_rollup_5min_account_id_day ON rollup_5min (account_id, day)',
    """CREATE TABLE rollup_endpoint_5min (
	account_id INTEGER NOT NULL,
	bucket_start TIMESTAMP WITH TIME ZONE NOT NULL,
	day DATE NOT NULL,
	endpoint TEXT,
	endpoint_name TEXT,
	name_at TIMESTAMP WITH TIME ZONE,
	name_callid TEXT,
	legs BIGINT DEFAULT '0' NOT NULL,
	incoming_legs BIGINT DEFAULT '0' NOT NULL,
	outgoing_legs BIGINT DEFAULT '0' NOT NULL,
	answered BIGINT DEFAULT '0' NOT NULL,
	talk_seconds BIGINT DEFAULT '0' NOT NULL,
	ring_seconds BIGINT DEFAULT '0' NOT NULL,
	CONSTRAINT fk_rollup_endpoint_5min_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    'CREATE INDEX ix_rollup_endpoint_5min_account_id_bucket_start ON rollup_endpoint_5min (account_id, bucket_start)',
    """CREATE TABLE rollup_endpoint_hourly (
	account_id INTEGER NOT NULL,
	hour_start TIMESTAMP WITH TIME ZONE NOT NULL,
	day DATE NOT NULL,
	endpoint TEXT,
	endpoint_name TEXT,
	name_at TIMESTAMP WITH TIME ZONE,
	name_callid TEXT,
	legs BIGINT DEFAULT '0' NOT NULL,
	incoming_legs BIGINT DEFAULT '0' NOT NULL,
	outgoing_legs BIGINT DEFAULT '0' NOT NULL,
	answered BIGINT DEFAULT '0' NOT NULL,
	talk_seconds BIGINT DEFAULT '0' NOT NULL,
	ring_seconds BIGINT DEFAULT '0' NOT NULL,
	CONSTRAINT fk_rollup_endpoint_hourly_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    'CREATE INDEX ix_rollup_endpoint_hourly_account_id_day ON rollup_endpoint_hourly (account_id, day)',
    'CREATE INDEX ix_rollup_endpoint_hourly_account_id_hour_start ON rollup_endpoint_hourly (account_id, hour_start)',
    """CREATE TABLE account_totals (
	account_id INTEGER NOT NULL,
	cdrs BIGINT DEFAULT '0' NOT NULL,
	CONSTRAINT pk_account_totals PRIMARY KEY (account_id),
	CONSTRAINT fk_account_totals_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    """CREATE TABLE rollup_rebuilds (
	account_id INTEGER NOT NULL,
	next_day DATE NOT NULL,
	CONSTRAINT pk_rollup_rebuilds PRIMARY KEY (account_id),
	CONSTRAINT fk_rollup_rebuilds_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
]

FUNCTIONS: list[str] = [
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

DROP_VIEWS: list[str] = [
    'DROP VIEW IF EXISTS v_daily_account',
    'DROP VIEW IF EXISTS v_hourly_account',
    'DROP VIEW IF EXISTS v_daily_endpoint',
    'DROP VIEW IF EXISTS v_sync_health',
]

NEW_VIEWS: list[str] = [
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
    "COMMENT ON VIEW v_daily_account IS 'Per account and day on the account''s clock (accounts.timezone): legs, calls, answered calls, minutes, ASR, ACD and legs by end_reason. A call counts on the local day of its start; an agent leg belongs to its trunk leg''s call.'",
    "COMMENT ON COLUMN v_daily_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_daily_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_daily_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_daily_account.answered IS 'calls with duration > 0 on some leg'",
    "COMMENT ON COLUMN v_daily_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'",
    "COMMENT ON COLUMN v_daily_account.asr IS 'answered / calls, rounded to 4 (null when no call)'",
    "COMMENT ON COLUMN v_daily_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'",
    "COMMENT ON COLUMN v_daily_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_daily_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_daily_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    "COMMENT ON COLUMN v_daily_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'",
    "COMMENT ON COLUMN v_daily_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_daily_account.end_decline IS 'legs with end_reason DECLINE'",
    "COMMENT ON COLUMN v_daily_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'",
    "COMMENT ON COLUMN v_daily_account.end_other IS 'legs with any other end_reason, empty and null included'",
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
    "COMMENT ON VIEW v_hourly_account IS 'v_daily_account per hour on the account''s clock: hour_start is the instant the local hour began (a repeated DST hour gives two rows).'",
    "COMMENT ON COLUMN v_hourly_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_hourly_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_hourly_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_hourly_account.hour_start IS 'the instant the local hour began'",
    "COMMENT ON COLUMN v_hourly_account.local_hour IS 'the hour on the account''s wall clock'",
    "COMMENT ON COLUMN v_hourly_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_hourly_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_hourly_account.answered IS 'calls with duration > 0 on some leg'",
    "COMMENT ON COLUMN v_hourly_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'",
    "COMMENT ON COLUMN v_hourly_account.asr IS 'answered / calls, rounded to 4 (null when no call)'",
    "COMMENT ON COLUMN v_hourly_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'",
    "COMMENT ON COLUMN v_hourly_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_hourly_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_hourly_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    "COMMENT ON COLUMN v_hourly_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'",
    "COMMENT ON COLUMN v_hourly_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_hourly_account.end_decline IS 'legs with end_reason DECLINE'",
    "COMMENT ON COLUMN v_hourly_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'",
    "COMMENT ON COLUMN v_hourly_account.end_other IS 'legs with any other end_reason, empty and null included'",
    """CREATE VIEW v_daily_endpoint AS
SELECT
    e.account_id,
    a.name AS account_name,
    e.day,
    e.endpoint,
    (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC)
        FILTER (WHERE e.endpoint_name IS NOT NULL))[1] AS endpoint_name,
    sum(e.legs)::bigint AS legs,
    sum(e.incoming_legs)::bigint AS incoming_legs,
    sum(e.outgoing_legs)::bigint AS outgoing_legs,
    sum(e.answered)::bigint AS answered,
    sum(e.talk_seconds)::bigint AS talk_seconds,
    sum(e.ring_seconds)::bigint AS ring_seconds
FROM rollup_endpoint_hourly e
JOIN accounts a ON a.id = e.account_id
GROUP BY e.account_id, a.id, e.day, e.endpoint""",
    "COMMENT ON VIEW v_daily_endpoint IS 'Per account, day on the account''s clock and endpoint (dnis_user of incoming legs, ani_user of outgoing ones): legs, answered legs, talk and ring seconds (negative ring_time counted as 0). Legs count on the local day of their call''s start.'",
    "COMMENT ON COLUMN v_daily_endpoint.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_endpoint.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_endpoint.day IS 'local date of the legs'' calls on the account''s clock'",
    "COMMENT ON COLUMN v_daily_endpoint.endpoint IS 'dnis_user of incoming legs, ani_user of outgoing legs'",
    "COMMENT ON COLUMN v_daily_endpoint.endpoint_name IS 'the endpoint''s latest non-null display name that day'",
    "COMMENT ON COLUMN v_daily_endpoint.legs IS 'legs offered to (incoming) or placed by (outgoing) the endpoint'",
    "COMMENT ON COLUMN v_daily_endpoint.incoming_legs IS 'legs with direction incoming'",
    "COMMENT ON COLUMN v_daily_endpoint.outgoing_legs IS 'legs with direction outgoing'",
    "COMMENT ON COLUMN v_daily_endpoint.answered IS 'legs with duration > 0'",
    "COMMENT ON COLUMN v_daily_endpoint.talk_seconds IS 'sum of duration of the answered legs'",
    "COMMENT ON COLUMN v_daily_endpoint.ring_seconds IS 'sum of ring_time, negative values counted as 0'",
    """CREATE VIEW v_sync_health AS
SELECT
    a.id AS account_id,
    a.name AS account_name,
    a.timezone,
    w.watermarks,
    w.newest_position,
    w.oldest_position,
    floor(extract(epoch FROM (now() AT TIME ZONE a.timezone) - w.newest_position))::bigint
        AS lag_seconds,
    floor(extract(epoch FROM (now() AT TIME ZONE a.timezone) - w.oldest_position))::bigint
        AS max_lag_seconds,
    last_run.kind AS last_run_kind,
    last_run.status AS last_run_status,
    last_run.started_at AS last_run_started_at,
    last_run.finished_at AS last_run_finished_at,
    last_run.error AS last_run_error,
    last_sync.finished_at AS last_success_at,
    newest.detect_time AS newest_cdr_at,
    coalesce(stored.cdrs, 0) AS rows_stored,
    coalesce(r.n, 0) AS rejects,
    coalesce(f.n, 0) AS failed_runs_24h
FROM accounts a
LEFT JOIN (
    SELECT
        wm.account_id,
        jsonb_object_agg(
            wm.pass_name,
            jsonb_build_object(
                'position', wm.position,
                'lag_seconds',
                floor(extract(epoch FROM (now() AT TIME ZONE wa.timezone) - wm.position))
            )
            ORDER BY wm.pass_name
        ) AS watermarks,
        max(wm.position) AS newest_position,
        min(wm.position) AS oldest_position
    FROM watermarks wm
    JOIN accounts wa ON wa.id = wm.account_id
    GROUP BY wm.account_id
) w ON w.account_id = a.id
-- one index lookup per account (accounts are few; runs and cdrs are many)
LEFT JOIN LATERAL (
    SELECT kind, status, started_at, finished_at, error
    FROM runs
    WHERE runs.account_id = a.id
    ORDER BY started_at DESC, id DESC
    LIMIT 1
) last_run ON true
LEFT JOIN LATERAL (
    SELECT finished_at
    FROM runs
    WHERE runs.account_id = a.id AND kind = 'sync' AND status = 'ok'
    ORDER BY started_at DESC, id DESC
    LIMIT 1
) last_sync ON true
LEFT JOIN LATERAL (
    SELECT max(detect_time) AS detect_time FROM cdrs WHERE cdrs.account_id = a.id
) newest ON true
LEFT JOIN account_totals stored ON stored.account_id = a.id
LEFT JOIN (
    SELECT account_id, count(*) AS n FROM rejects GROUP BY account_id
) r ON r.account_id = a.id
LEFT JOIN (
    SELECT account_id, count(*) AS n
    FROM runs
    WHERE status = 'failed' AND started_at >= now() - interval '24 hours'
    GROUP BY account_id
) f ON f.account_id = a.id""",
    "COMMENT ON VIEW v_sync_health IS 'Per account: each pass''s watermark and lag (now on the account''s wall clock minus the position), the last run, the last successful sync, rows stored, rejects and runs failed in the last 24 hours.'",
    "COMMENT ON COLUMN v_sync_health.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_sync_health.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_sync_health.timezone IS 'the account''s clock (accounts.timezone)'",
    "COMMENT ON COLUMN v_sync_health.watermarks IS 'jsonb: pass name -> {position (wall clock), lag_seconds}'",
    "COMMENT ON COLUMN v_sync_health.newest_position IS 'the most advanced pass''s position (account''s wall clock)'",
    "COMMENT ON COLUMN v_sync_health.oldest_position IS 'the least advanced pass''s position'",
    "COMMENT ON COLUMN v_sync_health.lag_seconds IS 'now on the account''s wall clock minus newest_position, in seconds'",
    "COMMENT ON COLUMN v_sync_health.max_lag_seconds IS 'now on the account''s wall clock minus oldest_position'",
    "COMMENT ON COLUMN v_sync_health.last_run_kind IS 'kind of the latest run (sync, backfill, verify, live)'",
    "COMMENT ON COLUMN v_sync_health.last_run_status IS 'status of the latest run'",
    "COMMENT ON COLUMN v_sync_health.last_run_started_at IS 'when the latest run started'",
    "COMMENT ON COLUMN v_sync_health.last_run_finished_at IS 'when the latest run finished (null while running)'",
    "COMMENT ON COLUMN v_sync_health.last_run_error IS 'the latest run''s error, if any'",
    "COMMENT ON COLUMN v_sync_health.last_success_at IS 'finished_at of the latest sync run with status ok'",
    "COMMENT ON COLUMN v_sync_health.newest_cdr_at IS 'the latest detect_time stored'",
    "COMMENT ON COLUMN v_sync_health.rows_stored IS 'rows in cdrs (kept in account_totals by the load)'",
    "COMMENT ON COLUMN v_sync_health.rejects IS 'distinct rejected records'",
    "COMMENT ON COLUMN v_sync_health.failed_runs_24h IS 'runs with status failed started in the last 24 hours'",
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

OLD_VIEWS: list[str] = [
    """CREATE VIEW v_daily_account AS
SELECT
    c.account_id,
    a.name AS account_name,
    c.day,
    sum(c.legs)::bigint AS legs,
    count(*) AS calls,
    count(*) FILTER (WHERE c.answered) AS answered,
    round(coalesce(sum(c.answered_seconds), 0) / 60.0, 2) AS minutes,
    round(count(*) FILTER (WHERE c.answered)::numeric / nullif(count(*), 0), 4) AS asr,
    round(avg(c.talk_seconds) FILTER (WHERE c.answered), 2) AS acd,
    sum(c.end_ok)::bigint AS end_ok,
    sum(c.end_cancelled)::bigint AS end_cancelled,
    sum(c.end_no_answer)::bigint AS end_no_answer,
    sum(c.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(c.end_not_found)::bigint AS end_not_found,
    sum(c.end_decline)::bigint AS end_decline,
    sum(c.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(c.end_other)::bigint AS end_other
FROM (
    -- one row per call: every leg of a call has the same call_start, hence period
    SELECT
        account_id,
        day,
        call_id,
        count(*) AS legs,
        bool_or(answered) AS answered,
        sum(duration) FILTER (WHERE answered) AS answered_seconds,
        max(duration) FILTER (WHERE answered) AS talk_seconds,
        count(*) FILTER (WHERE end_reason = 'OK') AS end_ok,
        count(*) FILTER (WHERE end_reason = 'CANCELLED') AS end_cancelled,
        count(*) FILTER (WHERE end_reason = 'NO_ANSWER') AS end_no_answer,
        count(*) FILTER (WHERE end_reason = 'TEMPORARILY_UNAVAILABLE') AS end_temporarily_unavailable,
        count(*) FILTER (WHERE end_reason = 'NOT_FOUND') AS end_not_found,
        count(*) FILTER (WHERE end_reason = 'DECLINE') AS end_decline,
        count(*) FILTER (WHERE end_reason = 'SERVICE_UNAVAILABLE') AS end_service_unavailable,
        count(*) FILTER (
            WHERE end_reason IS NULL OR end_reason NOT IN ('OK', 'CANCELLED', 'NO_ANSWER', 'TEMPORARILY_UNAVAILABLE', 'NOT_FOUND', 'DECLINE', 'SERVICE_UNAVAILABLE')
        ) AS end_other
    FROM v_call_legs
    WHERE call_start IS NOT NULL
    GROUP BY account_id, day, call_id
) c
JOIN accounts a ON a.id = c.account_id
GROUP BY c.account_id, a.id, c.day""",
    "COMMENT ON VIEW v_daily_account IS 'Per account and day on the account''s clock (accounts.timezone): legs, calls, answered calls, minutes, ASR, ACD and legs by end_reason. A call counts on the local day of its start; an agent leg belongs to its trunk leg''s call.'",
    "COMMENT ON COLUMN v_daily_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_daily_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_daily_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_daily_account.answered IS 'calls with duration > 0 on some leg'",
    "COMMENT ON COLUMN v_daily_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'",
    "COMMENT ON COLUMN v_daily_account.asr IS 'answered / calls, rounded to 4 (null when no call)'",
    "COMMENT ON COLUMN v_daily_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'",
    "COMMENT ON COLUMN v_daily_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_daily_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_daily_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    "COMMENT ON COLUMN v_daily_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'",
    "COMMENT ON COLUMN v_daily_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_daily_account.end_decline IS 'legs with end_reason DECLINE'",
    "COMMENT ON COLUMN v_daily_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'",
    "COMMENT ON COLUMN v_daily_account.end_other IS 'legs with any other end_reason, empty and null included'",
    """CREATE VIEW v_hourly_account AS
SELECT
    c.account_id,
    a.name AS account_name,
    (c.hour_start AT TIME ZONE a.timezone)::date AS day,
    c.hour_start,
    c.hour_start AT TIME ZONE a.timezone AS local_hour,
    sum(c.legs)::bigint AS legs,
    count(*) AS calls,
    count(*) FILTER (WHERE c.answered) AS answered,
    round(coalesce(sum(c.answered_seconds), 0) / 60.0, 2) AS minutes,
    round(count(*) FILTER (WHERE c.answered)::numeric / nullif(count(*), 0), 4) AS asr,
    round(avg(c.talk_seconds) FILTER (WHERE c.answered), 2) AS acd,
    sum(c.end_ok)::bigint AS end_ok,
    sum(c.end_cancelled)::bigint AS end_cancelled,
    sum(c.end_no_answer)::bigint AS end_no_answer,
    sum(c.end_temporarily_unavailable)::bigint AS end_temporarily_unavailable,
    sum(c.end_not_found)::bigint AS end_not_found,
    sum(c.end_decline)::bigint AS end_decline,
    sum(c.end_service_unavailable)::bigint AS end_service_unavailable,
    sum(c.end_other)::bigint AS end_other
FROM (
    -- one row per call: every leg of a call has the same call_start, hence period
    SELECT
        account_id,
        hour_start,
        call_id,
        count(*) AS legs,
        bool_or(answered) AS answered,
        sum(duration) FILTER (WHERE answered) AS answered_seconds,
        max(duration) FILTER (WHERE answered) AS talk_seconds,
        count(*) FILTER (WHERE end_reason = 'OK') AS end_ok,
        count(*) FILTER (WHERE end_reason = 'CANCELLED') AS end_cancelled,
        count(*) FILTER (WHERE end_reason = 'NO_ANSWER') AS end_no_answer,
        count(*) FILTER (WHERE end_reason = 'TEMPORARILY_UNAVAILABLE') AS end_temporarily_unavailable,
        count(*) FILTER (WHERE end_reason = 'NOT_FOUND') AS end_not_found,
        count(*) FILTER (WHERE end_reason = 'DECLINE') AS end_decline,
        count(*) FILTER (WHERE end_reason = 'SERVICE_UNAVAILABLE') AS end_service_unavailable,
        count(*) FILTER (
            WHERE end_reason IS NULL OR end_reason NOT IN ('OK', 'CANCELLED', 'NO_ANSWER', 'TEMPORARILY_UNAVAILABLE', 'NOT_FOUND', 'DECLINE', 'SERVICE_UNAVAILABLE')
        ) AS end_other
    FROM v_call_legs
    WHERE call_start IS NOT NULL
    GROUP BY account_id, hour_start, call_id
) c
JOIN accounts a ON a.id = c.account_id
GROUP BY c.account_id, a.id, c.hour_start""",
    "COMMENT ON VIEW v_hourly_account IS 'v_daily_account per hour on the account''s clock: hour_start is the instant the local hour began (a repeated DST hour gives two rows).'",
    "COMMENT ON COLUMN v_hourly_account.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_hourly_account.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_hourly_account.day IS 'local date on the account''s clock'",
    "COMMENT ON COLUMN v_hourly_account.hour_start IS 'the instant the local hour began'",
    "COMMENT ON COLUMN v_hourly_account.local_hour IS 'the hour on the account''s wall clock'",
    "COMMENT ON COLUMN v_hourly_account.legs IS 'CDR legs of the calls'",
    "COMMENT ON COLUMN v_hourly_account.calls IS 'distinct calls (legs that are not agent legs)'",
    "COMMENT ON COLUMN v_hourly_account.answered IS 'calls with duration > 0 on some leg'",
    "COMMENT ON COLUMN v_hourly_account.minutes IS 'sum of duration / 60 over answered legs, rounded to 2'",
    "COMMENT ON COLUMN v_hourly_account.asr IS 'answered / calls, rounded to 4 (null when no call)'",
    "COMMENT ON COLUMN v_hourly_account.acd IS 'average talk seconds of the answered calls (a call''s longest leg), rounded to 2'",
    "COMMENT ON COLUMN v_hourly_account.end_ok IS 'legs with end_reason OK'",
    "COMMENT ON COLUMN v_hourly_account.end_cancelled IS 'legs with end_reason CANCELLED'",
    "COMMENT ON COLUMN v_hourly_account.end_no_answer IS 'legs with end_reason NO_ANSWER'",
    "COMMENT ON COLUMN v_hourly_account.end_temporarily_unavailable IS 'legs with end_reason TEMPORARILY_UNAVAILABLE'",
    "COMMENT ON COLUMN v_hourly_account.end_not_found IS 'legs with end_reason NOT_FOUND'",
    "COMMENT ON COLUMN v_hourly_account.end_decline IS 'legs with end_reason DECLINE'",
    "COMMENT ON COLUMN v_hourly_account.end_service_unavailable IS 'legs with end_reason SERVICE_UNAVAILABLE'",
    "COMMENT ON COLUMN v_hourly_account.end_other IS 'legs with any other end_reason, empty and null included'",
    """CREATE VIEW v_daily_endpoint AS
SELECT
    l.account_id,
    a.name AS account_name,
    l.day,
    l.endpoint,
    (array_agg(l.endpoint_name ORDER BY l.leg_start DESC NULLS LAST, l.callid DESC)
        FILTER (WHERE l.endpoint_name IS NOT NULL))[1] AS endpoint_name,
    count(*) AS legs,
    count(*) FILTER (WHERE l.direction = 'incoming') AS incoming_legs,
    count(*) FILTER (WHERE l.direction = 'outgoing') AS outgoing_legs,
    count(*) FILTER (WHERE l.answered) AS answered,
    coalesce(sum(l.duration) FILTER (WHERE l.answered), 0) AS talk_seconds,
    coalesce(sum(greatest(l.ring_time, 0)), 0) AS ring_seconds
FROM v_call_legs l
JOIN accounts a ON a.id = l.account_id
WHERE l.call_start IS NOT NULL
GROUP BY l.account_id, a.id, l.day, l.endpoint""",
    "COMMENT ON VIEW v_daily_endpoint IS 'Per account, day on the account''s clock and endpoint (dnis_user of incoming legs, ani_user of outgoing ones): legs, answered legs, talk and ring seconds (negative ring_time counted as 0). Legs count on the local day of their call''s start.'",
    "COMMENT ON COLUMN v_daily_endpoint.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_daily_endpoint.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_daily_endpoint.day IS 'local date of the legs'' calls on the account''s clock'",
    "COMMENT ON COLUMN v_daily_endpoint.endpoint IS 'dnis_user of incoming legs, ani_user of outgoing legs'",
    "COMMENT ON COLUMN v_daily_endpoint.endpoint_name IS 'the endpoint''s latest non-null display name that day'",
    "COMMENT ON COLUMN v_daily_endpoint.legs IS 'legs offered to (incoming) or placed by (outgoing) the endpoint'",
    "COMMENT ON COLUMN v_daily_endpoint.incoming_legs IS 'legs with direction incoming'",
    "COMMENT ON COLUMN v_daily_endpoint.outgoing_legs IS 'legs with direction outgoing'",
    "COMMENT ON COLUMN v_daily_endpoint.answered IS 'legs with duration > 0'",
    "COMMENT ON COLUMN v_daily_endpoint.talk_seconds IS 'sum of duration of the answered legs'",
    "COMMENT ON COLUMN v_daily_endpoint.ring_seconds IS 'sum of ring_time, negative values counted as 0'",
    """CREATE VIEW v_sync_health AS
SELECT
    a.id AS account_id,
    a.name AS account_name,
    a.timezone,
    w.watermarks,
    w.newest_position,
    w.oldest_position,
    floor(extract(epoch FROM (now() AT TIME ZONE a.timezone) - w.newest_position))::bigint
        AS lag_seconds,
    floor(extract(epoch FROM (now() AT TIME ZONE a.timezone) - w.oldest_position))::bigint
        AS max_lag_seconds,
    last_run.kind AS last_run_kind,
    last_run.status AS last_run_status,
    last_run.started_at AS last_run_started_at,
    last_run.finished_at AS last_run_finished_at,
    last_run.error AS last_run_error,
    last_sync.finished_at AS last_success_at,
    newest.detect_time AS newest_cdr_at,
    stored.n AS rows_stored,
    coalesce(r.n, 0) AS rejects,
    coalesce(f.n, 0) AS failed_runs_24h
FROM accounts a
LEFT JOIN (
    SELECT
        wm.account_id,
        jsonb_object_agg(
            wm.pass_name,
            jsonb_build_object(
                'position', wm.position,
                'lag_seconds',
                floor(extract(epoch FROM (now() AT TIME ZONE wa.timezone) - wm.position))
            )
            ORDER BY wm.pass_name
        ) AS watermarks,
        max(wm.position) AS newest_position,
        min(wm.position) AS oldest_position
    FROM watermarks wm
    JOIN accounts wa ON wa.id = wm.account_id
    GROUP BY wm.account_id
) w ON w.account_id = a.id
-- one index lookup per account (accounts are few; runs and cdrs are many)
LEFT JOIN LATERAL (
    SELECT kind, status, started_at, finished_at, error
    FROM runs
    WHERE runs.account_id = a.id
    ORDER BY started_at DESC, id DESC
    LIMIT 1
) last_run ON true
LEFT JOIN LATERAL (
    SELECT finished_at
    FROM runs
    WHERE runs.account_id = a.id AND kind = 'sync' AND status = 'ok'
    ORDER BY started_at DESC, id DESC
    LIMIT 1
) last_sync ON true
LEFT JOIN LATERAL (
    SELECT max(detect_time) AS detect_time FROM cdrs WHERE cdrs.account_id = a.id
) newest ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM cdrs WHERE cdrs.account_id = a.id
) stored ON true
LEFT JOIN (
    SELECT account_id, count(*) AS n FROM rejects GROUP BY account_id
) r ON r.account_id = a.id
LEFT JOIN (
    SELECT account_id, count(*) AS n
    FROM runs
    WHERE status = 'failed' AND started_at >= now() - interval '24 hours'
    GROUP BY account_id
) f ON f.account_id = a.id""",
    "COMMENT ON VIEW v_sync_health IS 'Per account: each pass''s watermark and lag (now on the account''s wall clock minus the position), the last run, the last successful sync, rows stored, rejects and runs failed in the last 24 hours.'",
    "COMMENT ON COLUMN v_sync_health.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_sync_health.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_sync_health.timezone IS 'the account''s clock (accounts.timezone)'",
    "COMMENT ON COLUMN v_sync_health.watermarks IS 'jsonb: pass name -> {position (wall clock), lag_seconds}'",
    "COMMENT ON COLUMN v_sync_health.newest_position IS 'the most advanced pass''s position (account''s wall clock)'",
    "COMMENT ON COLUMN v_sync_health.oldest_position IS 'the least advanced pass''s position'",
    "COMMENT ON COLUMN v_sync_health.lag_seconds IS 'now on the account''s wall clock minus newest_position, in seconds'",
    "COMMENT ON COLUMN v_sync_health.max_lag_seconds IS 'now on the account''s wall clock minus oldest_position'",
    "COMMENT ON COLUMN v_sync_health.last_run_kind IS 'kind of the latest run (sync, backfill, verify, live)'",
    "COMMENT ON COLUMN v_sync_health.last_run_status IS 'status of the latest run'",
    "COMMENT ON COLUMN v_sync_health.last_run_started_at IS 'when the latest run started'",
    "COMMENT ON COLUMN v_sync_health.last_run_finished_at IS 'when the latest run finished (null while running)'",
    "COMMENT ON COLUMN v_sync_health.last_run_error IS 'the latest run''s error, if any'",
    "COMMENT ON COLUMN v_sync_health.last_success_at IS 'finished_at of the latest sync run with status ok'",
    "COMMENT ON COLUMN v_sync_health.newest_cdr_at IS 'the latest detect_time stored'",
    "COMMENT ON COLUMN v_sync_health.rows_stored IS 'rows in cdrs'",
    "COMMENT ON COLUMN v_sync_health.rejects IS 'distinct rejected records'",
    "COMMENT ON COLUMN v_sync_health.failed_runs_24h IS 'runs with status failed started in the last 24 hours'",
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
    _run(OLD_VIEWS)
    op.execute(sa.text("DROP FUNCTION IF EXISTS cdr_rollup_refresh(integer, text[])"))
    op.execute(sa.text("DROP FUNCTION IF EXISTS cdr_rollup_buckets(integer, text, timestamptz[])"))
    for table in (
        "rollup_rebuilds",
        "account_totals",
        "rollup_endpoint_hourly",
        "rollup_endpoint_5min",
        "rollup_5min",
        "call_legs",
    ):
        op.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
