"""The bulk load: dedup within a page, COPY + upsert counting inserted / updated /
unchanged, rejects kept once, and staging private to each connection."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from etl.api.decode import decode
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.load import load_page
from etl.db.models import cdrs, rejects
from etl.normalize import SAME_CALLID, Cdr, Reject, dedup, normalize, normalize_page

TZ = ZoneInfo("America/Costa_Rica")


def record(callid: str, duration: int = 10, **extra: Any) -> dict[str, Any]:
    return {
        "callid": callid,
        "original_callid": "",
        "ref_callid": "0",
        "type": "incoming",
        "ani": "50688887777",
        "dnis": "*34",
        "detect_time": "2024-03-01 10:00:00",
        "connect_time": "2024-03-01 10:00:05",
        "disconnect_time": "2024-03-01 10:00:15",
        "duration": duration,
        "ring_time": -2,
        "end_reason": "OK",
        **extra,
    }


def cdr(callid: str, **kwargs: Any) -> Cdr:
    result = normalize(record(callid, **kwargs), TZ)
    assert isinstance(result, Cdr)
    return result


def account(engine: Engine, name: str = "main") -> int:
    return upsert_accounts(engine, [AccountConfig(name=name, username="8569841")])[name]


def test_dedup_keeps_the_last_of_each_callid_in_callid_order() -> None:
    """Two rows with one callid in a page become one: the last read."""
    rows = dedup([cdr("b", duration=1), cdr("a"), cdr("b", duration=2)])
    assert [(r.callid, r.duration) for r in rows] == [("a", 10), ("b", 2)]


def test_a_page_keeps_the_loser_of_two_differing_records_of_one_callid() -> None:
    """In one answer, the same record twice is the duplicated-rows quirk: one leg, nothing
    rejected. Records of one callid that differ (callids are not proven unique): the one
    that reads as the later (here: the longer) is the leg, whatever the order of the
    answer, and the others are rejects, kept whole, never silently dropped."""
    same = normalize_page([record("a"), record("b"), record("a")], TZ)
    assert ([leg.callid for leg in same.legs], same.rejects) == (["a", "b"], [])
    page = normalize_page([record("a", 1), record("a", 2), record("b"), record("a", 3)], TZ)
    assert [(leg.callid, leg.duration) for leg in page.legs] == [("a", 3), ("b", 10)]
    assert page.rejects == [
        Reject(SAME_CALLID, record("a", 1), "a"),
        Reject(SAME_CALLID, record("a", 2), "a"),
    ]
    backwards = normalize_page([record("a", 3), record("b"), record("a", 2), record("a", 1)], TZ)
    assert backwards.legs == page.legs
    assert backwards.rejects == [
        Reject(SAME_CALLID, record("a", 2), "a"),
        Reject(SAME_CALLID, record("a", 1), "a"),
    ]
    again = normalize_page([record("a", 2), record("a", 1), record("a", 2)], TZ)  # quirk + twin
    assert [leg.duration for leg in again.legs] == [2]
    assert again.rejects == [Reject(SAME_CALLID, record("a", 1), "a")]
    later = normalize_page([record("a", 9), record("a", 1, detect_time="2024-03-01 10:00:01")], TZ)
    assert [leg.duration for leg in later.legs] == [1]  # the later start wins over duration


def test_load_counts_inserted_updated_unchanged(engine: Engine) -> None:
    """A page loads new rows, rewrites only changed ones, and counts each kind."""
    account_id = account(engine)
    with engine.begin() as conn:
        first = load_page(conn, account_id, [cdr("1"), cdr("2"), cdr("2"), cdr("3")])
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    with engine.begin() as conn:
        second = load_page(conn, account_id, [cdr("1"), cdr("2", duration=99), cdr("4")])
    assert (second.inserted, second.updated, second.unchanged) == (1, 1, 1)
    with engine.connect() as conn:
        rows = {c: d for c, d in conn.execute(select(cdrs.c.callid, cdrs.c.duration))}
        raw = conn.scalar(select(cdrs.c.raw).where(cdrs.c.callid == "2"))
        ring = conn.scalar(select(cdrs.c.ring_time).where(cdrs.c.callid == "2"))
    assert rows == {"1": 10, "2": 99, "3": 10, "4": 10}
    assert raw == record("2", duration=99)  # the raw record whole, as sent
    assert ring == -2  # negative ring time kept


def test_unchanged_rows_are_not_rewritten(engine: Engine) -> None:
    """An identical re-read leaves updated_at alone (no write at all)."""
    account_id = account(engine)
    with engine.begin() as conn:
        load_page(conn, account_id, [cdr("1")])
    with engine.connect() as conn:
        before = conn.scalar(select(cdrs.c.updated_at))
    with engine.begin() as conn:
        counts = load_page(conn, account_id, [cdr("1")])
    with engine.connect() as conn:
        after = conn.scalar(select(cdrs.c.updated_at))
    assert counts.unchanged == 1
    assert before == after


def test_an_older_read_never_overwrites_a_newer_one(engine: Engine) -> None:
    """A page fetched before a change but stored after the newer read leaves it alone."""
    account_id = account(engine)
    early, late = datetime(2024, 3, 1, 12, tzinfo=UTC), datetime(2024, 3, 1, 13, tzinfo=UTC)
    with engine.begin() as conn:
        load_page(conn, account_id, [cdr("1", duration=10)], fetched_at=early)
    with engine.begin() as conn:  # the newer read: content changed
        newer = load_page(conn, account_id, [cdr("1", duration=99)], fetched_at=late)
    with engine.begin() as conn:  # a page read before that, stored only now
        older = load_page(conn, account_id, [cdr("1", duration=10)], fetched_at=early)
    assert (newer.updated, older.updated, older.unchanged) == (1, 0, 1)
    with engine.connect() as conn:
        row = conn.execute(select(cdrs.c.duration, cdrs.c.fetched_at)).one()
    assert row.duration == 99
    assert row.fetched_at == late


def test_rejects_are_kept_once_and_counted(engine: Engine) -> None:
    """A bad record is stored with its reason; met again it is counted, not doubled."""
    account_id = account(engine)
    bad = normalize(record("", duration=1), TZ)
    assert isinstance(bad, Reject)
    for _ in range(2):
        with engine.begin() as conn:
            counts = load_page(conn, account_id, [cdr("1")], [bad], run_id="r1")
        assert counts.rejected == 1
    with engine.connect() as conn:
        rows = conn.execute(select(rejects.c.reason, rejects.c.times_seen, rejects.c.raw)).all()
    assert len(rows) == 1
    assert "callid" in rows[0].reason
    assert rows[0].times_seen == 2
    assert rows[0].raw == record("", duration=1)


def test_same_callid_in_two_accounts_are_two_rows(engine: Engine) -> None:
    """The natural key is (account, callid)."""
    a, b = account(engine, "a"), account(engine, "b")
    with engine.begin() as conn:
        load_page(conn, a, [cdr("1")])
        load_page(conn, b, [cdr("1")])
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(cdrs)) == 2


def test_concurrent_overlapping_loads_neither_deadlock_nor_double(engine: Engine) -> None:
    """Two connections loading overlapping pages at once end with each CDR once."""
    account_id = account(engine)
    pages = [[cdr(f"{i:05d}") for i in range(start, start + 600)] for start in (0, 300)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def load(rows: list[Cdr]) -> None:
        try:
            with engine.begin() as conn:
                barrier.wait()
                load_page(conn, account_id, list(reversed(rows)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(page,)) for page in pages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(cdrs)) == 900


def test_integers_beyond_64_bits_are_stored_exact(engine: Engine) -> None:
    """A body holding integers orjson cannot write back (beyond 64 bits: the decoder keeps
    them exact) is stored whole, by both the COPY and the upsert path, not a failed page."""
    huge, other = 2**70 + 1, 2**64
    body = (
        b'[{"callid": %d, "type": "incoming", "detect_time": "2024-03-01 10:00:00", '
        b'"duration": 7, "sequence": %d}]' % (huge, other)
    )
    (raw,) = decode(body, "application/json", "json")
    account_id = account(engine)
    for duration in (7, 8):  # a new row, then an update of it
        raw["duration"] = duration
        row = normalize(raw, TZ)
        assert isinstance(row, Cdr)
        with engine.begin() as conn:
            load_page(conn, account_id, [row])
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                cdrs.c.callid,
                cdrs.c.duration,
                cdrs.c.raw["callid"].astext,
                cdrs.c.raw["sequence"].astext,
            )  # fmt: skip
        ).one()
    assert tuple(stored) == (str(huge), 8, str(huge), str(other))
