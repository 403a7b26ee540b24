"""cdr_rollup_add: the load adds a page's new calls to the kept data

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 06:00:00

The load used to recompute, for every page, each 5-minute bucket and local hour the page
touched from all of their legs. cdr_rollup_add keeps the legs of a page whose calls are new
to the kept data (neither the leg nor any kept leg shares its link) by adding their figures
to the kept rows, and hands the others to cdr_rollup_refresh, which recomputes them as
before.

`call_legs` and `inbound_calls` lose their foreign key to `accounts` (a check per row the
load writes); a trigger on `accounts` deletes an account's rows of both instead, as the
cascade did. The downgrade puts the keys back and drops the trigger and the functions.
Every statement is frozen here as applied (generated once from etl/db/rollup.py).
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
ADD = """CREATE FUNCTION cdr_rollup_add(p_account integer, p_callids text[])
RETURNS integer LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    v_tz text;
    v_sl integer;
    v_recompute text[];
    v_spans tstzrange[];
BEGIN
    -- one refresher per account at a time, as in cdr_rollup_refresh
    PERFORM pg_advisory_xact_lock(726356, p_account);
    SELECT timezone INTO v_tz FROM accounts WHERE id = p_account;
    SELECT service_level_seconds INTO v_sl FROM rollup_settings;
    -- The page's legs as stored now. A leg is new to the kept data when neither it nor any
    -- kept leg shares its link: its whole call is among the page's new legs, so its figures
    -- are added to the kept ones. The others are recomputed below.
    WITH page AS MATERIALIZED (
        SELECT c.*, k.callid IS NOT NULL OR l.link IS NOT NULL AS recompute
        FROM (SELECT DISTINCT u.callid FROM unnest(p_callids) u(callid)) u
        CROSS JOIN LATERAL (
            SELECT
                c.account_id, c.callid, c.original_callid, c.ref_callid, c.type, c.ani,
                c.dnis, c.ani_user, c.dnis_user, c.name_endpoint_ani, c.name_endpoint_dnis,
                c.end_reason, c.duration, c.ring_time, c.detect_time, c.connect_time,
                c.disconnect_time,
                CASE
                    WHEN coalesce(c.ref_callid, '0') <> '0' THEN c.ref_callid
                    ELSE c.original_callid
                END AS link
            FROM cdrs c
            WHERE c.account_id = p_account AND c.callid = u.callid
            LIMIT 1
        ) c
        LEFT JOIN LATERAL (
            SELECT k.callid FROM call_legs k
            WHERE k.account_id = p_account AND k.callid = c.callid
            LIMIT 1
        ) k ON true
        LEFT JOIN LATERAL (
            SELECT k.link FROM call_legs k
            WHERE k.account_id = p_account AND k.link = c.link
            LIMIT 1
        ) l ON true
    ), legs AS MATERIALIZED (
        SELECT * FROM page WHERE NOT recompute
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
        RETURNING *
    ), bucket_legs AS MATERIALIZED (
        SELECT
            k.bucket_start, k.call_id, k.callid, k.role, k.direction, k.leg_start, d.type,
            d.original_callid, d.end_reason, d.duration, d.ring_time, d.connect_time,
            d.disconnect_time, d.dnis_user, d.ani_user, d.name_endpoint_dnis,
            d.name_endpoint_ani
        FROM kept k
        JOIN legs d ON d.callid = k.callid
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
        date_trunc('hour', f.bucket_start, v_tz),
        (f.bucket_start AT TIME ZONE v_tz)::date,
        date_trunc('hour', f.bucket_start AT TIME ZONE v_tz),
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
            FROM bucket_legs k
            GROUP BY k.bucket_start, k.call_id
        ) c
    ) f
    GROUP BY f.bucket_start
    ON CONFLICT (account_id, bucket_start) DO UPDATE SET
        legs = rollup_5min.legs + excluded.legs,
        calls = rollup_5min.calls + excluded.calls,
        answered = rollup_5min.answered + excluded.answered,
        answered_seconds = rollup_5min.answered_seconds + excluded.answered_seconds,
        talk_seconds = rollup_5min.talk_seconds + excluded.talk_seconds,
        end_ok = rollup_5min.end_ok + excluded.end_ok,
        end_cancelled = rollup_5min.end_cancelled + excluded.end_cancelled,
        end_no_answer = rollup_5min.end_no_answer + excluded.end_no_answer,
        end_temporarily_unavailable = rollup_5min.end_temporarily_unavailable + excluded.end_temporarily_unavailable,
        end_not_found = rollup_5min.end_not_found + excluded.end_not_found,
        end_decline = rollup_5min.end_decline + excluded.end_decline,
        end_service_unavailable = rollup_5min.end_service_unavailable + excluded.end_service_unavailable,
        end_other = rollup_5min.end_other + excluded.end_other,
        network_failed = rollup_5min.network_failed + excluded.network_failed,
        inbound_calls = rollup_5min.inbound_calls + excluded.inbound_calls,
        inbound_answered = rollup_5min.inbound_answered + excluded.inbound_answered,
        answered_within_sl = rollup_5min.answered_within_sl + excluded.answered_within_sl,
        answer_wait_seconds = rollup_5min.answer_wait_seconds + excluded.answer_wait_seconds,
        abandoned = rollup_5min.abandoned + excluded.abandoned,
        abandon_wait_seconds = rollup_5min.abandon_wait_seconds + excluded.abandon_wait_seconds
    ), bucket_endpoints AS MATERIALIZED (
        SELECT e.*
        FROM (
    SELECT
        p_account,
        e.bucket_start,
        (e.bucket_start AT TIME ZONE v_tz)::date,
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
        FROM bucket_legs k
    ) e
    GROUP BY e.bucket_start, e.endpoint
        ) e (account_id, bucket_start, day, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds)
    ), bucket_endpoints_old AS MATERIALIZED (
        SELECT r.*
        FROM (SELECT DISTINCT n.bucket_start FROM bucket_endpoints n) n
        CROSS JOIN LATERAL (
            SELECT r.ctid AS tid, r.* FROM rollup_endpoint_5min r
            WHERE r.account_id = p_account AND r.bucket_start = n.bucket_start
            OFFSET 0
        ) r
        WHERE EXISTS (
            SELECT FROM bucket_endpoints n
            WHERE n.bucket_start = r.bucket_start AND n.endpoint IS NOT DISTINCT FROM r.endpoint
        )
    ), bucket_endpoints_gone AS (
        DELETE FROM rollup_endpoint_5min WHERE ctid = ANY(ARRAY(SELECT o.tid FROM bucket_endpoints_old o))
    ), bucket_endpoints_kept AS (
        INSERT INTO rollup_endpoint_5min (account_id, bucket_start, day, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds)
        SELECT
            p_account,
            e.bucket_start,
            (e.bucket_start AT TIME ZONE v_tz)::date,
            e.endpoint,
            (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_at ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_callid ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            sum(e.legs), sum(e.incoming_legs), sum(e.outgoing_legs), sum(e.answered),
            sum(e.talk_seconds), sum(e.ring_seconds)
        FROM (SELECT bucket_start, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds FROM bucket_endpoints UNION ALL SELECT bucket_start, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds FROM bucket_endpoints_old) e
        GROUP BY e.bucket_start, e.endpoint
    ), hour_endpoints AS MATERIALIZED (
        SELECT e.*
        FROM (
        SELECT
            p_account,
            e.hour_start,
            (e.hour_start AT TIME ZONE v_tz)::date,
            e.endpoint,
            (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_at ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_callid ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            sum(e.legs), sum(e.incoming_legs), sum(e.outgoing_legs), sum(e.answered),
            sum(e.talk_seconds), sum(e.ring_seconds)
        FROM (SELECT date_trunc('hour', b.bucket_start, v_tz) AS hour_start, b.endpoint, b.endpoint_name, b.name_at, b.name_callid, b.legs, b.incoming_legs, b.outgoing_legs, b.answered, b.talk_seconds, b.ring_seconds FROM bucket_endpoints b) e
        GROUP BY e.hour_start, e.endpoint
        ) e (account_id, hour_start, day, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds)
    ), hour_endpoints_old AS MATERIALIZED (
        SELECT r.*
        FROM (SELECT DISTINCT n.hour_start FROM hour_endpoints n) n
        CROSS JOIN LATERAL (
            SELECT r.ctid AS tid, r.* FROM rollup_endpoint_hourly r
            WHERE r.account_id = p_account AND r.hour_start = n.hour_start
            OFFSET 0
        ) r
        WHERE EXISTS (
            SELECT FROM hour_endpoints n
            WHERE n.hour_start = r.hour_start AND n.endpoint IS NOT DISTINCT FROM r.endpoint
        )
    ), hour_endpoints_gone AS (
        DELETE FROM rollup_endpoint_hourly WHERE ctid = ANY(ARRAY(SELECT o.tid FROM hour_endpoints_old o))
    ), hour_endpoints_kept AS (
        INSERT INTO rollup_endpoint_hourly (account_id, hour_start, day, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds)
        SELECT
            p_account,
            e.hour_start,
            (e.hour_start AT TIME ZONE v_tz)::date,
            e.endpoint,
            (array_agg(e.endpoint_name ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_at ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            (array_agg(e.name_callid ORDER BY e.name_at DESC NULLS LAST, e.name_callid DESC) FILTER (WHERE e.endpoint_name IS NOT NULL))[1],
            sum(e.legs), sum(e.incoming_legs), sum(e.outgoing_legs), sum(e.answered),
            sum(e.talk_seconds), sum(e.ring_seconds)
        FROM (SELECT hour_start, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds FROM hour_endpoints UNION ALL SELECT hour_start, endpoint, endpoint_name, name_at, name_callid, legs, incoming_legs, outgoing_legs, answered, talk_seconds, ring_seconds FROM hour_endpoints_old) e
        GROUP BY e.hour_start, e.endpoint
    ), totals AS (
        INSERT INTO account_totals AS t (account_id, cdrs)
        SELECT p_account, count(*) FROM legs
        ON CONFLICT (account_id) DO UPDATE SET cdrs = t.cdrs + excluded.cdrs
    )
    SELECT
        (SELECT array_agg(p.callid) FROM page p WHERE p.recompute),
        (SELECT array_agg(tstzrange(s.talk_start, s.talk_end))
            FROM (
                SELECT min(k.talk_start) AS talk_start, max(k.talk_end) AS talk_end
                FROM kept k
                WHERE k.talk_start IS NOT NULL
                GROUP BY k.call_id
            ) s)
    INTO v_recompute, v_spans;
    PERFORM cdr_concurrency_add(p_account, v_spans, 1);
    -- the rest, after the new legs are kept (it may recompute some of them too)
    IF v_recompute IS NOT NULL THEN
        PERFORM cdr_rollup_refresh(p_account, v_recompute);
    END IF;
    RETURN coalesce(cardinality(v_recompute), 0);
END
$fn$"""

FORGET = """CREATE FUNCTION cdr_forget_account() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- the per-leg kept tables have no foreign key to accounts (a check per leg at load)
    DELETE FROM call_legs WHERE account_id = OLD.id;
    DELETE FROM inbound_calls WHERE account_id = OLD.id;
    RETURN OLD;
END
$fn$"""

UPGRADE: list[str] = [
    ADD,
    FORGET,
    "CREATE TRIGGER accounts_forget_kept_legs AFTER DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION cdr_forget_account()",
    "ALTER TABLE call_legs DROP CONSTRAINT fk_call_legs_account_id_accounts",
    "ALTER TABLE inbound_calls DROP CONSTRAINT fk_inbound_calls_account_id_accounts",
]

DOWNGRADE: list[str] = [
    "DELETE FROM call_legs k WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = k.account_id)",
    "DELETE FROM inbound_calls i WHERE NOT EXISTS (SELECT FROM accounts a WHERE a.id = i.account_id)",
    "ALTER TABLE call_legs ADD CONSTRAINT fk_call_legs_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "ALTER TABLE inbound_calls ADD CONSTRAINT fk_inbound_calls_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id) ON DELETE CASCADE",
    "DROP TRIGGER accounts_forget_kept_legs ON accounts",
    "DROP FUNCTION cdr_forget_account()",
    "DROP FUNCTION cdr_rollup_add(integer, text[])",
]
# fmt: on


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
