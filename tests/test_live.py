"""Live snapshots against the simulator on loopback and a real PostgreSQL: the snapshot
holds exactly the legs in progress, replaced whole each time, with one sample per run."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Engine, func, select

from etl.db.models import live_calls, live_samples, runs
from etl.db.state import account_lock
from etl.live import LiveResult, classify, snapshot_live
from etl.logs import ContextFilter
from tests.simworld import PASSWORD, USERNAME, World, utc, world

START = utc(2024, 6, 3, 15, 0, 0)
NO_VALUE = {"", "null", "none", "0000-00-00 00:00:00"}


def live_answer(w: World) -> list[dict[str, Any]]:
    """The simulator's live answer (whole account) at its clock, asked directly."""
    params = {
        "username": USERNAME,
        "password": PASSWORD,
        "live": "1",
        "fullAccount": "1",
        "format": "json",
    }
    records: list[dict[str, Any]] = orjson.loads(w.sim.handle(params).body)
    return records


def _blank(value: Any) -> bool:
    return value is None or str(value).strip().lower() in NO_VALUE


def states(records: list[dict[str, Any]]) -> dict[str, str]:
    """callid -> ringing | talking | ended, classified here from the raw times alone."""
    found: dict[str, str] = {}
    for record in records:
        if not _blank(record.get("disconnect_time")):
            state = "ended"
        elif not _blank(record.get("connect_time")):
            state = "talking"
        else:
            state = "ringing"
        found[str(record["callid"])] = state
    return found


def busy_moment(w: World, tries: int = 400) -> dict[str, str]:
    """Move the clock until the live answer holds ringing, talking and just-ended legs."""
    for _ in range(tries):
        found = states(live_answer(w))
        if {"ringing", "talking", "ended"} <= set(found.values()):
            return found
        w.clock.advance(seconds=3)
    raise AssertionError("no moment with ringing, talking and just-ended legs")


def take(w: World, password: str = PASSWORD, run_id: str = "live-test") -> LiveResult:
    return snapshot_live(w.engine, w.source(password), "main", w.clock(), run_id)


def stored_states(engine: Engine, account_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(live_calls.c.callid, live_calls.c.state).where(
                live_calls.c.account_id == account_id
            )
        ).all()
    return {callid: state for callid, state in rows}


def samples(engine: Engine) -> list[tuple[datetime, int, int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                live_samples.c.sampled_at,
                live_samples.c.active,
                live_samples.c.ringing,
                live_samples.c.talking,
            ).order_by(live_samples.c.id)
        ).all()
    return [(r.sampled_at, r.active, r.ringing, r.talking) for r in rows]


def count(engine: Engine, what: str) -> int:
    table = {"runs": runs, "live_calls": live_calls, "live_samples": live_samples}[what]
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_snapshot_matches_the_live_answer(engine: Engine) -> None:
    """Counts and stored legs equal the simulator's live answer classified independently."""
    with world(engine, now=START, calls_per_hour=600, days=1) as w:
        truth = busy_moment(w)
        result = take(w)
        assert result.status == "ok", result.error
        expected = {k: v for k, v in truth.items() if v != "ended"}
        ringing = sum(v == "ringing" for v in truth.values())
        talking = sum(v == "talking" for v in truth.values())
        assert (result.ringing, result.talking) == (ringing, talking)
        assert result.active == ringing + talking == len(expected)
        assert result.ended == len(truth) - len(expected)
        assert result.rejected == 0
        assert (result.requests, result.retries) == (1, 0)
        assert stored_states(engine, w.account_id) == expected
        assert samples(engine) == [(w.clock.now, len(expected), ringing, talking)]
        assert count(engine, "runs") == 0  # live writes no run history


def test_just_ended_legs_are_left_out(engine: Engine) -> None:
    """Legs the answer shows with a disconnect time are counted as ended, never stored."""
    with world(engine, now=START, calls_per_hour=600, days=1) as w:
        truth = busy_moment(w)
        ended = {k for k, v in truth.items() if v == "ended"}
        result = take(w)
        assert result.ended == len(ended) > 0
        assert result.active == len(truth) - len(ended)
        assert not ended & set(stored_states(engine, w.account_id))


def test_second_snapshot_replaces_the_first(engine: Engine) -> None:
    """After the clock moves, calls that ended are gone, new ones are in, and a second
    sample is appended."""
    with world(engine, now=START, calls_per_hour=600, days=1) as w:
        busy_moment(w)
        first_at = w.clock.now
        assert take(w).status == "ok"
        before = stored_states(engine, w.account_id)
        assert before
        w.clock.advance(minutes=15)
        truth = states(live_answer(w))
        second = take(w, run_id="live-test-2")
        assert second.status == "ok", second.error
        after = stored_states(engine, w.account_id)
        assert after == {k: v for k, v in truth.items() if v != "ended"}
        assert set(before) - set(after), "no call ended in 15 minutes: the test proves nothing"
        assert [s[0] for s in samples(engine)] == [first_at, w.clock.now]
        assert samples(engine)[1][1:] == (second.active, second.ringing, second.talking)
        with engine.connect() as conn:
            stamps = set(conn.execute(select(live_calls.c.snapshot_at)).scalars())
        assert stamps <= {w.clock.now}


def test_wrong_password_fails_and_changes_nothing(engine: Engine) -> None:
    """A refused password: status failed naming authentication, no secret in the result,
    the previous snapshot and samples untouched."""
    with world(engine, now=START, calls_per_hour=600, days=1) as w:
        busy_moment(w)
        assert take(w).status == "ok"
        before = stored_states(engine, w.account_id)
        before_samples = samples(engine)
        w.clock.advance(minutes=15)
        result = take(w, password="00000000000")
        assert result.status == "failed"
        assert result.error is not None
        assert "authentication" in result.error.lower()
        assert "00000000000" not in repr(result)
        assert result.retries == 0
        assert (result.active, result.ringing, result.talking) == (0, 0, 0)
        assert stored_states(engine, w.account_id) == before
        assert samples(engine) == before_samples


def test_held_lock_skips_without_asking_the_api(engine: Engine) -> None:
    """Another process taking a snapshot of the account: skipped, no request, no write."""
    with world(engine, now=START, calls_per_hour=600, days=1) as w:
        requests = w.sim.stats.requests
        with account_lock(engine, w.account_id, "live") as got:
            assert got is not None
            result = take(w)
        assert result.status == "skipped"
        assert result.ok
        assert w.sim.stats.requests == requests
        assert count(engine, "live_samples") == 0


def test_classify_dedups_and_counts_rejects() -> None:
    """Pure classification: a callid served twice counts once (in its later state), a record
    without callid is a reject, no-value times mean unset."""
    tz = ZoneInfo("America/Costa_Rica")
    base: dict[str, Any] = {"detect_time": "2024-06-03 09:00:00", "duration": "0", "ring_time": "0"}
    records: list[dict[str, Any]] = [
        {**base, "callid": "1", "connect_time": "", "disconnect_time": ""},
        {**base, "callid": "1", "connect_time": "2024-06-03 09:00:05", "disconnect_time": None},
        {**base, "callid": "2", "connect_time": "null", "disconnect_time": "0000-00-00 00:00:00"},
        {**base, "callid": "3", "connect_time": "", "disconnect_time": "2024-06-03 09:01:00"},
        {**base, "connect_time": "", "disconnect_time": ""},
    ]
    snap = classify(records, tz)
    assert [(state, leg.callid) for state, leg in snap.calls] == [
        ("talking", "1"),
        ("ringing", "2"),
    ]
    assert (snap.ringing, snap.talking, snap.ended, snap.rejected) == (1, 1, 1, 1)
    assert snap.active == 2


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_one_summary_line_with_context(engine: Engine) -> None:
    """A snapshot logs one INFO summary line carrying the account and the run id."""
    handler = _Collect()
    logger = logging.getLogger("etl.run")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with world(engine, now=START, calls_per_hour=600, days=1) as w:
            result = take(w, run_id="run-42")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (line,) = [r for r in handler.records if getattr(r, "event_kind", None) == "run_summary"]
    assert getattr(line, "job", None) == "live"
    assert line.levelno == logging.INFO
    assert (getattr(line, "account", None), getattr(line, "run_id", None)) == ("main", "run-42")
    assert f"{result.active} active" in line.getMessage()
