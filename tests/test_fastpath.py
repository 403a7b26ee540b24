"""The fast path (binary COPY into staging, one set-based upsert) stores exactly what a
deliberately simple reference stores: row by row, a Core INSERT ... ON CONFLICT DO UPDATE
built from the models. Same rows, same content hashes, same counts, on the same simulated
pages: a first read, a re-read after some CDRs changed, and a page of awkward records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningInsert

from etl.api.decode import decode
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.load import DATA_COLUMNS, LoadCounts, load_page
from etl.db.models import cdrs, rejects
from etl.normalize import Cdr, Reject, content_hash, normalize_page
from etl.simulator import Faults, SimAccount, Simulator

TZ_NAME = "America/Costa_Rica"
START = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)  # 08:00 on the account's clock
USERNAME, PASSWORD = "8569841", "01234567891"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def reference_load(
    conn: Connection, account_id: int, rows: Sequence[Cdr], bad: Sequence[Reject]
) -> LoadCounts:
    """The simple path: one statement per row, the last row of a callid winning."""
    counts = LoadCounts(rejected=len(bad))
    for reject in bad:
        statement = insert(rejects).values(
            account_id=account_id,
            callid=reject.callid,
            reason=reject.reason,
            raw=reject.raw,
            raw_hash=content_hash(reject.raw),
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[rejects.c.account_id, rejects.c.raw_hash],
                set_={"times_seen": rejects.c.times_seen + 1, "reason": statement.excluded.reason},
            )
        )
    latest = {row.callid: row for row in rows}
    upsert = insert(cdrs)  # built once; each row's values are its parameters
    query: ReturningInsert[tuple[bool]] = upsert.on_conflict_do_update(
        index_elements=[cdrs.c.account_id, cdrs.c.callid],
        set_={
            **{name: upsert.excluded[name] for name in DATA_COLUMNS},
            "updated_at": func.now(),
        },
        where=cdrs.c.content_hash != upsert.excluded.content_hash,
    ).returning(literal_column("xmax = 0"))
    for row in latest.values():
        values: dict[str, Any] = {"account_id": account_id, **row._asdict()}
        done = conn.execute(query, values).scalar()
        if done is None:
            counts.unchanged += 1
        elif done:
            counts.inserted += 1
        else:
            counts.updated += 1
    return counts


_ODD_TEXT = 'Ñandú \u00e9 \U0001f600 "q" \\ \t tab'


def odd_records() -> list[dict[str, Any]]:
    """Records that stress the typed columns and the jsonb wire form."""
    base = {
        "callid": "odd-1",
        "type": "incoming",
        "ani": "50688887777",
        "dnis": "*34",
        "detect_time": "2024-03-04 00:10:00",
        "connect_time": "0000-00-00 00:00:00",
        "disconnect_time": "2024-03-04T00:10:09.250",
        "duration": "9",
        "ring_time": -2,
        "end_reason": "OK",
    }
    return [
        base,
        {**base, "callid": "odd-2", "ani_user": 8569841000001, "name_endpoint_ani": _ODD_TEXT},
        {**base, "callid": "odd-3", "route_name": {"nested": [1, 2.5, None, "x"]}},
        {**base, "callid": "odd-4", "duration": 5.0, "ring_time": " 35 ", "extra": [True]},
        {**base, "callid": "odd-5", "detect_time": "2024-03-04 00:10:00+01:00", "ani": None},
        {**base, "callid": "odd-6", "ani": "bad\x00nul"},  # a reject
        {**base, "callid": "odd-7", "duration": "ten"},  # a reject
        {**base, "callid": "odd-1", "duration": 11},  # the same callid again: the last wins
        {**base, "callid": " ", "ani": "no callid"},  # a reject
        {**base, "callid": "odd-8", "ani": "   ", "dnis": "NULL", "type": ""},
    ]


def pages_at(sim: Simulator, clock: Clock, now: datetime) -> list[list[dict[str, Any]]]:
    clock.now = now
    pages = []
    for ini in range(0, 10_000, 400):
        answer = sim.handle(
            {
                "username": USERNAME,
                "password": PASSWORD,
                "dateStart": "2024-03-04 08:00:00",
                "dateEnd": "2024-03-04 13:59:59",
                "ini": str(ini),
                "cant": "400",
            }
        )
        page = decode(answer.body, answer.headers["Content-Type"], "json")
        if not page:
            break
        pages.append(page)
    return pages


def table(engine: Engine, account_id: int) -> dict[str, tuple[Any, ...]]:
    skip = ("account_id", "fetched_at", "first_seen_at", "updated_at")  # times of the load
    columns = [c for c in cdrs.c if c.name not in skip]
    with engine.connect() as conn:
        result = conn.execute(select(*columns).where(cdrs.c.account_id == account_id))
        return {row.callid: tuple(row) for row in result}


def reject_rows(engine: Engine, account_id: int) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        result = conn.execute(
            select(
                rejects.c.callid, rejects.c.reason, rejects.c.raw_hash, rejects.c.times_seen
            ).where(rejects.c.account_id == account_id)
        )
        return {tuple(row) for row in result}


def test_fast_path_stores_what_the_simple_path_stores(engine: Engine) -> None:
    ids = upsert_accounts(
        engine,
        [
            AccountConfig(name="fast", username=USERNAME, timezone=TZ_NAME),
            AccountConfig(name="simple", username="1" + USERNAME, timezone=TZ_NAME),
        ],
    )
    clock = Clock(START + timedelta(hours=7))
    faults = Faults(change_rate=0.3, change_after_seconds=3600, duplicate_rate=0.05)
    sim = Simulator(
        [SimAccount(USERNAME, PASSWORD, TZ_NAME, seed=7, calls_per_hour=100)],
        start=START,
        end=START + timedelta(hours=6),
        clock=clock,
        faults=faults,
    )
    tz = ZoneInfo(TZ_NAME)
    first = pages_at(sim, clock, START + timedelta(hours=6, minutes=30))
    later = pages_at(sim, clock, START + timedelta(days=2))  # the changes are out by now
    assert sum(map(len, first)) > 500
    reads = [*first, odd_records(), *later, odd_records()]

    totals = {"fast": LoadCounts(), "simple": LoadCounts()}
    for records in reads:
        good, bad = normalize_page(records, tz)
        with engine.begin() as conn:
            fast = load_page(conn, ids["fast"], good, bad)
        with engine.begin() as conn:
            simple = reference_load(conn, ids["simple"], good, bad)
        assert fast == simple
        totals["fast"].add(fast)
        totals["simple"].add(simple)

    counts = totals["fast"]
    assert counts.inserted > 500
    assert counts.updated > 50
    assert counts.unchanged > 500
    assert counts.rejected == 8  # per odd read: two bad records and odd-1's first version
    stored = table(engine, ids["fast"])
    assert stored == table(engine, ids["simple"])
    assert reject_rows(engine, ids["fast"]) == reject_rows(engine, ids["simple"])
    # and what is stored is what the simulator serves at the end, hashed the same way
    truth = sim.truth_between(USERNAME, "2024-03-04 08:00:00", "2024-03-04 13:59:59")
    hashes = {callid: row[-1] for callid, row in stored.items() if not callid.startswith("odd")}
    assert hashes == {str(k): content_hash(v) for k, v in truth.items()}
    assert stored["odd-1"][cdrs.c.keys().index("duration") - 1] == 11
