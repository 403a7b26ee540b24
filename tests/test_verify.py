"""Verify against the simulator on loopback and a real PostgreSQL: it finds exactly what
the database lacks or holds stale, repairs it on request, and leaves an audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, delete, func, insert, select, update

from etl.config import SyncSettings
from etl.db.models import cdrs, rejects, runs
from etl.db.state import account_lock
from etl.normalize import content_hash, to_utc
from etl.verify import VerifyResult, verify_account
from etl.windows import wall_clock
from tests.simworld import PASSWORD, USERNAME, World, utc, world

START = utc(2024, 6, 3, 12, 0, 0)


def recent_answer(w: World) -> dict[str, dict[str, Any]]:
    """The simulator's recent=1 answer at its clock, asked directly: callid -> record."""
    params = {"username": USERNAME, "password": PASSWORD, "recent": "1", "format": "json"}
    records: list[dict[str, Any]] = orjson.loads(w.sim.handle(params).body)
    return {str(r["callid"]): r for r in records}


def synced(w: World) -> None:
    """One sync that reads the whole last 24 h up to now (a pass without delay)."""
    w.sync = SyncSettings.model_validate({"passes": [timedelta(0)]})
    result = w.run()
    assert result.status == "ok", result.error


def verify(w: World, *, repair: bool = False, password: str = PASSWORD) -> VerifyResult:
    return verify_account(
        w.engine, w.source(password), "main", w.clock(), "verify-test", repair=repair,
        healthy_lag=w.sync.healthy_lag,
    )  # fmt: skip


def verify_runs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(runs).where(runs.c.kind == "verify").order_by(runs.c.id)).all()
        )


def test_verify_after_sync_is_clean(engine: Engine) -> None:
    """Right after a sync of the last 24 h, verify finds no difference."""
    with world(engine, now=START) as w:
        synced(w)
        served = recent_answer(w)
        assert served, "the simulator served nothing: the test proves nothing"
        result = verify(w)
        assert result.status == "ok", result
        assert (result.missing, result.different, result.extra) == ([], [], [])
        assert result.served == result.stored == len(served)
        assert (result.requests, result.retries, result.repaired) == (1, 0, 0)
        (row,) = verify_runs(engine)
        assert (row.status, row.fetched, row.unchanged, row.inserted) == (
            "ok",
            len(served),
            len(served),
            0,
        )


def test_cdrs_newer_than_the_watermark_are_not_due_yet(engine: Engine) -> None:
    """After a sync with the default passes (the newest 2 min behind now), the CDRs of the
    last minutes are `pending`, not missing: verify is clean."""
    with world(engine, now=START, calls_per_hour=600) as w:
        assert w.run().status == "ok"
        result = verify(w)
        assert result.status == "ok", result
        assert result.pending > 0  # calls ended in the last two minutes
        assert result.served == result.stored + result.pending


def test_a_stuck_sync_leaves_cdrs_missing_not_pending(engine: Engine) -> None:
    """Three hours after the last sync (its watermark trails now by more than
    sync.healthy_lag, 1 h 7 min 30 s by default), the CDRs detected before that lag are
    missing, not pending: verify says the sync is stuck, and --repair stores them. Only
    the last lag's CDRs stay pending."""
    with world(engine, now=START, calls_per_hour=600) as w:
        assert w.run().status == "ok"
        w.clock.advance(hours=3)
        found = verify(w)
        assert found.status == "differs"
        assert len(found.missing) > 100  # about two hours of calls
        assert found.pending > 0
        repaired = verify(w, repair=True)
        assert repaired.repaired == len(found.missing)
        again = verify(w)
        assert (again.status, again.pending) == ("ok", found.pending)
        due_by = w.clock() - w.sync.healthy_lag
        stored = w.stored()
        for callid, record in recent_answer(w).items():
            detected = record.get("detect_time")
            if detected and to_utc(datetime.fromisoformat(detected), w.tz) <= due_by:
                assert callid in stored, callid


def test_verify_finds_and_repairs_exactly_the_damage(engine: Engine) -> None:
    """Deleted rows are missing, an altered row is different, status differs; repair
    stores them, a second verify is clean, and each verify leaves a runs row."""
    with world(engine, now=START) as w:
        synced(w)
        served = recent_answer(w)
        gone = sorted(served)[10:13]
        altered = sorted(served)[20]
        stale = {**served[altered], "end_reason": "TAMPERED"}
        with engine.begin() as conn:
            conn.execute(
                delete(cdrs).where(cdrs.c.account_id == w.account_id, cdrs.c.callid.in_(gone))
            )
            conn.execute(
                update(cdrs)
                .where(cdrs.c.account_id == w.account_id, cdrs.c.callid == altered)
                .values(raw=stale, content_hash=content_hash(stale))
            )

        found = verify(w)
        assert found.status == "differs"
        assert not found.ok
        assert found.missing == gone
        assert found.different == [altered]
        assert found.extra == []
        assert found.repaired == 0
        assert set(gone).isdisjoint(w.stored())  # a plain verify writes nothing

        fixed = verify(w, repair=True)
        assert fixed.status == "differs"  # what it found; the repair fixed it
        assert (fixed.missing, fixed.different) == (gone, [altered])
        assert fixed.repaired == 4
        stored = w.stored()
        for callid in [*gone, altered]:
            assert stored[callid] == served[callid]

        again = verify(w)
        assert again.status == "ok", again
        assert again.stored == len(served)

        history = verify_runs(engine)
        assert [r.status for r in history] == ["ok", "ok", "ok"]
        assert [(r.inserted, r.updated) for r in history] == [(0, 0), (3, 1), (0, 0)]
        assert all(r.fetched == len(served) and r.run_id == "verify-test" for r in history)
        assert all(r.finished_at is not None for r in history)


def test_extra_rows_are_reported_never_deleted(engine: Engine) -> None:
    """A stored row inside the served time range that the provider does not serve is
    extra, and survives a repair."""
    with world(engine, now=START) as w:
        synced(w)
        with engine.begin() as conn:
            ours = select(cdrs).where(cdrs.c.account_id == w.account_id)
            half = (conn.scalar(select(func.count()).select_from(ours.subquery())) or 0) // 2
            middle = conn.execute(ours.order_by(cdrs.c.detect_time).offset(half)).first()
            assert middle is not None
            row = dict(middle._mapping)
            raw = {**row["raw"], "callid": "not-served-1"}
            row.update(
                callid="not-served-1",
                raw=raw,
                content_hash=content_hash(raw),
            )
            conn.execute(insert(cdrs).values(row))
        found = verify(w, repair=True)
        assert found.status == "differs"
        assert found.extra == ["not-served-1"]
        assert (found.missing, found.different, found.repaired) == ([], [], 0)
        assert "not-served-1" in w.stored()


def test_wrong_password_fails_without_leaking_it(engine: Engine) -> None:
    """A refused password: failed with an authentication message, the password nowhere
    in the result nor in the run history, nothing written to cdrs."""
    with world(engine, now=START) as w:
        result = verify(w, password="00000000000", repair=True)
        assert result.status == "failed"
        assert result.error is not None
        assert "authentication" in result.error.lower()
        assert "00000000000" not in repr(result)
        assert result.retries == 0
        (row,) = verify_runs(engine)
        assert row.status == "failed"
        assert "00000000000" not in (row.error or "")
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(cdrs)) == 0


def test_held_lock_skips(engine: Engine) -> None:
    """Another process verifying the account: skipped, no request, no runs row."""
    with world(engine, now=START) as w:
        requests = w.sim.stats.requests
        with account_lock(engine, w.account_id, "verify") as got:
            assert got is not None
            result = verify(w)
        assert result.status == "skipped"
        assert result.ok
        assert w.sim.stats.requests == requests
        assert verify_runs(engine) == []


@pytest.mark.parametrize("repair", [False, True])
def test_records_that_do_not_normalize_are_counted(
    engine: Engine, repair: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served record that does not normalize is counted as rejected; a repair keeps it
    in the rejects table, a plain verify writes nothing."""
    with world(engine, now=START) as w:
        synced(w)
        served = recent_answer(w)
        bad = {**next(iter(served.values())), "callid": "", "duration": "x"}
        real = w.client().fetch_recent

        def with_bad(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return [*real(*args, **kwargs), bad]

        monkeypatch.setattr(w.client(), "fetch_recent", with_bad)
        result = verify(w, repair=repair)
        assert result.status == "ok", result
        assert result.rejected == 1
        assert result.served == len(served) + 1
        with engine.connect() as conn:
            kept = conn.scalar(select(func.count()).select_from(rejects))
        assert kept == (1 if repair else 0)


def test_a_call_ended_before_the_24_hours_is_not_extra(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider may count its 24 hours on another time than detect_time: a long call
    detected 25 h ago and ended inside them is served, while a short call detected after it
    but ended before them is stored and not served. It is not extra (the first hour of the
    24 is not in scope); the same row an hour later would be."""
    with world(engine, now=START) as w:
        synced(w)
        now = w.clock()
        with engine.begin() as conn:
            model = conn.execute(select(cdrs).where(cdrs.c.account_id == w.account_id)).first()
            assert model is not None
            row = dict(model._mapping)

        def stored_at(callid: str, detected: datetime) -> dict[str, Any]:
            raw = {**row["raw"], "callid": callid}
            return {**row, "callid": callid, "raw": raw, "content_hash": content_hash(raw),
                    "detect_time": detected}  # fmt: skip

        long_call = stored_at("long-call", now - timedelta(hours=25))
        with engine.begin() as conn:
            conn.execute(
                insert(cdrs),
                [stored_at("short-call", now - timedelta(hours=24, minutes=-20)),
                 stored_at("inside", now - timedelta(hours=22))],
            )  # fmt: skip
        real = w.client().fetch_recent

        def with_long_call(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            served = long_call["raw"] | {
                "detect_time": f"{wall_clock(now - timedelta(hours=25), w.tz):%Y-%m-%d %H:%M:%S}",
            }
            return [*real(*args, **kwargs), served]

        monkeypatch.setattr(w.client(), "fetch_recent", with_long_call)
        found = verify(w)
        assert found.extra == ["inside"]
