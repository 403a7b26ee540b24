"""The analysts' figures kept since revision 0006, on hand-made calls whose answers are known:
calls in progress per minute and their peak, NER, inbound service level and abandonment,
the service-level threshold as a setting applied by `cdr-etl rollup --rebuild`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from etl.cli import cli
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.load import database_errors, load_page
from etl.db.rollup import rebuild
from etl.errors import LoadError
from etl.normalize import Cdr, normalize
from tests.bi_oracle import assert_new_figures_equal
from tests.dbutil import impose_rollup_way

CR = "America/Costa_Rica"  # UTC-6, no DST


@pytest.fixture(params=["cheaper way", "delta"])
def engine(engine: Engine, request: pytest.FixtureRequest) -> Engine:
    """The session engine, keeping the rollups by the cheaper way (sparse test data makes
    that mostly the recompute) or always by the calls' difference."""
    if request.param == "delta":
        impose_rollup_way(engine, "delta")
    return engine


def leg(callid: str, start: str, **fields: Any) -> dict[str, Any]:
    """A CDR leg detected at `start` (Costa Rica clock); unanswered unless told otherwise."""
    record: dict[str, Any] = {
        "callid": callid,
        "original_callid": callid,
        "ref_callid": "0",
        "type": "outgoing",
        "ani": "40003005",
        "dnis": "82103684",
        "ani_user": "100",
        "dnis_user": "200",
        "name_endpoint_ani": None,
        "name_endpoint_dnis": None,
        "detect_time": start,
        "connect_time": "",
        "disconnect_time": start,
        "duration": 0,
        "ring_time": 0,
        "end_reason": "NO_ANSWER",
        "route_name": None,
    }
    record.update(fields)
    return record


def talked(start: str, connect: str, seconds: int) -> dict[str, Any]:
    """The fields of a leg connected at `connect` for `seconds`."""
    end = datetime.fromisoformat(connect) + timedelta(seconds=seconds)
    return {
        "detect_time": start,
        "connect_time": connect,
        "disconnect_time": end.strftime("%Y-%m-%d %H:%M:%S"),
        "duration": seconds,
        "end_reason": "OK",
    }


def store(engine: Engine, records: list[dict[str, Any]]) -> int:
    account = upsert_accounts(engine, [AccountConfig(name="cr", username="1", timezone=CR)])["cr"]
    rows = [normalize(r, ZoneInfo(CR)) for r in records]
    with engine.begin() as conn:
        load_page(conn, account, [r for r in rows if isinstance(r, Cdr)])
    return account


def day_row(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM v_daily_account")).mappings().one()


def test_a_sixty_minute_call_counts_in_each_of_its_sixty_minutes(engine: Engine) -> None:
    """Concurrency from connect times and durations: the peak is the minute two calls share;
    a later version of a CDR that shortens the call takes its old minutes out again."""
    start = "2024-10-03 10:00:00"
    long_call = leg("1", start, **talked(start, start, 3600))
    short_call = leg("2", "2024-10-03 10:29:50", **talked("2024-10-03 10:29:50",
                                                           "2024-10-03 10:30:10", 30))  # fmt: skip
    store(engine, [long_call, short_call])
    with engine.connect() as conn:
        minutes = conn.execute(
            text("SELECT local_minute, calls FROM v_concurrency_minute ORDER BY minute")
        ).all()
    assert len(minutes) == 60
    assert minutes[0].local_minute == datetime(2024, 10, 3, 10, 0)
    assert minutes[-1].local_minute == datetime(2024, 10, 3, 10, 59)
    assert [m.local_minute.minute for m in minutes if m.calls == 2] == [30]
    row = day_row(engine)
    assert row["peak_concurrent"] == 2
    assert row["peak_minute"] == datetime(2024, 10, 3, 16, 30, tzinfo=UTC)
    store(engine, [leg("1", start, **talked(start, start, 600))])  # the call was 10 minutes
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT count(*), max(calls) FROM v_concurrency_minute")
        ).one() == (
            11,
            1,
        )
        assert_new_figures_equal(conn)


def test_ner_counts_only_the_networks_failures(engine: Engine) -> None:
    """E.411: an unanswered call ended by the user's side (no answer, busy, declined,
    cancelled) is effective; SERVICE_UNAVAILABLE, NOT_FOUND, an empty reason are not."""
    reasons = ["NO_ANSWER", "BUSY", "DECLINE", "CANCELLED", "SERVICE_UNAVAILABLE", "NOT_FOUND", ""]
    answered = talked("2024-10-03 09:00:00", "2024-10-03 09:00:05", 9)
    unanswered = [leg(str(i), "2024-10-03 09:00:00", end_reason=r) for i, r in enumerate(reasons)]
    store(engine, [*unanswered, leg("9", "2024-10-03 09:00:00", **answered)])
    row = day_row(engine)
    assert (row["calls"], row["asr"], row["ner"]) == (8, Decimal("0.1250"), Decimal("0.6250"))


def inbound_call(
    n: int, start: str, agent: dict[str, Any] | None, **trunk: Any
) -> list[dict[str, Any]]:
    """A trunk leg answered by the IVR at `start` for 120 s, with one agent leg."""
    t = f"{n}0"
    legs = [leg(t, start, type="incoming", ref_callid=f"x{n}", **talked(start, start, 120))]
    legs[0].update(trunk)
    if agent is not None:
        legs.append(leg(f"{n}1", start, type="incoming", original_callid=f"x{n}", **agent))
    return legs


def test_service_level_and_abandonment(engine: Engine) -> None:
    """The IVR answering the trunk leg is not an answer by a person; the wait runs from the
    call's start to the agent's connect; abandoned calls wait until they end."""
    s = "2024-10-03 11:00:00"
    records = [
        *inbound_call(1, s, talked(s, "2024-10-03 11:00:15", 60)),  # 15 s: within 20 s
        *inbound_call(2, s, talked(s, "2024-10-03 11:00:45", 60)),  # 45 s: answered late
        *inbound_call(3, s, {"disconnect_time": "2024-10-03 11:00:40"}),  # left after 40 s
        *inbound_call(4, s, None, duration=0, connect_time="", end_reason="SERVICE_UNAVAILABLE"),
        *inbound_call(5, s, None, duration=0, connect_time="", end_reason="DECLINE"),
    ]
    store(engine, records)
    row = day_row(engine)
    columns = ("inbound_calls", "inbound_answered", "answered_within_sl", "service_level",
               "asa", "abandoned", "abandon_wait_avg")  # fmt: skip
    got = {k: row[k] for k in columns}
    assert got == {
        "inbound_calls": 5,
        "inbound_answered": 2,
        "answered_within_sl": 1,
        "service_level": Decimal("0.2000"),
        "asa": Decimal("30.00"),
        "abandoned": 1,  # call 3: the caller left; 4 failed by the network; 5 was refused
        "abandon_wait_avg": Decimal("120.00"),  # until its trunk leg ended (the IVR's 120 s)
    }
    assert row["ner"] == Decimal("0.8000")  # only call 4 counts against NER


@pytest.fixture
def cli_env(engine: Engine, db_url: str, clean_env: None) -> dict[str, str]:
    with open("cdr-etl.toml", "w") as f:
        f.write(
            '[[accounts]]\nname = "cr"\nusername = "1"\ntimezone = "America/Costa_Rica"\n'
            'password_env = "P"\n'
        )
    # `check` asks a closed loopback port once: its database findings are what is tested here
    return {
        "CDR_ETL_DATABASE_URL": db_url,
        "P": "not-a-real-password-4417",
        "CDR_ETL_API_URL": "http://127.0.0.1:9/getCdrs.php",
        "CDR_ETL_API_MAX_ATTEMPTS": "1",
    }


def test_the_threshold_is_a_setting_applied_by_a_rebuild(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    """[bi] service_level_seconds: `check` reports kept data computed with another value;
    a rebuild of one account alone refuses (exit 2); a rebuild of all applies it."""
    s = "2024-10-03 11:00:00"
    store(engine, inbound_call(1, s, talked(s, "2024-10-03 11:00:25", 60)))  # 25 s
    assert day_row(engine)["answered_within_sl"] == 0
    env = {**cli_env, "CDR_ETL_BI_SERVICE_LEVEL_SECONDS": "30"}
    runner = CliRunner()
    refused = subprocess.run(
        [sys.executable, "-m", "etl", "rollup", "--rebuild", "--account", "cr"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "cdr-etl: error: bi.service_level_seconds: 30 s, the kept data uses 20 s: rebuild "
        "every account (cdr-etl rollup --rebuild without --account)"
    ]
    result = runner.invoke(cli, ["check", "--account", "cr"], env=env)
    assert "FAIL  bi: bi.service_level_seconds is 30 but the kept data uses 20" in result.output
    assert "ok    bi:" in runner.invoke(cli, ["check", "--account", "cr"], env=cli_env).output
    result = runner.invoke(cli, ["rollup", "--rebuild", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    assert day_row(engine)["answered_within_sl"] == 1
    with engine.connect() as conn:
        assert_new_figures_equal(conn, service_level=30)


def test_concurrency_that_no_longer_matches_its_calls_fails_loudly(engine: Engine) -> None:
    """Kept counts tampered with (a minute lost): the next change of that call fails the page
    with a message naming the fix instead of storing a negative count; a rebuild repairs."""
    s = "2024-10-03 10:00:00"
    account = store(engine, [leg("1", s, **talked(s, s, 120))])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM concurrency_minute WHERE minute = '2024-10-03 16:01+00'"))
    negative = "would go negative: run cdr-etl rollup --rebuild"
    with pytest.raises(LoadError, match=negative), database_errors():
        store(engine, [leg("1", s, **talked(s, s, 60))])
    rebuild(engine, account, "cr")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM v_concurrency_minute")).scalar() == 2
        assert_new_figures_equal(conn)


@pytest.mark.parametrize("table", ["rollup_5min", "rollup_endpoint_5min", "rollup_endpoint_hourly"])
def test_rollups_that_no_longer_match_their_calls_are_recomputed(
    engine: Engine, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The load moves each rollup by the difference of a page's calls: with a row lost by
    hand (or kept under another timezone or threshold before a rebuild) the difference
    would go below zero, so it is undone and the page's buckets recomputed instead, with
    a warning that names the rebuild: never a negative figure, never a failed page."""
    impose_rollup_way(engine, "delta")
    s = "2024-10-03 10:00:00"
    store(engine, [leg("1", s, **talked(s, s, 120)), leg("2", s)])
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {table}"))
    with caplog.at_level(logging.WARNING, logger="etl.db.engine"):
        store(engine, [leg("1", s, **talked(s, s, 60))])
    warned = [r.getMessage() for r in caplog.records if "would go negative" in r.getMessage()]
    assert warned
    assert f"{table} of account" in warned[0]
    assert "run cdr-etl rollup --rebuild" in warned[0]
    assert day_row(engine)["calls"] == 2
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT sum(legs) FROM {table}")).scalar() == 2
        assert_new_figures_equal(conn)


def names(engine: Engine) -> list[tuple[str, str | None]]:
    """(bucket or hour, name) of endpoint 100 (the legs' caller): its 5-minute rows, then
    its hourly rows."""
    with engine.connect() as conn:
        return [
            (f"{when:%H:%M}", name)
            for table, key in (
                ("rollup_endpoint_5min", "bucket_start"),
                ("rollup_endpoint_hourly", "hour_start"),
            )  # fmt: skip
            for when, name in conn.execute(
                text(
                    f"SELECT {key} AT TIME ZONE 'America/Costa_Rica', endpoint_name FROM {table} "
                    f"WHERE endpoint = '100' ORDER BY 1"
                )
            )
        ]


def test_an_endpoints_latest_name_follows_the_leg_that_gave_it(engine: Engine) -> None:
    """A bucket's and an hour's endpoint name is the latest named leg's: when that leg loses
    its name, moves to another hour or is renamed, the name falls back to the latest of the
    others or follows it, as a recomputation would say."""
    a, b, c = (
        leg(str(n), f"2024-10-03 10:{minute}:00", name_endpoint_ani=name)
        for n, minute, name in ((1, "02", "Ana"), (2, "17", "Bea"), (3, "48", "Cam"))
    )
    store(engine, [a, b, c])
    hour = [("10:00", "Ana"), ("10:15", "Bea"), ("10:45", "Cam"), ("10:00", "Cam")]
    assert names(engine) == hour
    store(engine, [dict(c, name_endpoint_ani=None)])  # the hour's name goes back to Bea
    assert names(engine) == [*hour[:2], ("10:45", None), ("10:00", "Bea")]
    store(engine, [dict(b, detect_time="2024-10-03 11:17:00")])  # Bea leaves the hour
    assert names(engine) == [hour[0], ("10:45", None), ("11:15", "Bea"), ("10:00", "Ana"),
                             ("11:00", "Bea")]  # fmt: skip
    a["name_endpoint_ani"] = "Ana María"
    store(engine, [a])  # renamed in place
    assert names(engine)[0] == ("10:00", "Ana María")
    assert names(engine)[3] == ("10:00", "Ana María")
    store(engine, [dict(a, detect_time="2024-10-03 10:01:30")])  # seconds earlier, same bucket
    with engine.connect() as conn:
        assert_new_figures_equal(conn)
        at = conn.execute(
            text("SELECT name_at FROM rollup_endpoint_hourly WHERE endpoint = '100' ORDER BY 1")
        ).scalars()
        assert [f"{t.astimezone(ZoneInfo(CR)):%H:%M:%S}" for t in at] == ["10:01:30", "11:17:00"]
