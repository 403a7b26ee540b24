"""The kept BI data equals a full recomputation from `cdrs` after every committed page.

The oracle is the views' old SQL, which derived every figure from all of `cdrs` per query:
it is taken as frozen in revision 0002 and created here as temporary views (oracle_*, those
that read v_call_legs reading oracle_call_legs, the old classification of `cdrs`, never
the kept one), then compared row for row with the views that read the kept tables (and
v_call_legs itself with oracle_call_legs). The loads go through the real `load_page`
(both its COPY and its upsert path), in pages whose order puts agent legs before their
trunk legs, with CDRs updated later (talk time, end reason, a start moved to another hour
and day, a trunk leg that stops being one), on New York's fall-back day, with two writers
at once, in the provider's order cut through calls, and after a rebuild (after a change
of timezone, or of CDRs deleted by hand). The rollup tables are also checked row for row
against their recomputation, and call_legs' copy of the CDR columns against cdrs;
deleting an account deletes all it kept.
"""

from __future__ import annotations

import importlib.util
import random
import re
import threading
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, Engine, text

from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.engine import make_engine
from etl.db.load import load_page
from etl.db.migrate import downgrade, upgrade
from etl.db.rollup import RebuildProgress, rebuild
from etl.normalize import Cdr, normalize
from etl.simulator.data import CallGenerator
from tests.bi_oracle import assert_new_figures_equal
from tests.dbutil import ROOT, fresh_database, impose_rollup_way

NY = "America/New_York"
CR = "America/Costa_Rica"
FALL_BACK_HOUR = 1_730_613_600 // 3600  # 2024-11-03 06:00 UTC: 01:00-02:00 EST repeats in NY
COMPARED = {
    "v_call_legs": "account_id, callid",
    "v_daily_account": "account_id, day",
    "v_hourly_account": "account_id, hour_start",
    "v_daily_endpoint": "account_id, day, endpoint NULLS FIRST",
    "v_inbound_calls": "account_id, call_id",
}


@pytest.fixture(params=["cheaper way", "delta"])
def engine(engine: Engine, request: pytest.FixtureRequest) -> Engine:
    """The session engine, keeping the rollups by the cheaper way (sparse test data makes
    that mostly the recompute) or always by the calls' difference."""
    if request.param == "delta":
        impose_rollup_way(engine, "delta")
    return engine


def _frozen_0002() -> list[str]:
    path = ROOT / "migrations" / "versions" / "20261127_0002_bi_views.py"
    spec = importlib.util.spec_from_file_location("revision_0002", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.UPGRADE)


ORACLE_SQL = [  # v_call_legs first: the others read it, as oracle_call_legs (revision 0002's)
    re.sub(
        r"\bv_call_legs\b",
        "oracle_call_legs",
        statement.replace(f"CREATE VIEW {name} AS", f"CREATE TEMPORARY VIEW oracle_{name[2:]} AS"),
    )
    for name in COMPARED
    for statement in _frozen_0002()
    if statement.startswith(f"CREATE VIEW {name} AS")
]


def assert_kept_equals_recomputed(engine: Engine, service_level: int = 20) -> None:
    """Every compared view's columns of revision 0002 equal its old derive-everything SQL;
    the later columns and v_concurrency_minute equal tests/bi_oracle.py's recomputation;
    rows_stored = count(*)."""
    with engine.connect() as conn:
        for statement in ORACLE_SQL:
            conn.execute(text(statement))
        for name, order in COMPARED.items():
            oracle = conn.execute(text(f"SELECT * FROM oracle_{name[2:]} ORDER BY {order}"))
            columns = ", ".join(oracle.keys())
            kept = conn.execute(text(f"SELECT {columns} FROM {name} ORDER BY {order}")).all()
            assert kept == oracle.all(), name
        assert_new_figures_equal(conn, service_level)
        stored = conn.execute(
            text(
                "SELECT h.account_id, h.rows_stored, "
                "(SELECT count(*) FROM cdrs c WHERE c.account_id = h.account_id) "
                "FROM v_sync_health h ORDER BY 1"
            )
        ).all()
        assert [(a, n) for a, n, _ in stored] == [(a, n) for a, _, n in stored]
        kept_legs = conn.execute(text("SELECT count(*) FROM call_legs")).scalar()
        assert kept_legs == conn.execute(text("SELECT count(*) FROM cdrs")).scalar()
        copied = ", ".join(COPIED_COLUMNS)  # call_legs' copy of the CDR columns is exact
        assert (
            conn.execute(
                text(
                    "SELECT count(*) FROM call_legs k JOIN cdrs c USING (account_id, callid) "
                    f"WHERE (k.{copied.replace(', ', ', k.')}) IS DISTINCT FROM "
                    f"(c.{copied.replace(', ', ', c.')})"
                )
            ).scalar()
            == 0
        )
        conn.rollback()
        assert_rollup_tables_recomputed(conn)


ROLLUP_TABLES = ("rollup_5min", "rollup_endpoint_5min", "rollup_endpoint_hourly")
COPIED_COLUMNS = (
    "type", "original_callid", "end_reason", "duration", "ring_time", "connect_time",
    "disconnect_time", "dnis_user", "ani_user", "name_endpoint_dnis", "name_endpoint_ani",
)  # fmt: skip


def assert_rollup_tables_recomputed(conn: Connection) -> None:
    """The rollup tables hold, row for row, what cdr_rollup_buckets gives when it recomputes
    every bucket kept or holding a leg (and every kept hour) from call_legs: no bucket or
    hour left stale, no row left behind, including the 5-minute endpoint rows and the
    names' keys that no view shows. The figures themselves are checked independently of
    the load by the views' old SQL (assert_kept_equals_recomputed). Rolled back."""

    def rows() -> list[Sequence[Any]]:
        return [
            conn.execute(
                text(f"SELECT * FROM {t} ORDER BY {', '.join(map(str, range(1, 13)))}")
            ).all()
            for t in ROLLUP_TABLES
        ]

    kept = rows()
    conn.execute(
        text(
            "SELECT cdr_rollup_buckets(a.id, a.timezone, ARRAY("
            " SELECT bucket_start FROM call_legs WHERE account_id = a.id"
            " UNION SELECT bucket_start FROM rollup_5min WHERE account_id = a.id"
            " UNION SELECT bucket_start FROM rollup_endpoint_5min WHERE account_id = a.id"
            " UNION SELECT h + interval '5 minutes' * i FROM rollup_endpoint_hourly r,"
            "  LATERAL (SELECT r.hour_start AS h) x, generate_series(0, 11) i"
            " WHERE r.account_id = a.id)) FROM accounts a"
        )
    )
    for table, before, after in zip(ROLLUP_TABLES, kept, rows(), strict=True):
        assert before == after, table
    conn.rollback()


def records(username: str, zone: str, first_hour: int, hours: int) -> list[dict[str, Any]]:
    generator = CallGenerator(username, seed=5, timezone=zone, calls_per_hour=20)
    return [leg.record for h in range(hours) for leg in generator.hour(first_hour + h)]


def agents_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agent legs (an original_callid, no real ref_callid) before every other leg."""

    def is_agent(r: dict[str, Any]) -> bool:
        return str(r.get("ref_callid") or "0") == "0" and bool(r.get("original_callid"))

    return sorted(rows, key=lambda r: not is_agent(r))


def cdrs_of(rows: Sequence[dict[str, Any]], zone: str) -> list[Cdr]:
    out = [normalize(r, ZoneInfo(zone)) for r in rows]
    return [r for r in out if isinstance(r, Cdr)]


def load_pages(engine: Engine, account_id: int, rows: list[Cdr], size: int) -> None:
    for i in range(0, len(rows), size):
        with engine.begin() as conn:
            load_page(conn, account_id, rows[i : i + size])


def setup(engine: Engine) -> dict[str, int]:
    return upsert_accounts(
        engine,
        [
            AccountConfig(name="ny", username="7000001", timezone=NY),
            AccountConfig(name="cr", username="8569841", timezone=CR),
        ],
    )


def updated(rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Later versions of some CDRs: other talk time, end reason, start (hours later, or
    seconds: within its bucket), endpoint names, or trunk-ness."""
    out = []
    for r in rng.sample(rows, len(rows) // 5):
        r = dict(r)
        change = rng.randrange(6)
        if change == 4:  # a renamed endpoint: the latest name of its buckets and hours
            r["name_endpoint_dnis"] = f"renamed {rng.randrange(3)}"
            r["name_endpoint_ani"] = None if rng.random() < 0.5 else "renamed ani"
        elif change == 5 and r.get("detect_time"):  # seconds earlier or later
            start = datetime.fromisoformat(str(r["detect_time"]))
            moved = start + timedelta(seconds=rng.choice([-40, -7, 3, 25]))
            r["detect_time"] = moved.strftime("%Y-%m-%d %H:%M:%S")
        elif change == 0:
            r["duration"] = int(r.get("duration") or 0) + 37
        elif change == 1:
            r["end_reason"] = rng.choice(["OK", "NO_ANSWER", "SERVICE_UNAVAILABLE", "WEIRD"])
        elif change == 2 and r.get("detect_time"):
            r["detect_time"] = str(r["detect_time"]).replace(" 0", " 2", 1)  # hours later
        else:
            r["ref_callid"] = "0"
        out.append(r)
    return out


def test_pages_in_any_order_and_later_updates_keep_rollups_equal_to_recomputation(
    engine: Engine,
) -> None:
    """Agent legs before trunk legs (other pages), fall-back day in New York, CDRs updated
    later (figures, hour and day, role): after each phase the kept data is the recomputation."""
    ids = setup(engine)
    rng = random.Random(3)
    ny = agents_first(records("7000001", NY, FALL_BACK_HOUR - 4, 12))
    cr = records("8569841", CR, FALL_BACK_HOUR, 6)
    rng.shuffle(cr)
    load_pages(engine, ids["ny"], cdrs_of(ny, NY), 37)
    load_pages(engine, ids["cr"], cdrs_of(cr, CR), 50)
    assert_kept_equals_recomputed(engine)
    load_pages(engine, ids["ny"], cdrs_of(updated(ny, rng), NY), 23)  # the upsert path
    load_pages(engine, ids["cr"], cdrs_of(updated(cr, rng), CR), 1000)
    assert_kept_equals_recomputed(engine)


LORD_HOWE = "Australia/Lord_Howe"  # DST moves the clock by half an hour


def test_half_hour_dst_hours_count_each_bucket_once(engine: Engine) -> None:
    """On Lord Howe's fall-back night a local hour holds 30, 60 or 90 minutes of buckets
    and may start on a UTC half hour (01:30 local repeats at 15:00 UTC, reachable by a time
    that carries its offset): each 5-minute bucket counts in its own hour only, for the
    figures per day and endpoint and for the latest names."""
    (account,) = upsert_accounts(
        engine, [AccountConfig(name="lh", username="7000002", timezone=LORD_HOWE)]
    ).values()
    starts = [
        "2024-04-07 00:50:00",  # 13:50 UTC
        "2024-04-07 01:10:00",  # 14:10 UTC: the hour from 14:00 UTC (01:00 at +11:00)
        "2024-04-07 01:40:00",  # 14:40 UTC, the same hour
        "2024-04-06T15:10:00Z",  # 01:40 again (+10:30): the hour from 14:30 UTC
        "2024-04-07 02:20:00",  # 15:50 UTC: the hour from 15:30 UTC
    ]
    legs = [
        {"callid": f"lh{n}", "type": "outgoing", "ref_callid": "0", "ani_user": "300",
         "name_endpoint_ani": f"Name {n}", "dnis": "82103684", "detect_time": start,
         "disconnect_time": start, "duration": n, "end_reason": "OK"}
        for n, start in enumerate(starts)
    ]  # fmt: skip
    load_pages(engine, account, cdrs_of(legs, LORD_HOWE), 2)
    load_pages(engine, account, cdrs_of([{**legs[2], "duration": 9}], LORD_HOWE), 2)
    nameless = {**legs[3], "name_endpoint_ani": None}  # its hour's name is counted again
    load_pages(engine, account, cdrs_of([nameless], LORD_HOWE), 2)
    with engine.connect() as conn:
        assert_rollup_tables_recomputed(conn)
        hours = conn.execute(
            text(
                "SELECT to_char(hour_start AT TIME ZONE 'UTC', 'HH24:MI'), legs, endpoint_name, "
                "talk_seconds FROM rollup_endpoint_hourly ORDER BY hour_start"
            )
        ).all()
        daily = conn.execute(text("SELECT day, legs FROM v_daily_endpoint")).all()
    assert [tuple(h) for h in hours] == [
        ("13:00", 1, "Name 0", 0), ("14:00", 2, "Name 2", 1 + 9), ("14:30", 1, None, 3),
        ("15:30", 1, "Name 4", 4),
    ]  # fmt: skip
    assert [tuple(d) for d in daily] == [(date(2024, 4, 7), 5)]


def test_pages_in_the_providers_order_cut_through_calls(engine: Engine) -> None:
    """Pages in the provider's order (by start), cut through calls, in two passes that each
    bring every other leg (so a pass's calls land in buckets and hours that hold the other
    pass's, and many calls gain legs in another page), with endpoints without a number,
    names that change and starts that tie: the kept data is the recomputation after every
    few pages; then a pass of updated CDRs."""
    ids = setup(engine)
    generator = CallGenerator("7000001", seed=5, timezone=NY, calls_per_hour=120)
    raw = [leg.record for leg in generator.hour(FALL_BACK_HOUR + 10)]  # about 170 legs
    for i, r in enumerate(raw):  # endpoints without a number, names that change, ties
        if i % 4 == 0:
            r["dnis_user"] = r["ani_user"] = None
        if isinstance(r.get("detect_time"), str):
            r["detect_time"] = r["detect_time"][:-2] + "00"  # starts on the minute
        if i % 3 == 0:
            r["name_endpoint_dnis"] = f"{r.get('name_endpoint_dnis')} #{i}"
            r["name_endpoint_ani"] = f"{r.get('name_endpoint_ani')} #{i}"
    rows = sorted(cdrs_of(raw, NY), key=lambda r: (r.detect_time is None, r.detect_time, r[0]))
    size = 10
    for half in (rows[::2], rows[1::2]):
        for i in range(0, len(half), size * 3):
            load_pages(engine, ids["ny"], half[i : i + size * 3], size)
            assert_kept_equals_recomputed(engine)
    load_pages(engine, ids["ny"], cdrs_of(updated(raw, random.Random(7)), NY), size)
    assert_kept_equals_recomputed(engine)


def test_deleting_an_account_deletes_all_it_kept(engine: Engine) -> None:
    """Every table with an account_id loses the deleted account's rows and keeps the other's
    (call_legs and inbound_calls by a trigger on accounts, the others by their cascade)."""
    ids = setup(engine)
    load_pages(engine, ids["ny"], cdrs_of(records("7000001", NY, FALL_BACK_HOUR + 10, 3), NY), 50)
    load_pages(engine, ids["cr"], cdrs_of(records("8569841", CR, FALL_BACK_HOUR + 10, 3), CR), 50)
    with engine.begin() as conn:
        tables = (
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE column_name = "
                    "'account_id' AND table_schema = 'public' AND table_name NOT LIKE 'v\\_%'"
                )
            )
            .scalars()
            .all()
        )
        assert {"call_legs", "inbound_calls", "cdrs"} <= set(tables)

        def counts(account_id: int) -> dict[str, int]:
            return {
                t: conn.execute(
                    text(f"SELECT count(*) FROM {t} WHERE account_id = :a"), {"a": account_id}
                ).scalar_one()
                for t in tables
            }

        kept_cr = counts(ids["cr"])
        assert counts(ids["ny"])["call_legs"] > 0
        assert counts(ids["ny"])["inbound_calls"] > 0
        conn.execute(text("DELETE FROM accounts WHERE id = :a"), {"a": ids["ny"]})
        assert set(counts(ids["ny"]).values()) == {0}
        assert counts(ids["cr"]) == kept_cr


def test_two_writers_at_once_lose_nothing(engine: Engine) -> None:
    """A backfill and the daemon writing overlapping pages of one account side by side."""
    ids = setup(engine)
    rows = cdrs_of(records("7000001", NY, FALL_BACK_HOUR - 2, 8), NY)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        mine = list(rows)
        random.Random(seed).shuffle(mine)
        try:
            load_pages(engine, ids["ny"], mine, 40)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_kept_equals_recomputed(engine)


def _scramble(conn: Connection, account_id: int) -> None:
    for table in (
        "rollup_5min",
        "rollup_endpoint_5min",
        "rollup_endpoint_hourly",
        "call_legs",
        "concurrency_minute",
    ):
        conn.execute(
            text(f"DELETE FROM {table} WHERE account_id = :a AND random() < 0.5"),
            {"a": account_id},
        )
    conn.execute(
        text("UPDATE account_totals SET cdrs = 1 WHERE account_id = :a"), {"a": account_id}
    )


def test_rebuild_recomputes_after_a_timezone_change_and_resumes(engine: Engine) -> None:
    """rebuild() brings lost or stale kept data back to the recomputation, after a change of
    the account's clock to one of another sub-hour offset too; a rebuild that stopped
    part-way resumes from its stored day."""
    ids = setup(engine)
    load_pages(engine, ids["ny"], cdrs_of(records("7000001", NY, FALL_BACK_HOUR, 50), NY), 100)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE accounts SET timezone = :z WHERE id = :a"),
            {"z": "Asia/Kolkata", "a": ids["ny"]},  # hours now begin at :30 UTC
        )
        _scramble(conn, ids["ny"])

    def killed_after_the_first_day(progress: RebuildProgress) -> None:
        if progress.done == 1:
            raise KeyboardInterrupt  # as a SIGINT would, after the day's commit

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine, ids["ny"], "ny", killed_after_the_first_day)
    seen: list[int] = []
    rebuild(engine, ids["ny"], "ny", lambda p: seen.append(p.done))
    assert seen[0] == 1  # resumed after the first day
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rollup_rebuilds")).scalar() == 0
    assert_kept_equals_recomputed(engine)


def test_rebuild_forgets_the_kept_data_of_cdrs_deleted_by_hand(engine: Engine) -> None:
    """CDRs deleted from `cdrs` by hand (a trunk leg with agent legs, single legs): the
    load never sees them again, and a rebuild drops their kept legs and inbound calls and
    recomputes the buckets they counted in."""
    ids = setup(engine)
    load_pages(engine, ids["ny"], cdrs_of(records("7000001", NY, FALL_BACK_HOUR + 10, 4), NY), 40)
    with engine.begin() as conn:
        gone = conn.execute(
            text(
                "DELETE FROM cdrs WHERE account_id = :a AND (callid IN ("
                " SELECT call_id FROM inbound_calls WHERE account_id = :a AND legs > 1"
                " ORDER BY call_id LIMIT 2) OR callid IN (SELECT callid FROM call_legs"
                " WHERE account_id = :a AND role = 'single' ORDER BY callid LIMIT 5))"
            ),
            {"a": ids["ny"]},
        ).rowcount
    assert gone == 7
    rebuild(engine, ids["ny"], "ny")
    assert_kept_equals_recomputed(engine)


def test_rollup_rebuild_command(engine: Engine, db_url: str, clean_env: None) -> None:
    """`cdr-etl rollup --rebuild --account NAME` recomputes the kept data; exit 0."""
    from click.testing import CliRunner

    from etl.cli import cli

    ids = setup(engine)
    load_pages(engine, ids["cr"], cdrs_of(records("8569841", CR, FALL_BACK_HOUR, 30), CR), 200)
    with engine.begin() as conn:
        _scramble(conn, ids["cr"])
    toml = "".join(
        f'[[accounts]]\nname = "{n}"\nusername = "{u}"\ntimezone = "{z}"\npassword_env = "P"\n'
        for n, u, z in (("ny", "7000001", NY), ("cr", "8569841", CR))
    )
    with open("cdr-etl.toml", "w") as f:
        f.write(toml)
    env = {"CDR_ETL_DATABASE_URL": db_url, "P": "x"}
    result = CliRunner().invoke(cli, ["rollup", "--rebuild", "--account", "cr"], env=env)
    assert result.exit_code == 0, result.output
    assert "cr: kept data rebuilt" in result.output
    assert_kept_equals_recomputed(engine)


def test_the_migrations_fill_the_kept_data_of_existing_cdrs() -> None:
    """A database with CDRs from before the kept data (revision 0004) upgraded to head:
    revisions 0005 to 0008 fill every kept table and column from `cdrs`."""
    with fresh_database("cdr_etl_fill") as url:
        engine = make_engine(url, pool_size=2)
        try:
            upgrade(engine)
            ids = setup(engine)
            load_pages(
                engine, ids["ny"], cdrs_of(records("7000001", NY, FALL_BACK_HOUR, 8), NY), 90
            )
            load_pages(
                engine, ids["cr"], cdrs_of(records("8569841", CR, FALL_BACK_HOUR, 5), CR), 90
            )
            downgrade(engine, "0004")  # the kept data is gone, the CDRs stay
            upgrade(engine)
            assert_kept_equals_recomputed(engine)
        finally:
            engine.dispose()
