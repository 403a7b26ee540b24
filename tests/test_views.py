"""The BI views against an independent computation in Python from the same raw records.

Data: four UTC days of simulated CDRs (etl.simulator's generator) of two accounts on
different clocks, America/Costa_Rica (UTC-6) and America/New_York (with the fall-back of
2024-11-03 inside the range), plus hand-made legs for the edge cases: a call at 23:30
local, a negative ring_time, a null type on a trunk leg, an unanswered leg with "" times,
a leg without detect_time, an agent leg whose trunk leg is missing.

The oracle below parses the raw records itself (not through etl.normalize) and applies the
rules of etl/db/views.py's docstring in plain Python; the views must agree row for row.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, Engine, text

import etl.db.views
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.load import load_page
from etl.db.views import END_REASONS, VIEWS
from etl.normalize import Cdr, Reject, normalize
from etl.simulator.data import CallGenerator
from tests.bi_oracle import NEW_COLUMNS, assert_new_figures_equal

CR, NY = "America/Costa_Rica", "America/New_York"
ACCOUNTS = {"cr": ("8569841", CR), "ny": ("7000001", NY)}
FIRST_HOUR = int(datetime(2024, 11, 1, tzinfo=UTC).timestamp()) // 3600
HOURS = 4 * 24
NO_VALUE = {"", "null", "none"}

# --- the data -----------------------------------------------------------------------------


def edge_records() -> list[dict[str, Any]]:
    """Hand-made legs (Costa Rica wall clock) for the edge cases the simulator may miss."""

    def leg(callid: str, **fields: Any) -> dict[str, Any]:
        return {
            "callid": callid,
            "original_callid": "",
            "ref_callid": "0",
            "type": "incoming",
            "ani": "50688887777",
            "dnis": "40001234",
            "ani_user": "5550001",
            "dnis_user": "8569841",
            "name_endpoint_ani": "Troncal SIP",
            "name_endpoint_dnis": "IVR <Principal>",
            "detect_time": "",
            "connect_time": "",
            "disconnect_time": "",
            "duration": 0,
            "ring_time": 0,
            "end_reason": "",
            **fields,
        }

    late = "2024-11-04 23:30:{:02d}"  # 05:30 UTC on Nov 5: a Nov 4 call in Costa Rica
    return [
        # an IVR call at 23:30 local; the trunk leg has a null type
        leg("edge-trunk", ref_callid="edge-trunk", type=None, detect_time=late.format(0),
            connect_time=late.format(1), disconnect_time="2024-11-04 23:33:00",
            duration=179, ring_time=1, end_reason="OK"),
        # an agent rung first: unanswered, "" times
        leg("edge-agent-1", original_callid="edge-trunk", ani_user="8569841",
            dnis_user="5550101", name_endpoint_ani="IVR <Principal>",
            name_endpoint_dnis="Agente Uno", dnis="101", detect_time=late.format(20),
            connect_time="", disconnect_time=late.format(38), duration="0", ring_time="18",
            end_reason="NO_ANSWER"),
        # the agent who answered, with a negative ring time
        leg("edge-agent-2", original_callid="edge-trunk", ani_user="8569841",
            dnis_user="5550102", name_endpoint_ani="IVR <Principal>",
            name_endpoint_dnis="Agente Dos", dnis="102", detect_time=late.format(39),
            connect_time=late.format(45), disconnect_time="2024-11-04 23:32:59",
            duration=134, ring_time=-2, end_reason="OK"),
        # an unanswered outbound leg with "" and null times
        leg("edge-out", type="outgoing", ani="40001234", dnis="88887777",
            ani_user="5550101", dnis_user="5550001", name_endpoint_ani="Agente Uno",
            name_endpoint_dnis="Troncal SIP", detect_time="2024-11-02 10:00:00",
            connect_time="", disconnect_time=None, duration=0, ring_time=0,
            end_reason="CANCELLED"),
        # no detect_time: the leg's start is its connect_time
        leg("edge-nodetect", type="outgoing", ani_user="5550102", dnis_user="5550001",
            name_endpoint_ani="Agente Dos", detect_time="0000-00-00 00:00:00",
            connect_time="2024-11-02 23:59:59", disconnect_time="2024-11-03 00:01:00",
            duration=61, ring_time=None, end_reason="BUSY"),
        # two agents answered (a transfer): the first to answer is the one with the larger
        # callid, and its connect_time is unset (answered at disconnect - duration)
        leg("edge2-trunk", ref_callid="edge2-trunk", detect_time="2024-11-01 10:00:00",
            connect_time="2024-11-01 10:00:01", disconnect_time="2024-11-01 10:02:00",
            duration=119, ring_time=1, end_reason="OK"),
        leg("edge2-agent-a", original_callid="edge2-trunk", ani_user="8569841",
            dnis_user="5550103", name_endpoint_dnis="Agente Tres",
            detect_time="2024-11-01 10:00:05", connect_time="2024-11-01 10:00:30",
            disconnect_time="2024-11-01 10:01:30", duration=60, ring_time=25,
            end_reason="OK"),
        leg("edge2-agent-b", original_callid="edge2-trunk", ani_user="8569841",
            dnis_user="5550104", name_endpoint_dnis="Agente Cuatro",
            detect_time="2024-11-01 10:00:05", connect_time="null",
            disconnect_time="2024-11-01 10:00:50", duration=40, ring_time=5,
            end_reason="OK"),
        # an agent leg whose trunk leg was never stored: a call of its own
        leg("edge-orphan", original_callid="no-such-trunk", ani_user="8569841",
            dnis_user="5550101", name_endpoint_dnis="Agente Uno",
            detect_time="2024-11-03 09:00:00", connect_time="2024-11-03 09:00:05",
            disconnect_time="2024-11-03 09:01:05", duration=60, ring_time=5,
            end_reason="OK"),
    ]  # fmt: skip


@cache
def raw_records(name: str) -> tuple[dict[str, Any], ...]:
    """The raw records of one account: four days of simulated calls (+ edges for `cr`)."""
    username, zone = ACCOUNTS[name]
    generator = CallGenerator(username, seed=11, timezone=zone, calls_per_hour=12)
    records = [leg.record for hour in range(HOURS) for leg in generator.hour(FIRST_HOUR + hour)]
    if name == "cr":
        records += edge_records()
    return tuple(records)


@dataclass
class World:
    ids: dict[str, int]  # account name -> id
    records: dict[str, tuple[dict[str, Any], ...]]


def load(
    engine: Engine,
    names: Iterable[str] = ACCOUNTS,
    records: Mapping[str, tuple[dict[str, Any], ...]] | None = None,
) -> World:
    """Store the accounts' records through the real load path (normalize + load_page)."""
    names = list(names)
    configs = [
        AccountConfig(name=n, username=ACCOUNTS[n][0], timezone=ACCOUNTS[n][1]) for n in names
    ]
    ids = upsert_accounts(engine, configs)
    records = {n: raw_records(n) for n in names} if records is None else dict(records)
    for name in names:
        rows = [normalize(r, ZoneInfo(ACCOUNTS[name][1])) for r in records[name]]
        assert not [r for r in rows if isinstance(r, Reject)]
        with engine.begin() as conn:
            load_page(conn, ids[name], [r for r in rows if isinstance(r, Cdr)])
    return World(ids, records)


@pytest.fixture
def world(engine: Engine) -> World:
    return load(engine)


# --- the oracle: the raw records, parsed and classified in plain Python ---------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text_ = str(value)
    stripped = text_.strip()
    if stripped.lower() in NO_VALUE or stripped.startswith("0000-00-00"):
        return None
    return text_


def _int(value: Any) -> int | None:
    text_ = _text(value)
    return None if text_ is None else int(text_)


def _time(value: Any, zone: ZoneInfo) -> datetime | None:
    text_ = _text(value)
    if text_ is None:
        return None
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text_), text_
    return datetime.strptime(text_, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).astimezone(UTC)


@dataclass
class Leg:
    account: str
    zone: ZoneInfo
    callid: str
    original: str | None
    ref: str | None
    type: str | None
    ani: str | None
    dnis: str | None
    ani_user: str | None
    dnis_user: str | None
    name_ani: str | None
    name_dnis: str | None
    end_reason: str | None
    duration: int | None
    ring: int | None
    detect: datetime | None
    connect: datetime | None
    disconnect: datetime | None
    # classification
    role: str = ""
    call_id: str = ""
    call_start: datetime | None = None

    @property
    def start(self) -> datetime | None:
        return self.detect or self.connect or self.disconnect

    @property
    def answered(self) -> bool:
        return (self.duration or 0) > 0

    @property
    def is_trunk(self) -> bool:
        return self.ref not in (None, "0")

    @property
    def day(self) -> date | None:
        return None if self.call_start is None else self.call_start.astimezone(self.zone).date()

    @property
    def hour_start(self) -> datetime | None:
        if self.call_start is None:
            return None
        local = self.call_start.astimezone(self.zone)
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)

    @property
    def direction(self) -> str:
        if self.type == "incoming" or (self.type is None and self.role in ("trunk", "agent")):
            return "incoming"
        return "outgoing"

    @property
    def endpoint(self) -> tuple[str | None, str | None]:
        if self.direction == "incoming":
            return self.dnis_user, self.name_dnis
        return self.ani_user, self.name_ani

    @property
    def answered_at(self) -> datetime | None:
        if self.connect is not None:
            return self.connect
        if self.disconnect is not None and self.duration is not None:
            return self.disconnect - timedelta(seconds=self.duration)
        return None


def parse(account: str, raw: Mapping[str, Any]) -> Leg:
    zone = ZoneInfo(ACCOUNTS[account][1])
    callid = _text(raw["callid"])
    assert callid is not None
    return Leg(
        account, zone, callid, _text(raw.get("original_callid")), _text(raw.get("ref_callid")),
        _text(raw.get("type")), _text(raw.get("ani")), _text(raw.get("dnis")),
        _text(raw.get("ani_user")), _text(raw.get("dnis_user")),
        _text(raw.get("name_endpoint_ani")), _text(raw.get("name_endpoint_dnis")),
        _text(raw.get("end_reason")), _int(raw.get("duration")), _int(raw.get("ring_time")),
        _time(raw.get("detect_time"), zone), _time(raw.get("connect_time"), zone),
        _time(raw.get("disconnect_time"), zone),
    )  # fmt: skip


def oracle_legs(world: World) -> list[Leg]:
    """Every leg, with its role, call and call start by the documented rules."""
    result: list[Leg] = []
    for account, records in world.records.items():
        legs = [parse(account, r) for r in records]
        trunks: dict[str, list[Leg]] = defaultdict(list)
        for leg in legs:
            if leg.is_trunk:
                assert leg.ref is not None
                trunks[leg.ref].append(leg)
        for leg in legs:
            if leg.is_trunk:
                leg.role, leg.call_id, leg.call_start = "trunk", leg.callid, leg.start
            elif leg.original is not None and leg.original in trunks:
                mine = trunks[leg.original]
                starts = [t.start for t in mine if t.start is not None]
                leg.role, leg.call_id = "agent", min(t.callid for t in mine)
                leg.call_start = min(starts) if starts else leg.start
            else:
                leg.role, leg.call_id, leg.call_start = "single", leg.callid, leg.start
        result += legs
    return result


def _round(value: Decimal, places: str) -> Decimal:
    return value.quantize(Decimal(places), rounding=ROUND_HALF_UP)


def figures(legs: list[Leg]) -> dict[str, Any]:
    """The v_daily_account figures of a set of legs (whole calls)."""
    calls: dict[str, list[Leg]] = defaultdict(list)
    for leg in legs:
        calls[leg.call_id].append(leg)
    answered = [c for c in calls.values() if any(leg.answered for leg in c)]
    answered_seconds = sum(leg.duration or 0 for leg in legs if leg.answered)
    talks = [max(leg.duration or 0 for leg in c if leg.answered) for c in answered]
    reasons = {f"end_{r.lower()}": sum(leg.end_reason == r for leg in legs) for r in END_REASONS}
    return {
        "legs": len(legs),
        "calls": len(calls),
        "answered": len(answered),
        "minutes": _round(Decimal(answered_seconds) / Decimal(60), "0.01"),
        "asr": _round(Decimal(len(answered)) / Decimal(len(calls)), "0.0001"),
        "acd": _round(Decimal(sum(talks)) / Decimal(len(talks)), "0.01") if talks else None,
        **reasons,
        "end_other": sum(leg.end_reason not in END_REASONS for leg in legs),
    }


# --- helpers ----------------------------------------------------------------------------------


def fetch(
    conn: Connection, view: str, key: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = conn.execute(text(f"SELECT * FROM {view}")).mappings().all()
    result = {tuple(row[k] for k in key): dict(row) for row in rows}
    assert len(result) == len(rows), f"{view}: {key} is not a key"
    return result


def assert_same(
    actual: Mapping[Any, Mapping[str, Any]], expected: Mapping[Any, Mapping[str, Any]]
) -> None:
    """Same keys, and each row equal (the first difference is reported)."""
    assert sorted(actual, key=repr) == sorted(expected, key=repr)
    for key, row in expected.items():
        got = {k: actual[key][k] for k in row}
        assert got == dict(row), key


# --- the views ----------------------------------------------------------------------------------


def test_daily_account_matches_the_raw_records(engine: Engine, world: World) -> None:
    """v_daily_account equals legs/calls/answered/minutes/ASR/ACD/end reasons per local day."""
    by_day: dict[tuple[int, date], list[Leg]] = defaultdict(list)
    for leg in oracle_legs(world):
        if leg.day is not None:
            by_day[(world.ids[leg.account], leg.day)].append(leg)
    names = {v: k for k, v in world.ids.items()}
    expected = {
        key: {"account_name": names[key[0]], **figures(legs)} for key, legs in by_day.items()
    }
    with engine.connect() as conn:
        actual = fetch(conn, "v_daily_account", ("account_id", "day"))
    assert_same(actual, expected)
    assert len(expected) >= 8  # both accounts, several local days each


def test_hourly_account_matches_the_raw_records(engine: Engine, world: World) -> None:
    """v_hourly_account equals the same figures per local hour, DST fall-back included."""
    by_hour: dict[tuple[int, datetime], list[Leg]] = defaultdict(list)
    for leg in oracle_legs(world):
        if leg.call_start is not None:
            local = leg.call_start.astimezone(leg.zone).replace(minute=0, second=0)
            by_hour[(world.ids[leg.account], local.astimezone(UTC))].append(leg)
    expected = {}
    for (account_id, hour_start), legs in by_hour.items():
        local = hour_start.astimezone(legs[0].zone)
        expected[(account_id, hour_start)] = {
            "day": local.date(),
            "local_hour": local.replace(tzinfo=None),
            **figures(legs),
        }
    with engine.connect() as conn:
        actual = fetch(conn, "v_hourly_account", ("account_id", "hour_start"))
    assert_same(actual, expected)


def test_daily_endpoint_matches_the_raw_records(engine: Engine, world: World) -> None:
    """v_daily_endpoint equals legs, answered, talk and clamped ring seconds per endpoint."""
    groups: dict[tuple[int, date, str | None], list[Leg]] = defaultdict(list)
    for leg in oracle_legs(world):
        if leg.day is not None:
            groups[(world.ids[leg.account], leg.day, leg.endpoint[0])].append(leg)
    expected = {}
    for key, legs in groups.items():
        named = [leg for leg in legs if leg.endpoint[1] is not None]
        latest = max(
            named,
            key=lambda leg: (
                leg.start is not None,
                leg.start or datetime.min.replace(tzinfo=UTC),
                leg.callid,
            ),
            default=None,
        )
        expected[key] = {
            "endpoint_name": latest.endpoint[1] if latest else None,
            "legs": len(legs),
            "incoming_legs": sum(leg.direction == "incoming" for leg in legs),
            "outgoing_legs": sum(leg.direction == "outgoing" for leg in legs),
            "answered": sum(leg.answered for leg in legs),
            "talk_seconds": sum(leg.duration or 0 for leg in legs if leg.answered),
            "ring_seconds": sum(max(leg.ring or 0, 0) for leg in legs),
        }
    with engine.connect() as conn:
        actual = fetch(conn, "v_daily_endpoint", ("account_id", "day", "endpoint"))
    assert_same(actual, expected)
    assert any(leg.ring is not None and leg.ring < 0 for leg in oracle_legs(world))


def test_call_legs_classify_every_leg(engine: Engine, world: World) -> None:
    """v_call_legs gives every leg, in every column, what the oracle derives from the raw
    records: its role, call, direction, endpoint, the CDR columns, and its call's day and
    hour (read from the kept call_legs and rollup_5min since revision 0010)."""
    expected = {
        (world.ids[leg.account], leg.callid): {
            "account_id": world.ids[leg.account],
            "account_name": leg.account,
            "callid": leg.callid,
            "call_id": leg.call_id,
            "role": leg.role,
            "direction": leg.direction,
            "endpoint": leg.endpoint[0],
            "endpoint_name": leg.endpoint[1],
            "type": leg.type,
            "end_reason": leg.end_reason,
            "duration": leg.duration,
            "ring_time": leg.ring,
            "answered": leg.answered,
            "leg_start": leg.start,
            "call_start": leg.call_start,
            "day": leg.day,
            "hour_start": leg.hour_start,
        }
        for leg in oracle_legs(world)
    }
    with engine.connect() as conn:
        actual = fetch(conn, "v_call_legs", ("account_id", "callid"))
    assert_same(actual, expected)
    roles = {row["role"] for row in actual.values()}
    assert roles == {"trunk", "agent", "single"}


def test_a_day_of_call_legs_is_read_by_index_from_the_kept_data(
    engine: Engine, world: World
) -> None:
    """v_call_legs reads no `cdrs` (whose per-query classification cost grew with the
    account), and a day of one account can be read by index: `rollup_5min` by (account_id,
    day), then `call_legs` by (account_id, bucket_start), not the account's every leg."""
    reads = text(
        "SELECT DISTINCT c.relname FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid "
        "JOIN pg_class c ON c.oid = d.refobjid WHERE r.ev_class = 'v_call_legs'::regclass "
        "AND c.relname <> 'v_call_legs'"
    )
    day = min(leg.day for leg in oracle_legs(world) if leg.day is not None)
    with engine.connect() as conn:
        assert set(conn.execute(reads).scalars()) == {"accounts", "call_legs", "rollup_5min"}
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask for the path
        plan = conn.execute(
            text(
                "EXPLAIN (FORMAT JSON) SELECT * FROM v_call_legs "
                "WHERE account_id = :a AND day = :d"
            ),
            {"a": min(world.ids.values()), "d": day},
        ).scalar_one()
    scans: dict[str, tuple[str, str]] = {}

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            scans[node["Relation Name"]] = (node["Node Type"], node.get("Index Cond", ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    (rollup_scan, rollup_cond), (legs_scan, legs_cond) = scans["rollup_5min"], scans["call_legs"]
    assert "Index" in rollup_scan, scans
    assert "day" in rollup_cond, scans
    assert "Index" in legs_scan, scans
    assert "bucket_start" in legs_cond, scans


def test_inbound_calls_match_the_raw_records(engine: Engine, world: World) -> None:
    """v_inbound_calls: one row per trunk or direct inbound leg, with wait, answerer, talk."""
    legs = oracle_legs(world)
    agents: dict[tuple[str, str], list[Leg]] = defaultdict(list)
    for leg in legs:
        if not leg.is_trunk and leg.original is not None:
            agents[(leg.account, leg.original)].append(leg)
    expected = {}
    for t in legs:
        direct = t.type == "incoming" and not t.is_trunk and t.original in (None, t.callid)
        if not (t.is_trunk or direct):
            continue
        mine = agents[(t.account, t.ref)] if t.is_trunk and t.ref is not None else []
        answering = sorted(
            (a for a in mine if a.answered),
            key=lambda a: (a.answered_at is None, a.answered_at or t.start, a.callid),
        )
        ends = [leg.disconnect for leg in (t, *mine) if leg.disconnect is not None]
        ended_at = max(ends) if ends else None
        if answering:
            by, name, at, talk = (answering[0].dnis_user, answering[0].name_dnis,
                                  answering[0].answered_at, answering[0].duration)  # fmt: skip
        elif t.answered:
            by, name, at, talk = t.dnis_user, t.name_dnis, t.answered_at, t.duration
        else:
            by, name, at, talk = None, None, ended_at, 0
        wait = None
        if at is not None and t.start is not None:
            wait = max(0, math.floor((at - t.start).total_seconds()))
        expected[(world.ids[t.account], t.callid)] = {
            "customer_number": t.ani,
            "did": t.dnis,
            "started_at": t.start,
            "day": t.start.astimezone(t.zone).date() if t.start else None,
            "ended_at": ended_at,
            "answered": bool(answering) or t.answered,
            "agent_answered": bool(answering),
            "answered_by": by,
            "answered_by_name": name,
            "wait_seconds": wait,
            "talk_seconds": talk,
            "legs": 1 + len(mine),
        }
    with engine.connect() as conn:
        actual = fetch(conn, "v_inbound_calls", ("account_id", "call_id"))
    assert_same(actual, expected)
    values = list(actual.values())
    assert any(r["agent_answered"] for r in values)
    assert any(r["answered"] and not r["agent_answered"] for r in values)
    assert any(not r["answered"] for r in values)
    assert any(r["legs"] == 1 for r in values)  # a call with no agent leg is still a row


def first_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A v_daily_account row's columns up to the end_* counts (tests/bi_oracle.py checks the
    columns after them)."""
    return {
        k: v for k, v in row.items() if k not in {*NEW_COLUMNS, "peak_concurrent", "peak_minute"}
    }


def test_edge_cases_land_where_the_rules_say(engine: Engine) -> None:
    """23:30 local counts on that local day, negative ring is 0, null-type trunk is incoming."""
    world = load(engine, ["cr"], {"cr": tuple(edge_records())})
    cr = world.ids["cr"]
    with engine.connect() as conn:
        legs = fetch(conn, "v_call_legs", ("account_id", "callid"))
        daily = fetch(conn, "v_daily_account", ("account_id", "day"))
        endpoints = fetch(conn, "v_daily_endpoint", ("account_id", "day", "endpoint"))
        inbound = fetch(conn, "v_inbound_calls", ("account_id", "call_id"))
    trunk = legs[(cr, "edge-trunk")]
    assert (trunk["role"], trunk["direction"], trunk["endpoint"]) == (
        "trunk",
        "incoming",
        "8569841",
    )
    assert trunk["call_start"] == datetime(2024, 11, 5, 5, 30, tzinfo=UTC)
    assert trunk["day"] == date(2024, 11, 4)  # the Costa Rica day, not the UTC one
    for agent in ("edge-agent-1", "edge-agent-2"):
        assert (legs[(cr, agent)]["role"], legs[(cr, agent)]["call_id"]) == ("agent", "edge-trunk")
    assert legs[(cr, "edge-orphan")]["role"] == "single"  # its trunk leg is missing
    assert legs[(cr, "edge-nodetect")]["call_start"] == datetime(2024, 11, 3, 5, 59, 59, tzinfo=UTC)
    assert legs[(cr, "edge-out")]["answered"] is False

    zero = dict.fromkeys([f"end_{r.lower()}" for r in END_REASONS] + ["end_other"], 0)
    assert sorted(day for _, day in daily) == [date(2024, 11, d) for d in (1, 2, 3, 4)]
    assert first_columns(daily[(cr, date(2024, 11, 4))]) == {
        "account_id": cr, "account_name": "cr", "day": date(2024, 11, 4),
        "legs": 3, "calls": 1, "answered": 1, "minutes": Decimal("5.22"),  # (179 + 134) / 60
        "asr": Decimal("1.0000"), "acd": Decimal("179.00"),  # the call's longest leg
        **zero, "end_ok": 2, "end_no_answer": 1,
    }  # fmt: skip
    assert first_columns(daily[(cr, date(2024, 11, 2))]) == {
        "account_id": cr, "account_name": "cr", "day": date(2024, 11, 2),
        "legs": 2, "calls": 2, "answered": 1, "minutes": Decimal("1.02"),
        "asr": Decimal("0.5000"), "acd": Decimal("61.00"),
        **zero, "end_cancelled": 1, "end_other": 1,  # BUSY
    }  # fmt: skip
    assert daily[(cr, date(2024, 11, 3))]["calls"] == 1  # the orphan agent leg
    with engine.connect() as conn:
        assert_new_figures_equal(conn)  # NER, service level, concurrency on these edges too

    agent_one = endpoints[(cr, date(2024, 11, 4), "5550101")]
    agent_two = endpoints[(cr, date(2024, 11, 4), "5550102")]
    assert (agent_one["legs"], agent_one["answered"], agent_one["ring_seconds"]) == (1, 0, 18)
    assert (agent_two["legs"], agent_two["answered"], agent_two["talk_seconds"]) == (1, 1, 134)
    assert agent_two["ring_seconds"] == 0  # ring_time -2 clamped
    assert agent_two["endpoint_name"] == "Agente Dos"
    ivr = endpoints[(cr, date(2024, 11, 4), "8569841")]
    assert (ivr["incoming_legs"], ivr["outgoing_legs"]) == (1, 0)  # null type, trunk leg

    assert daily[(cr, date(2024, 11, 1))]["minutes"] == Decimal("3.65")  # 219 s
    assert daily[(cr, date(2024, 11, 1))]["acd"] == Decimal("119.00")
    transfer = inbound[(cr, "edge2-trunk")]
    assert (transfer["answered_by"], transfer["answered_by_name"]) == ("5550104", "Agente Cuatro")
    assert (transfer["wait_seconds"], transfer["talk_seconds"]) == (10, 40)
    assert sorted(inbound) == [(cr, "edge-trunk"), (cr, "edge2-trunk")]  # orphan: no call
    assert {k: v for k, v in inbound[(cr, "edge-trunk")].items()} == {
        "account_id": cr, "account_name": "cr", "call_id": "edge-trunk",
        "customer_number": "50688887777", "did": "40001234",
        "started_at": datetime(2024, 11, 5, 5, 30, tzinfo=UTC), "day": date(2024, 11, 4),
        "ended_at": datetime(2024, 11, 5, 5, 33, tzinfo=UTC),
        "answered": True, "agent_answered": True,
        "answered_by": "5550102", "answered_by_name": "Agente Dos",
        "wait_seconds": 45, "talk_seconds": 134, "legs": 3,
    }  # fmt: skip


def test_per_day_legs_agree_across_views(engine: Engine, world: World) -> None:
    """v_daily_endpoint's legs add up to v_daily_account's legs for each account and day."""
    with engine.connect() as conn:
        daily = fetch(conn, "v_daily_account", ("account_id", "day"))
        endpoints = conn.execute(
            text("SELECT account_id, day, sum(legs) AS legs FROM v_daily_endpoint GROUP BY 1, 2")
        ).all()
    assert {(a, d): int(n) for a, d, n in endpoints} == {k: r["legs"] for k, r in daily.items()}


def test_sync_health_reports_watermarks_runs_and_counts(engine: Engine) -> None:
    """v_sync_health: pass watermarks and lag, last run, last success, rows, rejects, failures."""
    world = load(engine)
    cr, ny = world.ids["cr"], world.ids["ny"]
    positions = {"2m": datetime(2024, 11, 4, 23, 0), "1h": datetime(2024, 11, 4, 22, 0)}
    bad = normalize({"callid": "", "duration": 1}, ZoneInfo(CR))
    bad2 = normalize({"callid": "x", "detect_time": "yesterday"}, ZoneInfo(CR))
    with engine.begin() as conn:
        for name, position in positions.items():
            conn.execute(
                text(
                    "INSERT INTO watermarks (account_id, pass_name, position) VALUES (:a, :p, :t)"
                ),
                {"a": cr, "p": name, "t": position},
            )
        t0 = datetime.now(UTC)
        runs = [  # account, kind, status, started hours before t0, finished, error
            (cr, "sync", "ok", 5, True, None),
            (cr, "sync", "failed", 3, True, "HTTP 500"),
            (cr, "sync", "failed", 50, True, "an old failure"),
            (cr, "backfill", "failed", 1, True, "boom"),
            (ny, "sync", "running", 0.5, False, None),
        ]
        for account, kind, status, hours, finished, error in runs:
            started = t0 - timedelta(hours=hours)
            conn.execute(
                text(
                    "INSERT INTO runs (run_id, account_id, kind, status, error, started_at, "
                    "finished_at) VALUES ('r', :a, :k, :s, :e, :started, :finished)"
                ),
                {
                    "a": account, "k": kind, "s": status, "e": error, "started": started,
                    "finished": started + timedelta(minutes=1) if finished else None,
                },
            )  # fmt: skip
        assert isinstance(bad, Reject)
        assert isinstance(bad2, Reject)
        load_page(conn, cr, [], [bad, bad2], run_id="r")
    with engine.connect() as conn:  # one transaction: now() is the same in every statement
        now = conn.execute(text("SELECT now()")).scalar_one()
        rows = fetch(conn, "v_sync_health", ("account_id",))
    snapshot = rows[(cr,)]

    def lag(position: datetime) -> int:
        local_now: datetime = now.astimezone(ZoneInfo(CR)).replace(tzinfo=None)
        return math.floor((local_now - position).total_seconds())

    assert snapshot["watermarks"] == {
        name: {"position": position.isoformat(), "lag_seconds": lag(position)}
        for name, position in positions.items()
    }
    assert snapshot["newest_position"] == positions["2m"]
    assert snapshot["oldest_position"] == positions["1h"]
    assert snapshot["lag_seconds"] == lag(positions["2m"])
    assert snapshot["max_lag_seconds"] == lag(positions["1h"])
    assert (snapshot["last_run_kind"], snapshot["last_run_status"], snapshot["last_run_error"]) == (
        "backfill", "failed", "boom",
    )  # fmt: skip
    assert snapshot["last_run_started_at"] == t0 - timedelta(hours=1)
    assert snapshot["last_success_at"] == t0 - timedelta(hours=5) + timedelta(minutes=1)
    assert snapshot["failed_runs_24h"] == 2
    assert snapshot["rejects"] == 2
    cr_legs = [parse("cr", r) for r in world.records["cr"]]
    assert snapshot["rows_stored"] == len(cr_legs)
    assert snapshot["newest_cdr_at"] == max(leg.detect for leg in cr_legs if leg.detect)
    other = rows[(ny,)]
    assert (other["watermarks"], other["lag_seconds"]) == (None, None)
    assert (other["last_run_kind"], other["last_run_status"], other["last_run_finished_at"]) == (
        "sync", "running", None,
    )  # fmt: skip
    assert other["last_success_at"] is None
    assert (other["rows_stored"], other["rejects"], other["failed_runs_24h"]) == (
        len(world.records["ny"]), 0, 0,
    )  # fmt: skip


def test_live_concurrency_takes_the_peak_of_each_minute(engine: Engine) -> None:
    """v_live_concurrency: per account and minute, the max of each live sample count."""
    ids = upsert_accounts(
        engine, [AccountConfig(name=n, username=u, timezone=z) for n, (u, z) in ACCOUNTS.items()]
    )
    base = datetime(2024, 11, 3, 5, 58, tzinfo=UTC)  # New York's repeated 01:00 hour is near
    samples = [
        (ids[name], base + timedelta(seconds=s), (s * 7) % 11, (s * 3) % 5, (s * 5) % 7)
        for name in ACCOUNTS
        for s in range(0, 300, 13)
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO live_samples (account_id, sampled_at, active, ringing, talking) "
                "VALUES (:a, :t, :x, :r, :k)"
            ),
            [{"a": a, "t": t, "x": x, "r": r, "k": k} for a, t, x, r, k in samples],
        )
    groups: dict[tuple[int, datetime], list[tuple[int, int, int]]] = defaultdict(list)
    for account, at, active, ringing, talking in samples:
        groups[(account, at.replace(second=0))].append((active, ringing, talking))
    zones = {ids[name]: ZoneInfo(zone) for name, (_, zone) in ACCOUNTS.items()}
    expected = {
        (account, minute): {
            "local_minute": minute.astimezone(zones[account]).replace(tzinfo=None),
            "samples": len(values),
            "max_active": max(v[0] for v in values),
            "max_ringing": max(v[1] for v in values),
            "max_talking": max(v[2] for v in values),
        }
        for (account, minute), values in groups.items()
    }
    with engine.connect() as conn:
        actual = fetch(conn, "v_live_concurrency", ("account_id", "minute"))
    assert_same(actual, expected)


def test_views_and_columns_are_documented(engine: Engine) -> None:
    """Every view has a comment, and its columns are exactly those described in views.py."""
    doc = etl.db.views.__doc__ or ""
    with engine.connect() as conn:
        for view in VIEWS:
            assert view.name.startswith("v_")
            columns = conn.execute(text(f"SELECT * FROM {view.name} LIMIT 0")).keys()
            assert list(columns) == list(view.columns), view.name
            comment = conn.execute(
                text("SELECT obj_description(CAST(:v AS regclass), 'pg_class')"), {"v": view.name}
            ).scalar_one()
            assert comment == view.comment
            assert f"`{view.name}`" in doc
            section = doc.split(f"`{view.name}`", 1)[1].split("\n`v_", 1)[0]
            missing = [
                c for c in columns
                if c not in section and not (c.startswith("end_") and "end_*" in section)
            ]  # fmt: skip
            assert not missing, (view.name, missing)


def test_view_sql_has_no_bind_parameters() -> None:
    """The migration runs each statement through sqlalchemy.text(): no `:name` may hide in it."""
    for statement in etl.db.views.create_statements() + etl.db.views.drop_statements():
        assert text(statement).compile().params == {}
