"""inbound_calls: v_inbound_calls kept by the load

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 04:00:00

The upgrade creates `inbound_calls` (one row per inbound call, as v_inbound_calls lists
them), fills it from `cdrs` in one statement, replaces cdr_rollup_refresh with the one that
also keeps it, and makes v_inbound_calls read it (same columns). It holds `cdrs` in SHARE
mode throughout, so a writer running beside the migration waits for it. The downgrade puts
revision 0006's function and view back and drops the table. Every statement is frozen here
as applied (generated once from etl/db/models.py, etl/db/rollup.py and etl/db/views.py).
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long COMMENT lines stay as applied)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
TABLES: list[str] = [
    """CREATE TABLE inbound_calls (
	account_id INTEGER NOT NULL,
	call_id TEXT NOT NULL,
	customer_number TEXT,
	did TEXT,
	started_at TIMESTAMP WITH TIME ZONE,
	day DATE,
	ended_at TIMESTAMP WITH TIME ZONE,
	answered BOOLEAN,
	agent_answered BOOLEAN,
	answered_by TEXT,
	answered_by_name TEXT,
	wait_seconds INTEGER,
	talk_seconds INTEGER,
	legs BIGINT,
	CONSTRAINT pk_inbound_calls PRIMARY KEY (account_id, call_id),
	CONSTRAINT fk_inbound_calls_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE
)""",
    'CREATE INDEX ix_inbound_calls_account_id_day ON inbound_calls (account_id, day)',
    'CREATE INDEX ix_inbound_calls_account_id_started_at ON inbound_calls (account_id, started_at)',
]

FILL = """INSERT INTO inbound_calls (account_id, call_id, customer_number, did, started_at, day, ended_at, answered, agent_answered, answered_by, answered_by_name, wait_seconds, talk_seconds, legs)
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
            (coalesce(t.detect_time, t.connect_time, t.disconnect_time) AT TIME ZONE (SELECT a.timezone FROM accounts a WHERE a.id = t.account_id))::date
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
        FROM cdrs t
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
                FROM cdrs g
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

FUNCTIONS: list[str] = [
    'DROP FUNCTION cdr_rollup_refresh(integer, text[])',
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
$fn$""",
]

DROP_VIEW = 'DROP VIEW IF EXISTS v_inbound_calls'

NEW_VIEW: list[str] = [
    """CREATE VIEW v_inbound_calls AS
SELECT
    i.account_id,
    a.name AS account_name,
    i.call_id,
    i.customer_number,
    i.did,
    i.started_at,
    i.day,
    i.ended_at,
    i.answered,
    i.agent_answered,
    i.answered_by,
    i.answered_by_name,
    i.wait_seconds,
    i.talk_seconds,
    i.legs
FROM inbound_calls i
JOIN accounts a ON a.id = i.account_id""",
    "COMMENT ON VIEW v_inbound_calls IS 'One row per inbound call: a trunk leg (real ref_callid) joined to its agent legs (original_callid = ref_callid, same account), or a direct incoming leg. Wait, answered (any leg with duration > 0), who answered (first agent leg to answer, else the trunk''s receiving endpoint) and talk time. Kept by the load in inbound_calls (cdr-etl rollup --rebuild recomputes it).'",
    "COMMENT ON COLUMN v_inbound_calls.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_inbound_calls.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_inbound_calls.call_id IS 'the trunk leg''s callid (the leg''s own for a direct inbound call)'",
    "COMMENT ON COLUMN v_inbound_calls.customer_number IS 'the trunk leg''s ani: who called'",
    "COMMENT ON COLUMN v_inbound_calls.did IS 'the trunk leg''s dnis: the number called'",
    "COMMENT ON COLUMN v_inbound_calls.started_at IS 'the trunk leg''s start: coalesce(detect, connect, disconnect time)'",
    "COMMENT ON COLUMN v_inbound_calls.day IS 'started_at''s date on the account''s clock'",
    "COMMENT ON COLUMN v_inbound_calls.ended_at IS 'the latest disconnect_time among the call''s legs'",
    "COMMENT ON COLUMN v_inbound_calls.answered IS 'some leg of the call has duration > 0'",
    "COMMENT ON COLUMN v_inbound_calls.agent_answered IS 'some agent leg of the call has duration > 0'",
    "COMMENT ON COLUMN v_inbound_calls.answered_by IS 'endpoint of the first agent leg to answer, else the trunk leg''s dnis_user when only it was answered; null when unanswered'",
    "COMMENT ON COLUMN v_inbound_calls.answered_by_name IS 'display name of answered_by'",
    "COMMENT ON COLUMN v_inbound_calls.wait_seconds IS 'seconds from started_at until answered (until ended_at when unanswered), never negative'",
    "COMMENT ON COLUMN v_inbound_calls.talk_seconds IS 'duration of the answering leg; 0 when unanswered'",
    "COMMENT ON COLUMN v_inbound_calls.legs IS '1 + the number of agent legs'",
]

OLD_FUNCTIONS: list[str] = [
    'DROP FUNCTION cdr_rollup_refresh(integer, text[])',
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

OLD_VIEW: list[str] = [
    """CREATE VIEW v_inbound_calls AS
SELECT
    account_id,
    account_name,
    call_id,
    customer_number,
    did,
    started_at,
    (started_at AT TIME ZONE timezone)::date AS day,
    ended_at,
    answered,
    agent_answered,
    answered_by,
    answered_by_name,
    CASE
        WHEN waited_until < started_at THEN 0  -- the provider's clocks disagree
        ELSE floor(extract(epoch FROM waited_until - started_at))::integer
    END AS wait_seconds,
    talk_seconds,
    legs
FROM (
    -- the answering leg: the first agent leg to answer, else the trunk leg if answered
    SELECT
        x.*,
        x.agent_callid IS NOT NULL OR x.trunk_answered AS answered,
        x.agent_callid IS NOT NULL AS agent_answered,
        CASE
            WHEN x.agent_callid IS NOT NULL THEN x.agent_endpoint
            WHEN x.trunk_answered THEN x.trunk_endpoint
        END AS answered_by,
        CASE
            WHEN x.agent_callid IS NOT NULL THEN x.agent_endpoint_name
            WHEN x.trunk_answered THEN x.trunk_endpoint_name
        END AS answered_by_name,
        CASE
            WHEN x.agent_callid IS NOT NULL THEN x.agent_answered_at
            WHEN x.trunk_answered THEN x.trunk_answered_at
            ELSE x.ended_at
        END AS waited_until,
        CASE
            WHEN x.agent_callid IS NOT NULL THEN x.agent_duration
            WHEN x.trunk_answered THEN x.trunk_duration
            ELSE 0
        END AS talk_seconds,
        1 + x.agent_legs AS legs
    FROM (
        -- one row per trunk (or direct inbound) leg with its agent legs aggregated
        SELECT
            t.account_id,
            a.name AS account_name,
            a.timezone,
            t.callid AS call_id,
            t.ani AS customer_number,
            t.dnis AS did,
            t.dnis_user AS trunk_endpoint,
            t.name_endpoint_dnis AS trunk_endpoint_name,
            coalesce(t.detect_time, t.connect_time, t.disconnect_time) AS started_at,
            greatest(t.disconnect_time, max(g.disconnect_time)) AS ended_at,
            coalesce(t.duration, 0) > 0 AS trunk_answered,
            t.duration AS trunk_duration,
            coalesce(t.connect_time, t.disconnect_time - make_interval(secs => t.duration))
                AS trunk_answered_at,
            count(g.callid) AS agent_legs,
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
        FROM cdrs t
        JOIN accounts a ON a.id = t.account_id
        LEFT JOIN (
            -- agent legs (not trunk legs themselves), reached through the original_callid
            -- index
            SELECT
                account_id,
                callid,
                original_callid,
                dnis_user,
                name_endpoint_dnis,
                duration,
                disconnect_time,
                coalesce(connect_time, disconnect_time - make_interval(secs => duration))
                    AS answered_at
            FROM cdrs
            WHERE coalesce(ref_callid, '0') = '0'
        ) g
            ON g.original_callid = t.ref_callid
            AND g.account_id = t.account_id
            AND t.ref_callid <> '0'
        WHERE coalesce(t.ref_callid, '0') <> '0'
            OR (
                t.type = 'incoming'
                AND (t.original_callid IS NULL OR t.original_callid = t.callid)
            )
        GROUP BY t.account_id, t.callid, a.id
    ) x
) i""",
    "COMMENT ON VIEW v_inbound_calls IS 'One row per inbound call: a trunk leg (real ref_callid) joined to its agent legs (original_callid = ref_callid, same account), or a direct incoming leg. Wait, answered (any leg with duration > 0), who answered (first agent leg to answer, else the trunk''s receiving endpoint) and talk time.'",
    "COMMENT ON COLUMN v_inbound_calls.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_inbound_calls.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_inbound_calls.call_id IS 'the trunk leg''s callid (the leg''s own for a direct inbound call)'",
    "COMMENT ON COLUMN v_inbound_calls.customer_number IS 'the trunk leg''s ani: who called'",
    "COMMENT ON COLUMN v_inbound_calls.did IS 'the trunk leg''s dnis: the number called'",
    "COMMENT ON COLUMN v_inbound_calls.started_at IS 'the trunk leg''s start: coalesce(detect, connect, disconnect time)'",
    "COMMENT ON COLUMN v_inbound_calls.day IS 'started_at''s date on the account''s clock'",
    "COMMENT ON COLUMN v_inbound_calls.ended_at IS 'the latest disconnect_time among the call''s legs'",
    "COMMENT ON COLUMN v_inbound_calls.answered IS 'some leg of the call has duration > 0'",
    "COMMENT ON COLUMN v_inbound_calls.agent_answered IS 'some agent leg of the call has duration > 0'",
    "COMMENT ON COLUMN v_inbound_calls.answered_by IS 'endpoint of the first agent leg to answer, else the trunk leg''s dnis_user when only it was answered; null when unanswered'",
    "COMMENT ON COLUMN v_inbound_calls.answered_by_name IS 'display name of answered_by'",
    "COMMENT ON COLUMN v_inbound_calls.wait_seconds IS 'seconds from started_at until answered (until ended_at when unanswered), never negative'",
    "COMMENT ON COLUMN v_inbound_calls.talk_seconds IS 'duration of the answering leg; 0 when unanswered'",
    "COMMENT ON COLUMN v_inbound_calls.legs IS '1 + the number of agent legs'",
]

# fmt: on


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(sa.text(statement))


def upgrade() -> None:
    # Writers (a daemon left running) wait until this commits, then refresh with the new
    # function: none stores a page that the fill does not see and the old function keeps.
    op.execute(sa.text("LOCK TABLE cdrs IN SHARE MODE"))
    _run(TABLES)
    op.execute(sa.text(FILL))
    _run(FUNCTIONS)
    _run([DROP_VIEW, *NEW_VIEW])


def downgrade() -> None:
    _run([DROP_VIEW, *OLD_VIEW])
    _run(OLD_FUNCTIONS)
    op.execute(sa.text("DROP TABLE inbound_calls"))
