"""Views for BI: the usual telecom figures as plain SQL views (created by Alembic revision 0002).

This module holds their current SQL. Migrations never import it: each revision holds the
SQL it applied, frozen (0002 created the views, 0005 made v_daily_account, v_hourly_account,
v_daily_endpoint and v_sync_health read the kept data of etl/db/rollup.py, 0006 added
figures to the first two and v_concurrency_minute, 0007 made v_inbound_calls read
`inbound_calls`, 0010 made v_call_legs read `call_legs`). A later change to a view is a
new revision holding its new SQL, generated from the constants here.

Rules shared by every view
--------------------------
- **Trunk leg**: a leg with a real `ref_callid` (not null, not `'0'`).
- **Agent leg**: a leg that is not a trunk leg and whose `original_callid` equals the
  `ref_callid` of a trunk leg of the same account (one leg per agent an inbound call rang).
- **Call**: every leg that is not an agent leg is a call of its own (a trunk leg, an
  outbound leg, an internal call, a feature code...); an agent leg belongs to its trunk
  leg's call (if several trunk legs share that `ref_callid`, to the one with the smallest
  `callid`). So calls = legs - agent legs. An agent leg whose trunk leg is not (yet) stored
  counts as a call of its own.
- **Start** of a leg: `coalesce(detect_time, connect_time, disconnect_time)`. A call starts
  when its trunk leg starts (an agent leg whose trunk has no time at all: at its own start).
- **Day / hour**: the call's start on the account's own clock (`accounts.timezone`): a call
  at 23:30 in Costa Rica counts on that Costa Rica day, not on the UTC day. Every leg of a
  call counts on the day of the call's start, so per-day legs add up across views. Legs with
  no time at all have no day and are left out of the per-day and per-hour views.
- **Answered**: a leg with `duration > 0`; a call is answered when one of its legs is.
- **Direction** of a leg: its `type` when it is `incoming` or `outgoing`; a null `type` is
  `incoming` for trunk and agent legs (part of an inbound call) and `outgoing` otherwise
  (an internal call or a feature code is placed by its `ani_user`); any other `type` text
  counts as `outgoing`. The **endpoint** of a leg is `dnis_user` (and
  `name_endpoint_dnis`) when incoming, `ani_user` (and `name_endpoint_ani`) otherwise.

Views and their columns
-----------------------
`v_call_legs`: one row per CDR leg, classified (kept in `call_legs` by the load).
    account_id, account_name; callid; call_id (the call it belongs to: its trunk leg's
    callid for an agent leg, else its own callid); role (`trunk` | `agent` | `single`);
    direction (`incoming` | `outgoing`); endpoint, endpoint_name; type, end_reason,
    duration, ring_time (as stored; a negative ring_time stays negative); answered
    (duration > 0); leg_start, call_start (timestamptz); day (date on the account's
    clock); hour_start (timestamptz: start of the call's hour on the account's clock).

`v_daily_account`: one row per account and local day with at least one call.
    account_id, account_name, day; legs; calls; answered (answered calls); minutes
    (sum of duration / 60 over answered legs, numeric rounded to 2: leg minutes, so an
    inbound call's trunk and agent legs both count); asr (answered / calls, numeric
    rounded to 4); acd (average talk seconds of the answered calls, rounded to 2: a call's
    talk seconds are the longest duration among its legs, i.e. the caller's connected
    time); end_ok, end_cancelled, end_no_answer, end_temporarily_unavailable,
    end_not_found, end_decline, end_service_unavailable, end_other (legs by end_reason;
    end_other holds every other value, "" and null included; they add up to legs); then
    the figures of revision 0006 (below): ner; inbound_calls, inbound_answered,
    answered_within_sl, service_level, asa, abandoned, abandon_rate, abandon_wait_avg;
    peak_concurrent, peak_minute.

`v_hourly_account`: the same figures per account and local hour.
    account_id, account_name, day, hour_start (timestamptz: the instant the local hour
    began, the row's key even where a fall-back repeats a wall-clock hour), local_hour (the
    hour on the account's wall clock), then legs, calls, answered, minutes, asr, acd,
    the end_* counts, ner, inbound_calls, inbound_answered, answered_within_sl,
    service_level, asa, abandoned, abandon_rate, abandon_wait_avg, peak_concurrent and
    peak_minute as in v_daily_account, per hour.

Figures for call centres and trunk sizing (v_daily_account, v_hourly_account):
- **ner** (ITU-T E.411 network effectiveness ratio) = 1 - calls failed by the network /
  calls. A call failed by the network is unanswered and its own leg (the trunk leg, else
  its single leg) ended with none of the user-side reasons `USER_END_REASONS` (OK,
  CANCELLED, NO_ANSWER, DECLINE, BUSY, TEMPORARILY_UNAVAILABLE: answer, caller gave up,
  ring no answer, terminal rejection or busy, terminal unavailable). `NOT_FOUND`,
  `SERVICE_UNAVAILABLE`, empty, null and unknown reasons count against it.
- **Inbound calls** are the calls v_inbound_calls lists (trunk legs, direct inbound legs).
  **Answered by a person**: an agent leg answered (duration > 0), or for a direct inbound
  leg, the leg itself; an IVR answering the trunk leg is not an answer by a person.
  **Wait**: from the call's start (its trunk leg's start) to the first person's answer
  (connect_time, else disconnect_time - duration), whole seconds, never negative.
  inbound_answered counts them; answered_within_sl those whose wait is at most the
  threshold (`[bi] service_level_seconds`, default 20, as kept in rollup_settings);
  service_level = answered_within_sl / inbound_calls; asa (average speed of answer) = mean
  wait of inbound_answered. **Abandoned**: inbound, not answered by a person, and its own
  leg ended `OK` or `CANCELLED`: the caller hung up, in the IVR or while agents rang (a
  call refused with `DECLINE`, `BUSY`, ... or failed by the network is not abandoned);
  abandon_rate = abandoned / inbound_calls; abandon_wait_avg = mean seconds from their
  start to their last leg's disconnect_time (0 when unknown).
- **Calls in progress** (v_concurrency_minute): an answered leg talks from its connect_time
  (else disconnect_time - duration) for its duration (up to a day); a call talks from its
  legs' first talk to their last; it counts in every minute that span overlaps, so a
  60-minute call counts in each of its 60 minutes. peak_concurrent is the period's
  largest count, peak_minute the first minute that reached it (UTC instant).

`v_daily_endpoint`: one row per account, local day and endpoint.
    account_id, account_name, day, endpoint, endpoint_name (the latest non-null name
    seen that day); legs (legs offered to or placed by the endpoint); incoming_legs,
    outgoing_legs; answered (legs with duration > 0); talk_seconds (their duration);
    ring_seconds (sum of ring_time with negative values clamped to 0).

`v_inbound_calls`: one row per inbound call: each trunk leg with its agent legs (a trunk
leg with no agent leg is still a row), plus each direct inbound leg (`type = incoming`,
not a trunk leg, `original_callid` null or its own callid; so an agent leg whose trunk leg
is missing, a call of its own in v_daily_account, is not listed here).
    account_id, account_name; call_id (the trunk leg's callid); customer_number (its
    ani); did (its dnis); started_at (timestamptz); day (local date); ended_at (latest
    disconnect_time of its legs); answered (some leg with duration > 0, as in
    v_daily_account); agent_answered (an agent leg with duration > 0); answered_by,
    answered_by_name (the endpoint of the answering leg: the first agent leg to answer,
    else, when only the trunk leg was answered, its receiving endpoint, e.g. the IVR;
    null when unanswered); wait_seconds (from started_at until the answering leg
    connected, or until ended_at when unanswered; never negative); talk_seconds (the
    answering leg's duration; 0 when unanswered); legs (1 + its agent legs).

`v_sync_health`: one row per account.
    account_id, account_name, timezone; watermarks (jsonb: pass -> {position,
    lag_seconds}); newest_position, oldest_position (the most and least advanced
    pass); lag_seconds, max_lag_seconds (now on the account's wall clock minus
    newest_position, resp. oldest_position, in whole seconds); last_run_kind,
    last_run_status, last_run_started_at, last_run_finished_at, last_run_error (the
    latest run of any kind); last_success_at (finished_at of the latest successful sync
    run); newest_cdr_at (latest detect_time stored); rows_stored (cdrs rows); rejects
    (distinct rejected records); failed_runs_24h (runs failed in the last 24 hours).

`v_concurrency_minute`: one row per account and minute with a call in progress (from the
CDRs, kept in `concurrency_minute` by the load).
    account_id, account_name, minute (timestamptz), local_minute (account's wall clock);
    calls (answered calls in progress at some moment of the minute).

`v_live_concurrency`: one row per account and minute with live samples.
    account_id, account_name, minute (timestamptz), local_minute (account's wall
    clock); samples; max_active, max_ringing, max_talking.

Efficiency: no view derives calls from `cdrs` per query. v_call_legs reads `call_legs`,
kept by the load (before revision 0010 it classified the account's whole `cdrs` on every
query: 5-10 s on 1.6 M legs); its day and hour are those of the call's 5-minute bucket in
`rollup_5min`, so a filter on `day` is an index range of `rollup_5min` (account_id, day)
and then of `call_legs` (account_id, bucket_start). v_inbound_calls reads `inbound_calls`,
kept by the load (etl/db/rollup.py): a day's calls are one index range of (account_id, day)
or (account_id, started_at). v_sync_health does one indexed lookup per account (accounts
are few; runs and cdrs are many).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "END_REASONS",
    "VIEWS",
    "View",
    "create_statements",
    "drop_statements",
]

END_REASONS: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "NO_ANSWER",
    "TEMPORARILY_UNAVAILABLE",
    "NOT_FOUND",
    "DECLINE",
    "SERVICE_UNAVAILABLE",
)
"""The end reasons with a column of their own (`end_<lower case>`); the rest is `end_other`."""

USER_END_REASONS: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "NO_ANSWER",
    "DECLINE",
    "BUSY",
    "TEMPORARILY_UNAVAILABLE",
)
"""End reasons of an unanswered call that do not count against NER (ITU-T E.411 counts as
effective: answer, user busy, ring no answer, terminal rejection or unavailability; the
caller giving up is the user's side too). Every other value, `NOT_FOUND`,
`SERVICE_UNAVAILABLE`, empty and null included, counts as failed by the network."""


@dataclass(frozen=True)
class View:
    """A view: its name, its SELECT, and what it and each of its columns mean."""

    name: str
    comment: str
    select: str
    columns: dict[str, str] = field(default_factory=dict)

    def create(self) -> str:
        return f"CREATE VIEW {self.name} AS\n{self.select.strip()}"

    def drop(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"

    def comments(self) -> list[str]:
        """COMMENT ON VIEW, then COMMENT ON COLUMN for each described column."""
        statements = [f"COMMENT ON VIEW {self.name} IS {_literal(self.comment)}"]
        statements += [
            f"COMMENT ON COLUMN {self.name}.{column} IS {_literal(text)}"
            for column, text in self.columns.items()
        ]
        return statements


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- v_call_legs -------------------------------------------------------------------------

V_CALL_LEGS = View(
    name="v_call_legs",
    comment=(
        "One row per CDR leg with its call (call_id), role (trunk, agent, single), "
        "direction, endpoint and the local day and hour of its call. Agent leg: not a "
        "trunk leg, original_callid = a trunk leg's ref_callid (same account); every other "
        "leg is a call of its own. Kept by the load in call_legs (cdr-etl rollup --rebuild "
        "recomputes it)."
    ),
    select="""
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
LEFT JOIN rollup_5min r ON r.account_id = k.account_id AND r.bucket_start = k.bucket_start
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "callid": "the leg's callid",
        "call_id": "the call the leg belongs to: its trunk leg's callid for an agent leg, "
        "else its own callid",
        "role": "trunk (real ref_callid), agent (rung by a trunk leg's call), or single",
        "direction": "incoming or outgoing; a null type is incoming for trunk and agent legs, "
        "else outgoing",
        "endpoint": "dnis_user when incoming, ani_user otherwise",
        "endpoint_name": "name_endpoint_dnis when incoming, name_endpoint_ani otherwise",
        "type": "cdrs.type as stored (may be null)",
        "end_reason": "cdrs.end_reason",
        "duration": "talk seconds of the leg",
        "ring_time": "cdrs.ring_time as stored (may be negative)",
        "answered": "duration > 0",
        "leg_start": "coalesce(detect_time, connect_time, disconnect_time)",
        "call_start": "start of the leg's call (its trunk leg's start for an agent leg)",
        "day": "the call's start date on the account's clock (accounts.timezone), as kept "
        "with the figures of v_daily_account",
        "hour_start": "start of the call's hour on the account's clock, as kept with the "
        "figures of v_hourly_account",
    },
)

# --- v_daily_account / v_hourly_account -------------------------------------------------------


def _reason_column(reason: str) -> str:
    return f"end_{reason.lower()}"


_SUM_REASONS = ",\n".join(
    f"    sum(r.{_reason_column(r)})::bigint AS {_reason_column(r)}"
    for r in (*END_REASONS, "OTHER")
)


_FIGURES_OF_G = f"""    g.legs, g.calls, g.answered, g.minutes, g.asr, g.acd,
    {", ".join(f"g.{_reason_column(r)}" for r in (*END_REASONS, "OTHER"))},
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
    p.minute AS peak_minute"""
"""The columns of v_daily_account and v_hourly_account after their keys, from the sums `g`
and the busiest minute `p`."""


def _kept_figures(keys: tuple[str, ...], period: tuple[str, str]) -> str:
    """Per account and period, from the kept rollup (`rollup_5min`): an hour or a day is the
    sum of its 5-minute buckets, since a call counts in the bucket of its start. The peak of
    calls in progress is the period's busiest minute in `concurrency_minute` (one index
    range of at most 1,440 rows a day, in the function cdr_concurrency_peak)."""
    first, end = period
    return f"""
SELECT
    g.account_id,
    g.account_name,
    {", ".join(f"g.{k}" for k in keys)},
{_FIGURES_OF_G}
FROM (
SELECT
    r.account_id,
    a.name AS account_name,
    a.timezone,
    {", ".join(f"r.{k}" for k in keys)},
    sum(r.legs)::bigint AS legs,
    sum(r.calls)::bigint AS calls,
    sum(r.answered)::bigint AS answered,
    round(sum(r.answered_seconds) / 60.0, 2) AS minutes,
    round(sum(r.answered)::numeric / nullif(sum(r.calls), 0), 4) AS asr,
    round(sum(r.talk_seconds)::numeric / nullif(sum(r.answered), 0), 2) AS acd,
{_SUM_REASONS},
    sum(r.network_failed)::bigint AS network_failed,
    sum(r.inbound_calls)::bigint AS inbound_calls,
    sum(r.inbound_answered)::bigint AS inbound_answered,
    sum(r.answered_within_sl)::bigint AS answered_within_sl,
    sum(r.answer_wait_seconds)::bigint AS answer_wait_seconds,
    sum(r.abandoned)::bigint AS abandoned,
    sum(r.abandon_wait_seconds)::bigint AS abandon_wait_seconds
FROM rollup_5min r
JOIN accounts a ON a.id = r.account_id
GROUP BY r.account_id, a.id, {", ".join(f"r.{k}" for k in keys)}
) g
LEFT JOIN LATERAL cdr_concurrency_peak(g.account_id, {first}, {end}) p ON true
"""


_FIGURE_COLUMNS: dict[str, str] = {
    "legs": "CDR legs of the calls",
    "calls": "distinct calls (legs that are not agent legs)",
    "answered": "calls with duration > 0 on some leg",
    "minutes": "sum of duration / 60 over answered legs, rounded to 2",
    "asr": "answered / calls, rounded to 4 (null when no call)",
    "acd": "average talk seconds of the answered calls (a call's longest leg), rounded to 2",
    **{
        _reason_column(r): f"legs with end_reason {r}"
        for r in END_REASONS  # one column per usual end reason
    },
    "end_other": "legs with any other end_reason, empty and null included",
    "ner": "network effectiveness ratio (ITU-T E.411): 1 - calls failed by the network / "
    "calls, rounded to 4. A call failed by the network is unanswered and its own leg (trunk "
    "or single) ended with none of " + ", ".join(USER_END_REASONS),
    "inbound_calls": "inbound calls (the rows of v_inbound_calls)",
    "inbound_answered": "inbound calls answered by a person: an agent leg, or a direct "
    "inbound leg itself (an IVR answering the trunk leg does not count)",
    "answered_within_sl": "inbound calls answered by a person within the service-level "
    "threshold (rollup_settings.service_level_seconds, default 20) of the call's start",
    "service_level": "answered_within_sl / inbound_calls, rounded to 4",
    "asa": "average speed of answer: mean seconds from the call's start to a person's "
    "answer over inbound_answered, rounded to 2",
    "abandoned": "inbound calls not answered by a person whose own leg ended OK or "
    "CANCELLED: the caller hung up, in the IVR or while agents rang",
    "abandon_rate": "abandoned / inbound_calls, rounded to 4",
    "abandon_wait_avg": "mean seconds from an abandoned call's start to its end, rounded to 2",
    "peak_concurrent": "most calls in progress in one minute of the period "
    "(v_concurrency_minute; 0 when none)",
    "peak_minute": "the first minute that reached peak_concurrent (null when none)",
}

V_DAILY_ACCOUNT = View(
    name="v_daily_account",
    comment=(
        "Per account and day on the account's clock (accounts.timezone): legs, calls, "
        "answered calls, minutes, ASR, ACD and legs by end_reason. A call counts on the "
        "local day of its start; an agent leg belongs to its trunk leg's call."
    ),
    select=_kept_figures(
        ("day",),
        (
            "(g.day::timestamp AT TIME ZONE g.timezone)",
            "((g.day + 1)::timestamp AT TIME ZONE g.timezone)",
        ),
    ),
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "day": "local date on the account's clock",
        **_FIGURE_COLUMNS,
    },
)

V_HOURLY_ACCOUNT = View(
    name="v_hourly_account",
    comment=(
        "v_daily_account per hour on the account's clock: hour_start is the instant the "
        "local hour began (a repeated DST hour gives two rows)."
    ),
    select=_kept_figures(
        ("day", "hour_start", "local_hour"), ("g.hour_start", "g.hour_start + interval '1 hour'")
    ),
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "day": "local date on the account's clock",
        "hour_start": "the instant the local hour began",
        "local_hour": "the hour on the account's wall clock",
        **_FIGURE_COLUMNS,
    },
)

# --- v_daily_endpoint --------------------------------------------------------------------

V_DAILY_ENDPOINT = View(
    name="v_daily_endpoint",
    comment=(
        "Per account, day on the account's clock and endpoint (dnis_user of incoming legs, "
        "ani_user of outgoing ones): legs, answered legs, talk and ring seconds (negative "
        "ring_time counted as 0). Legs count on the local day of their call's start."
    ),
    select="""
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
GROUP BY e.account_id, a.id, e.day, e.endpoint
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "day": "local date of the legs' calls on the account's clock",
        "endpoint": "dnis_user of incoming legs, ani_user of outgoing legs",
        "endpoint_name": "the endpoint's latest non-null display name that day",
        "legs": "legs offered to (incoming) or placed by (outgoing) the endpoint",
        "incoming_legs": "legs with direction incoming",
        "outgoing_legs": "legs with direction outgoing",
        "answered": "legs with duration > 0",
        "talk_seconds": "sum of duration of the answered legs",
        "ring_seconds": "sum of ring_time, negative values counted as 0",
    },
)

# --- v_inbound_calls ---------------------------------------------------------------------

V_INBOUND_CALLS = View(
    name="v_inbound_calls",
    comment=(
        "One row per inbound call: a trunk leg (real ref_callid) joined to its agent legs "
        "(original_callid = ref_callid, same account), or a direct incoming leg. Wait, "
        "answered (any leg with duration > 0), who answered (first agent leg to answer, "
        "else the trunk's receiving endpoint) and talk time. Kept by the load in "
        "inbound_calls (cdr-etl rollup --rebuild recomputes it)."
    ),
    select="""
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
JOIN accounts a ON a.id = i.account_id
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "call_id": "the trunk leg's callid (the leg's own for a direct inbound call)",
        "customer_number": "the trunk leg's ani: who called",
        "did": "the trunk leg's dnis: the number called",
        "started_at": "the trunk leg's start: coalesce(detect, connect, disconnect time)",
        "day": "started_at's date on the account's clock",
        "ended_at": "the latest disconnect_time among the call's legs",
        "answered": "some leg of the call has duration > 0",
        "agent_answered": "some agent leg of the call has duration > 0",
        "answered_by": "endpoint of the first agent leg to answer, else the trunk leg's "
        "dnis_user when only it was answered; null when unanswered",
        "answered_by_name": "display name of answered_by",
        "wait_seconds": "seconds from started_at until answered (until ended_at when "
        "unanswered), never negative",
        "talk_seconds": "duration of the answering leg; 0 when unanswered",
        "legs": "1 + the number of agent legs",
    },
)

# --- v_sync_health -----------------------------------------------------------------------

V_SYNC_HEALTH = View(
    name="v_sync_health",
    comment=(
        "Per account: each pass's watermark and lag (now on the account's wall clock minus "
        "the position), the last run, the last successful sync, rows stored, rejects and "
        "runs failed in the last 24 hours."
    ),
    select="""
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
) f ON f.account_id = a.id
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "timezone": "the account's clock (accounts.timezone)",
        "watermarks": "jsonb: pass name -> {position (wall clock), lag_seconds}",
        "newest_position": "the most advanced pass's position (account's wall clock)",
        "oldest_position": "the least advanced pass's position",
        "lag_seconds": "now on the account's wall clock minus newest_position, in seconds",
        "max_lag_seconds": "now on the account's wall clock minus oldest_position",
        "last_run_kind": "kind of the latest run (sync, backfill, verify, live)",
        "last_run_status": "status of the latest run",
        "last_run_started_at": "when the latest run started",
        "last_run_finished_at": "when the latest run finished (null while running)",
        "last_run_error": "the latest run's error, if any",
        "last_success_at": "finished_at of the latest sync run with status ok",
        "newest_cdr_at": "the latest detect_time stored",
        "rows_stored": "rows in cdrs (kept in account_totals by the load)",
        "rejects": "distinct rejected records",
        "failed_runs_24h": "runs with status failed started in the last 24 hours",
    },
)

# --- v_live_concurrency ------------------------------------------------------------------

V_LIVE_CONCURRENCY = View(
    name="v_live_concurrency",
    comment=(
        "Concurrent calls per account and minute, from the live samples: the largest "
        "number of active, ringing and talking legs sampled in that minute."
    ),
    select="""
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
JOIN accounts a ON a.id = s.account_id
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "minute": "the minute (timestamptz)",
        "local_minute": "the minute on the account's wall clock",
        "samples": "live samples taken in the minute",
        "max_active": "largest active count sampled",
        "max_ringing": "largest ringing count sampled",
        "max_talking": "largest talking count sampled",
    },
)

# --- v_concurrency_minute ----------------------------------------------------------------

V_CONCURRENCY_MINUTE = View(
    name="v_concurrency_minute",
    comment=(
        "Calls in progress per account and minute, from the CDRs (not from live polling): "
        "answered calls whose talk span (their legs' first connect to last connect + "
        "duration) overlaps the minute, so a 60-minute call counts in each of its 60 "
        "minutes. Minutes with no call in progress have no row."
    ),
    select="""
SELECT
    c.account_id,
    a.name AS account_name,
    c.minute,
    c.minute AT TIME ZONE a.timezone AS local_minute,
    c.calls
FROM concurrency_minute c
JOIN accounts a ON a.id = c.account_id
""",
    columns={
        "account_id": "accounts.id",
        "account_name": "accounts.name",
        "minute": "the minute (timestamptz)",
        "local_minute": "the minute on the account's wall clock",
        "calls": "answered calls in progress at some moment of the minute",
    },
)

VIEWS: tuple[View, ...] = (
    V_CALL_LEGS,
    V_DAILY_ACCOUNT,
    V_HOURLY_ACCOUNT,
    V_DAILY_ENDPOINT,
    V_INBOUND_CALLS,
    V_SYNC_HEALTH,
    V_LIVE_CONCURRENCY,
    V_CONCURRENCY_MINUTE,
)
"""Every view, in creation order (a view comes after the views it reads)."""


def create_statements() -> list[str]:
    """The SQL that creates every view and its comments, in order."""
    statements: list[str] = []
    for view in VIEWS:
        statements.append(view.create())
        statements.extend(view.comments())
    return statements


def drop_statements() -> list[str]:
    """The SQL that drops every view, dependents first."""
    return [view.drop() for view in reversed(VIEWS)]
