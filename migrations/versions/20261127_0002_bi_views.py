"""bi views and the read-only role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:00:00

The SQL below is frozen: generated once from `etl.db.views` and `etl.db.roles` as they
were at this revision and pasted here as literals, so that history does not change when
the code does (a later change to a view is a new revision holding its own SQL). The upgrade creates the views with their comments, then creates the
`cdr_reader` role when the database user may (a warning otherwise) and grants it SELECT
on every table and view, now and for tables created later. The downgrade drops the views
and revokes the grants in this database; it keeps the role, which is cluster-wide and may
serve other databases (drop it by hand: `DROP ROLE cdr_reader` once no database uses it).
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long COMMENT lines stay as applied)
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
UPGRADE: list[str] = [
    """CREATE VIEW v_call_legs AS
SELECT
    l.account_id,
    l.account_name,
    l.callid,
    l.call_id,
    l.role,
    l.direction,
    CASE WHEN l.direction = 'incoming' THEN l.dnis_user ELSE l.ani_user END AS endpoint,
    CASE
        WHEN l.direction = 'incoming' THEN l.name_endpoint_dnis
        ELSE l.name_endpoint_ani
    END AS endpoint_name,
    l.type,
    l.end_reason,
    l.duration,
    l.ring_time,
    coalesce(l.duration, 0) > 0 AS answered,
    l.leg_start,
    l.call_start,
    (l.call_start AT TIME ZONE l.timezone)::date AS day,
    date_trunc('hour', l.call_start, l.timezone) AS hour_start
FROM (
    SELECT
        c.account_id,
        a.name AS account_name,
        a.timezone,
        c.callid,
        CASE WHEN c.role = 'agent' THEN c.trunk_callid ELSE c.callid END AS call_id,
        c.role,
        CASE
            WHEN c.type = 'incoming' THEN 'incoming'
            WHEN c.type IS NULL AND c.role IN ('trunk', 'agent') THEN 'incoming'
            ELSE 'outgoing'
        END AS direction,
        c.ani_user,
        c.dnis_user,
        c.name_endpoint_ani,
        c.name_endpoint_dnis,
        c.type,
        c.end_reason,
        c.duration,
        c.ring_time,
        c.leg_start,
        CASE
            WHEN c.role = 'agent' THEN coalesce(c.trunk_start, c.leg_start)
            ELSE c.leg_start
        END AS call_start
    FROM (
        SELECT
            w.*,
            CASE
                WHEN w.is_trunk THEN 'trunk'
                WHEN w.trunk_callid IS NOT NULL THEN 'agent'
                ELSE 'single'
            END AS role
        FROM (
            -- the legs sharing a link: a trunk leg (by ref_callid) and its agent legs (by
            -- original_callid); one sort by (account, link) instead of a self-join
            SELECT
                k.*,
                min(CASE WHEN k.is_trunk THEN k.callid END)
                    OVER (PARTITION BY k.account_id, k.link) AS trunk_callid,
                min(CASE WHEN k.is_trunk THEN k.leg_start END)
                    OVER (PARTITION BY k.account_id, k.link) AS trunk_start
            FROM (
                SELECT
                    cdrs.account_id,
                    cdrs.callid,
                    cdrs.ani_user,
                    cdrs.dnis_user,
                    cdrs.name_endpoint_ani,
                    cdrs.name_endpoint_dnis,
                    cdrs.type,
                    cdrs.end_reason,
                    cdrs.duration,
                    cdrs.ring_time,
                    coalesce(cdrs.detect_time, cdrs.connect_time, cdrs.disconnect_time) AS leg_start,
                    coalesce(cdrs.ref_callid, '0') <> '0' AS is_trunk,
                    CASE
                        WHEN coalesce(cdrs.ref_callid, '0') <> '0' THEN cdrs.ref_callid
                        ELSE cdrs.original_callid
                    END AS link
                FROM cdrs
            ) k
        ) w
    ) c
    JOIN accounts a ON a.id = c.account_id
) l""",
    "COMMENT ON VIEW v_call_legs IS 'One row per CDR leg with its call (call_id), role (trunk, agent, single), direction, endpoint and the local day and hour of its call. Agent leg: not a trunk leg, original_callid = a trunk leg''s ref_callid (same account); every other leg is a call of its own.'",
    "COMMENT ON COLUMN v_call_legs.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_call_legs.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_call_legs.callid IS 'the leg''s callid'",
    "COMMENT ON COLUMN v_call_legs.call_id IS 'the call the leg belongs to: its trunk leg''s callid for an agent leg, else its own callid'",
    "COMMENT ON COLUMN v_call_legs.role IS 'trunk (real ref_callid), agent (rung by a trunk leg''s call), or single'",
    "COMMENT ON COLUMN v_call_legs.direction IS 'incoming or outgoing; a null type is incoming for trunk and agent legs, else outgoing'",
    "COMMENT ON COLUMN v_call_legs.endpoint IS 'dnis_user when incoming, ani_user otherwise'",
    "COMMENT ON COLUMN v_call_legs.endpoint_name IS 'name_endpoint_dnis when incoming, name_endpoint_ani otherwise'",
    "COMMENT ON COLUMN v_call_legs.type IS 'cdrs.type as stored (may be null)'",
    "COMMENT ON COLUMN v_call_legs.end_reason IS 'cdrs.end_reason'",
    "COMMENT ON COLUMN v_call_legs.duration IS 'talk seconds of the leg'",
    "COMMENT ON COLUMN v_call_legs.ring_time IS 'cdrs.ring_time as stored (may be negative)'",
    "COMMENT ON COLUMN v_call_legs.answered IS 'duration > 0'",
    "COMMENT ON COLUMN v_call_legs.leg_start IS 'coalesce(detect_time, connect_time, disconnect_time)'",
    "COMMENT ON COLUMN v_call_legs.call_start IS 'start of the leg''s call (its trunk leg''s start for an agent leg)'",
    "COMMENT ON COLUMN v_call_legs.day IS 'the call''s start date on the account''s clock (accounts.timezone)'",
    "COMMENT ON COLUMN v_call_legs.hour_start IS 'start of the call''s hour on the account''s clock'",
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
    """CREATE VIEW v_live_concurrency AS
SELECT
    s.account_id,
    a.name AS account_name,
    s.minute,
    s.minute AT TIME ZONE a.timezone AS local_minute,
    s.samples,
    s.max_active,
    s.max_ringing,
    s.max_talking
FROM (
    SELECT
        account_id,
        date_trunc('minute', sampled_at, 'UTC') AS minute,
        count(*) AS samples,
        max(active) AS max_active,
        max(ringing) AS max_ringing,
        max(talking) AS max_talking
    FROM live_samples
    GROUP BY account_id, date_trunc('minute', sampled_at, 'UTC')
) s
JOIN accounts a ON a.id = s.account_id""",
    "COMMENT ON VIEW v_live_concurrency IS 'Concurrent calls per account and minute, from the live samples: the largest number of active, ringing and talking legs sampled in that minute.'",
    "COMMENT ON COLUMN v_live_concurrency.account_id IS 'accounts.id'",
    "COMMENT ON COLUMN v_live_concurrency.account_name IS 'accounts.name'",
    "COMMENT ON COLUMN v_live_concurrency.minute IS 'the minute (timestamptz)'",
    "COMMENT ON COLUMN v_live_concurrency.local_minute IS 'the minute on the account''s wall clock'",
    "COMMENT ON COLUMN v_live_concurrency.samples IS 'live samples taken in the minute'",
    "COMMENT ON COLUMN v_live_concurrency.max_active IS 'largest active count sampled'",
    "COMMENT ON COLUMN v_live_concurrency.max_ringing IS 'largest ringing count sampled'",
    "COMMENT ON COLUMN v_live_concurrency.max_talking IS 'largest talking count sampled'",
]

READER_ROLE_DO_BLOCK = """DO $cdr_etl$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'cdr_reader') THEN
        BEGIN
            EXECUTE 'CREATE ROLE "cdr_reader" NOLOGIN';
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a concurrent migration: roles are cluster-wide
            WHEN insufficient_privilege THEN
                RAISE WARNING 'cdr-etl: cannot create role % (%): see READER_ROLE_SQL',
                    'cdr_reader', SQLERRM;
                RETURN;
        END;
    END IF;
    EXECUTE 'GRANT USAGE ON SCHEMA "public" TO "cdr_reader"';
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "cdr_reader"';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA "public" GRANT SELECT ON TABLES TO "cdr_reader"';
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cdr-etl: cannot grant read access to % (%)', 'cdr_reader', SQLERRM;
END
$cdr_etl$"""

REVOKE_DO_BLOCK = """DO $cdr_etl$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'cdr_reader') THEN
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA "public" REVOKE SELECT ON TABLES FROM "cdr_reader"';
        EXECUTE 'REVOKE SELECT ON ALL TABLES IN SCHEMA "public" FROM "cdr_reader"';
        EXECUTE 'REVOKE USAGE ON SCHEMA "public" FROM "cdr_reader"';
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'cdr-etl: cannot revoke the grants of % (%)', 'cdr_reader', SQLERRM;
END
$cdr_etl$"""

DOWNGRADE: list[str] = [
    'DROP VIEW IF EXISTS v_live_concurrency',
    'DROP VIEW IF EXISTS v_sync_health',
    'DROP VIEW IF EXISTS v_inbound_calls',
    'DROP VIEW IF EXISTS v_daily_endpoint',
    'DROP VIEW IF EXISTS v_hourly_account',
    'DROP VIEW IF EXISTS v_daily_account',
    'DROP VIEW IF EXISTS v_call_legs',
]
# fmt: on


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))
    op.execute(sa.text(READER_ROLE_DO_BLOCK))


def downgrade() -> None:
    op.execute(sa.text(REVOKE_DO_BLOCK))
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
