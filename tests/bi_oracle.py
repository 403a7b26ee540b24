"""An independent Python recomputation of the analysts' figures kept since revision 0006:
NER, inbound service level and abandonment, calls in progress per minute and their peaks.

It reads `cdrs` and `accounts` only and follows the definitions as the README and
etl/db/views.py state them, with none of the kept SQL: a classification of legs into calls
of its own, then per call its flags, then sums per local day and hour, and the minutes each
call's talk span overlaps.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from etl.db.views import USER_END_REASONS

MINUTE = timedelta(minutes=1)

_LEGS = text(
    "SELECT c.account_id, a.timezone, c.callid, c.original_callid, c.ref_callid, c.type, "
    "c.end_reason, c.duration, c.detect_time, c.connect_time, c.disconnect_time "
    "FROM cdrs c JOIN accounts a ON a.id = c.account_id"
)


@dataclass
class Figures:
    calls: int = 0
    network_failed: int = 0
    inbound: int = 0
    answered: int = 0
    within_sl: int = 0
    wait: int = 0
    abandoned: int = 0
    abandon_wait: int = 0
    minutes: Counter[datetime] = field(default_factory=Counter)


def _ratio(a: int, b: int, places: int) -> Decimal | None:
    if not b:
        return None
    return (Decimal(a) / Decimal(b)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _start(leg: Any) -> datetime | None:
    start: datetime | None = leg.detect_time or leg.connect_time or leg.disconnect_time
    return start


def _calls(legs: list[Any]) -> dict[tuple[int, str], list[tuple[str, Any]]]:
    """(account, call id) -> [(role, leg)]: trunk legs by a real ref_callid, agent legs by
    their original_callid naming a trunk leg's ref_callid (the smallest such trunk)."""
    trunks: dict[tuple[int, str], str] = {}
    for leg in legs:
        if (leg.ref_callid or "0") != "0":
            key = (leg.account_id, leg.ref_callid)
            trunks[key] = min(trunks.get(key, leg.callid), leg.callid)
    calls: dict[tuple[int, str], list[tuple[str, Any]]] = defaultdict(list)
    for leg in legs:
        if (leg.ref_callid or "0") != "0":
            calls[(leg.account_id, leg.callid)].append(("trunk", leg))
        elif (leg.account_id, leg.original_callid) in trunks:
            calls[(leg.account_id, trunks[(leg.account_id, leg.original_callid)])].append(
                ("agent", leg)
            )
        else:
            calls[(leg.account_id, leg.callid)].append(("single", leg))
    return calls


def _answered_at(leg: Any) -> datetime | None:
    if leg.connect_time is not None:
        return leg.connect_time  # type: ignore[no-any-return]
    if leg.disconnect_time is not None:
        return leg.disconnect_time - timedelta(seconds=leg.duration)  # type: ignore[no-any-return]
    return None


def _count(f: Figures, legs: list[tuple[str, Any]], service_level: int) -> None:
    """One call's contribution to its period's figures."""
    own = next(leg for role, leg in legs if role != "agent")
    answered = any((leg.duration or 0) > 0 for _, leg in legs)
    failed = not answered and own.end_reason not in USER_END_REASONS
    inbound = legs[0][0] == "trunk" or (
        legs[0][0] == "single"
        and own.type == "incoming"
        and own.original_callid in (None, own.callid)
    )
    by_person = [leg for role, leg in legs if role != "trunk" and (leg.duration or 0) > 0]
    f.calls += 1
    f.network_failed += failed
    if not inbound:
        return
    f.inbound += 1
    started = _start(own)
    assert started is not None  # a call with no start has no day: not counted
    if by_person:
        f.answered += 1
        times = [t for t in map(_answered_at, by_person) if t is not None]
        if times:
            wait = max(0, int((min(times) - started).total_seconds() // 1))
            f.wait += wait
            f.within_sl += wait <= service_level
    elif own.end_reason in ("OK", "CANCELLED"):  # the caller hung up
        f.abandoned += 1
        ends = [leg.disconnect_time for _, leg in legs if leg.disconnect_time is not None]
        if ends:
            f.abandon_wait += max(0, int((max(ends) - started).total_seconds() // 1))


def _talk_minutes(legs: list[tuple[str, Any]]) -> list[datetime]:
    """The minutes the call's talk span overlaps: its answered legs' first answer to the last
    answer + duration (a leg's duration counted up to a day)."""
    spans = [
        (t, t + timedelta(seconds=min(leg.duration, 86400)))
        for _, leg in legs
        if (leg.duration or 0) > 0 and (t := _answered_at(leg)) is not None
    ]
    if not spans:
        return []
    first, end = min(s for s, _ in spans), max(e for _, e in spans)
    minute = first.replace(second=0, microsecond=0)
    out = []
    while minute < end:
        out.append(minute)
        minute += MINUTE
    return out


def recompute(conn: Connection, service_level: int = 20) -> dict[str, Any]:
    """{'daily': {(account, day): row}, 'hourly': {(account, hour_start): row},
    'minutes': {(account, minute): calls}} with the views' column names."""
    legs = conn.execute(_LEGS).all()
    zones = {leg.account_id: ZoneInfo(leg.timezone) for leg in legs}
    daily: dict[tuple[int, date], Figures] = defaultdict(Figures)
    hourly: dict[tuple[int, datetime], Figures] = defaultdict(Figures)
    minutes: Counter[tuple[int, datetime]] = Counter()
    for (account, _), call in _calls(list(legs)).items():
        call.sort(key=lambda x: x[0] == "agent")  # its own leg first
        for minute in _talk_minutes(call):
            minutes[(account, minute.astimezone(UTC))] += 1
        start = _start(call[0][1])
        if start is None:
            continue
        local = start.astimezone(zones[account])
        hour = local.replace(minute=0, second=0, microsecond=0)
        for f in (daily[(account, local.date())], hourly[(account, hour.astimezone(UTC))]):
            _count(f, call, service_level)
    return {
        "daily": {k: _row(f) for k, f in daily.items()},
        "hourly": {k: _row(f) for k, f in hourly.items()},
        "minutes": dict(minutes),
    }


def _row(f: Figures) -> dict[str, Any]:
    return {
        "ner": _ratio(f.calls - f.network_failed, f.calls, 4),
        "inbound_calls": f.inbound,
        "inbound_answered": f.answered,
        "answered_within_sl": f.within_sl,
        "service_level": _ratio(f.within_sl, f.inbound, 4),
        "asa": _ratio(f.wait, f.answered, 2),
        "abandoned": f.abandoned,
        "abandon_rate": _ratio(f.abandoned, f.inbound, 4),
        "abandon_wait_avg": _ratio(f.abandon_wait, f.abandoned, 2),
    }


def peak(
    minutes: dict[tuple[int, datetime], int], account: int, first: datetime, end: datetime
) -> tuple[int, datetime | None]:
    """The most calls in progress in one minute of [first, end) and the first such minute."""
    inside = sorted((-n, m) for (a, m), n in minutes.items() if a == account and first <= m < end)
    return (-inside[0][0], inside[0][1]) if inside else (0, None)


NEW_COLUMNS = (
    "ner",
    "inbound_calls",
    "inbound_answered",
    "answered_within_sl",
    "service_level",
    "asa",
    "abandoned",
    "abandon_rate",
    "abandon_wait_avg",
)


def assert_new_figures_equal(conn: Connection, service_level: int = 20) -> None:
    """v_daily_account, v_hourly_account (new columns, peaks) and v_concurrency_minute equal
    the recomputation."""
    want = recompute(conn, service_level)
    kept_minutes = {
        (r.account_id, r.minute): r.calls
        for r in conn.execute(text("SELECT * FROM v_concurrency_minute")).all()
    }
    assert kept_minutes == want["minutes"]
    zones = {a: z for a, z in conn.execute(text("SELECT id, timezone FROM accounts"))}
    for row in conn.execute(text("SELECT * FROM v_daily_account")).mappings():
        zone = ZoneInfo(zones[row["account_id"]])
        first = datetime.combine(row["day"], datetime.min.time(), zone)
        end = datetime.combine(row["day"] + timedelta(days=1), datetime.min.time(), zone)
        expected = {
            **want["daily"][(row["account_id"], row["day"])],
            "peak": peak(want["minutes"], row["account_id"], first, end),
        }
        got = {c: row[c] for c in NEW_COLUMNS} | {
            "peak": (row["peak_concurrent"], row["peak_minute"])
        }
        assert got == expected, (row["account_id"], row["day"], got, expected)
    for row in conn.execute(text("SELECT * FROM v_hourly_account")).mappings():
        first = row["hour_start"]
        expected = {
            **want["hourly"][(row["account_id"], first)],
            "peak": peak(want["minutes"], row["account_id"], first, first + timedelta(hours=1)),
        }
        got = {c: row[c] for c in NEW_COLUMNS} | {
            "peak": (row["peak_concurrent"], row["peak_minute"])
        }
        assert got == expected, (row["account_id"], row["hour_start"], got, expected)
