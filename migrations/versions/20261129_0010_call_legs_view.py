"""v_call_legs reads call_legs, kept by the load, instead of classifying cdrs per query

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 12:00:00

v_call_legs classified every leg of an account on every query (a window over the account's
whole `cdrs`: 5-10 s on 1.6 M legs, growing with the table, whatever the rows asked for).
The load has kept each leg's call, role, direction and CDR columns in `call_legs` since
revisions 0005 and 0008, so the view now reads them, with the local day and hour of the
call's 5-minute bucket as `rollup_5min` keeps them (the ones v_daily_account and
v_hourly_account count the call in): a filter on `day` is an index range of `rollup_5min`
(account_id, day), then of `call_legs` (account_id, bucket_start). Same name, columns and
types, so the view is replaced in place (CREATE OR REPLACE): grants made on it and views
built on it by hand stay. No table changes and nothing is filled, so the writers may keep
running. The SQL is frozen here as applied (generated once from etl/db/views.py, with OR
REPLACE); the downgrade puts back the view of revision 0002 the same way.
"""

# ruff: noqa: E501  (frozen SQL pasted verbatim: its long COMMENT lines stay as applied)

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fmt: off
NEW_VIEW: list[str] = [
    """CREATE OR REPLACE VIEW v_call_legs AS
SELECT
    k.account_id,
    a.name AS account_name,
    k.callid,
    k.call_id,
    k.role,
    k.direction,
    CASE WHEN k.direction = 'incoming' THEN k.dnis_user ELSE k.ani_user END AS endpoint,
    CASE
        WHEN k.direction = 'incoming' THEN k.name_endpoint_dnis
        ELSE k.name_endpoint_ani
    END AS endpoint_name,
    k.type,
    k.end_reason,
    k.duration,
    k.ring_time,
    coalesce(k.duration, 0) > 0 AS answered,
    k.leg_start,
    k.call_start,
    r.day,
    r.hour_start
FROM call_legs k
JOIN accounts a ON a.id = k.account_id
-- the local day and hour of the call's 5-minute bucket, as kept with its figures: a filter
-- on day is one index range of rollup_5min (account_id, day), then of call_legs
-- (account_id, bucket_start), so a day's legs cost what they are, not the account's size
LEFT JOIN rollup_5min r ON r.account_id = k.account_id AND r.bucket_start = k.bucket_start""",
    "COMMENT ON VIEW v_call_legs IS 'One row per CDR leg with its call (call_id), role (trunk, agent, single), direction, endpoint and the local day and hour of its call. Agent leg: not a trunk leg, original_callid = a trunk leg''s ref_callid (same account); every other leg is a call of its own. Kept by the load in call_legs (cdr-etl rollup --rebuild recomputes it).'",
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
    "COMMENT ON COLUMN v_call_legs.day IS 'the call''s start date on the account''s clock (accounts.timezone), as kept with the figures of v_daily_account'",
    "COMMENT ON COLUMN v_call_legs.hour_start IS 'start of the call''s hour on the account''s clock, as kept with the figures of v_hourly_account'",
]

OLD_VIEW: list[str] = [
    """CREATE OR REPLACE VIEW v_call_legs AS
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
]
# fmt: on


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(sa.text(statement))


def upgrade() -> None:
    _run(NEW_VIEW)


def downgrade() -> None:
    _run(OLD_VIEW)
