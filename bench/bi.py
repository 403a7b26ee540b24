"""Benchmark: dashboard queries on N legs, read from the kept BI data.

    .venv/bin/python bench/bi.py --legs 1000000 [--scale 3] [--runs 9]

1. creates a fresh database on TEST_DATABASE_URL's server (else the local one at
   postgresql+psycopg://postgres@127.0.0.1:5432) and migrates it;
2. loads about N legs of two simulated accounts (etl.simulator's generator, one UTC hour
   at a time, a busy call centre each, America/Costa_Rica and America/New_York) through the
   real loader: normalize, then `load_page` in pages of 1000, one transaction per page,
   keeping the rollups as the backfill does; prints the load rate;
3. with `--scale K` (K > 1), the faster documented path to K x N legs: the server copies the
   loaded legs K - 1 times, each copy shifted by the loaded span in time and with its
   callids (and the original/ref callids that link legs into calls) suffixed, so the copies
   have the same shape; then `etl.db.rollup.rebuild` recomputes the kept data of every
   account from `cdrs` (the same function the load calls), and the script checks that
   v_daily_account equals the old derive-everything SQL on the last 30 days;
4. times each dashboard query (one account, warm: one run to warm, then the median of
   `--runs`): 30 days of v_daily_account, a day of v_hourly_account, 30 days of
   v_daily_endpoint, the unanswered calls of a day in v_inbound_calls, a day of v_call_legs,
   v_sync_health;
5. drops the database (unless --keep).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.config import AccountConfig  # noqa: E402
from etl.db.accounts import upsert_accounts  # noqa: E402
from etl.db.engine import make_engine  # noqa: E402
from etl.db.load import load_page  # noqa: E402
from etl.db.migrate import upgrade  # noqa: E402
from etl.db.rollup import rebuild  # noqa: E402
from etl.normalize import Cdr, normalize  # noqa: E402
from etl.simulator.data import CallGenerator  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ACCOUNTS = (("cr", "8569841", "America/Costa_Rica"), ("ny", "7000001", "America/New_York"))
FIRST_HOUR = 1_704_067_200 // 3600  # 2024-01-01 00:00 UTC
COPY_COLUMNS = (
    "account_id, callid, original_callid, ref_callid, type, ani, dnis, ani_user, dnis_user, "
    "name_endpoint_ani, name_endpoint_dnis, route_name, end_reason, duration, ring_time, "
    "detect_time, connect_time, disconnect_time, raw, content_hash, fetched_at"
)
QUERIES = {
    "v_daily_account, 30 days": (
        "SELECT * FROM v_daily_account WHERE account_id = :a AND day > :d - 30 AND day <= :d"
    ),
    "v_hourly_account, 1 day": "SELECT * FROM v_hourly_account WHERE account_id = :a AND day = :d",
    "v_daily_endpoint, 30 days": (
        "SELECT * FROM v_daily_endpoint WHERE account_id = :a AND day > :d - 30 AND day <= :d"
    ),
    "v_inbound_calls, unanswered of 1 day": (
        "SELECT * FROM v_inbound_calls WHERE account_id = :a AND day = :d AND NOT answered"
    ),
    "v_call_legs, 1 day": "SELECT * FROM v_call_legs WHERE account_id = :a AND day = :d",
    "v_sync_health": "SELECT * FROM v_sync_health",
    "v_concurrency_minute, 1 day": (
        "SELECT * FROM v_concurrency_minute WHERE account_id = :a "
        "AND minute >= CAST(:d AS timestamptz) - interval '1 day' "
        "AND minute < CAST(:d AS timestamptz)"
    ),
}


def server_url() -> str:
    import os

    return os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER)


def database_url(name: str) -> str:
    return make_url(server_url()).set(database=name).render_as_string(hide_password=False)


def admin(sql: str) -> None:
    engine = create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def load(engine: Engine, ids: dict[str, int], legs: int, calls_per_hour: float) -> int:
    """About `legs` legs through normalize + load_page; returns the hours loaded."""
    generators = {
        name: (CallGenerator(user, seed=7, timezone=zone, calls_per_hour=calls_per_hour), zone)
        for name, user, zone in ACCOUNTS
    }
    stored = hour = 0
    began = time.perf_counter()
    while stored < legs:
        for name, (generator, zone) in generators.items():
            tz = ZoneInfo(zone)
            rows = [normalize(leg.record, tz) for leg in generator.hour(FIRST_HOUR + hour)]
            good = [r for r in rows if isinstance(r, Cdr)]
            for i in range(0, len(good), 1000):
                with engine.begin() as conn:
                    load_page(conn, ids[name], good[i : i + 1000])
            stored += len(good)
        hour += 1
        if hour % 240 == 0:
            rate = stored / (time.perf_counter() - began)
            print(f"  loaded {stored:,} legs ({hour // 24} days), {rate:,.0f} legs/s", flush=True)
    seconds = time.perf_counter() - began
    print(f"loaded {stored:,} legs through load_page in {seconds:.0f}s: {stored / seconds:,.0f}/s")
    return hour


def scale(engine: Engine, ids: dict[str, int], hours: int, k: int) -> None:
    """K - 1 shifted copies of the loaded legs, server-side, then a rebuild of the kept data."""
    began = time.perf_counter()
    suffix = "'~' || s.k"
    with engine.begin() as conn:
        conn.execute(
            text(
                f"""
INSERT INTO cdrs ({COPY_COLUMNS})
SELECT account_id, callid || {suffix},
    original_callid || {suffix},
    CASE WHEN coalesce(ref_callid, '0') <> '0' THEN ref_callid || {suffix} ELSE ref_callid END,
    type, ani, dnis, ani_user, dnis_user, name_endpoint_ani, name_endpoint_dnis, route_name,
    end_reason, duration, ring_time,
    detect_time + s.shift, connect_time + s.shift, disconnect_time + s.shift,
    raw, content_hash, fetched_at
FROM cdrs, LATERAL (
    SELECT g AS k, make_interval(hours => :hours * g) AS shift FROM generate_series(1, :n) g
) s
"""
            ),
            {"hours": hours, "n": k - 1},
        )
    print(f"copied to {k}x server-side in {time.perf_counter() - began:.0f}s", flush=True)
    began = time.perf_counter()
    for name, account_id in ids.items():
        rebuild(engine, account_id, name)
    print(f"rebuilt the kept data from cdrs in {time.perf_counter() - began:.0f}s", flush=True)


def check_against_recomputation(engine: Engine, account_id: int, day: object) -> None:
    """The last 30 days of v_daily_account equal the old SQL over all of cdrs."""
    old = (ROOT / "tests" / "test_rollup.py").exists()
    if not old:  # pragma: no cover
        return
    from tests.test_rollup import ORACLE_SQL

    with engine.connect() as conn:
        for statement in ORACLE_SQL:
            conn.execute(text(statement))
        where = "WHERE account_id = :a AND day > :d - 30 AND day <= :d ORDER BY day"
        params = {"a": account_id, "d": day}
        result = conn.execute(text(f"SELECT * FROM oracle_daily_account {where}"), params)
        columns = ", ".join(result.keys())  # the columns of revision 0002
        oracle = result.all()
        kept = conn.execute(text(f"SELECT {columns} FROM v_daily_account {where}"), params).all()
        conn.rollback()
    assert kept == oracle, "kept data differs from the recomputation"
    print("v_daily_account (30 days) equals the recomputation from cdrs")


def time_queries(engine: Engine, account_id: int, runs: int) -> dict[str, float]:
    with engine.connect() as conn:
        day = conn.execute(
            text("SELECT max(day) - 1 FROM rollup_5min WHERE account_id = :a"), {"a": account_id}
        ).scalar()
        conn.execute(text("ANALYZE"))
        conn.commit()
        medians = {}
        for label, sql in QUERIES.items():
            params = {"a": account_id, "d": day}
            times = []
            for i in range(runs + 1):
                began = time.perf_counter()
                conn.execute(text(sql), params).all()
                if i:  # the first run warms the cache
                    times.append((time.perf_counter() - began) * 1000)
            medians[label] = statistics.median(times)
    return medians


def report(engine: Engine, ids: dict[str, int], runs: int) -> None:
    """Check against the recomputation, then time each dashboard query."""
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM cdrs")).scalar()
        day = conn.execute(
            text("SELECT max(day) - 1 FROM rollup_5min WHERE account_id = :a"),
            {"a": ids["cr"]},
        ).scalar()
    check_against_recomputation(engine, ids["cr"], day)
    print(f"\n{total:,} legs; median of {runs} warm runs, one account:")
    for label, ms in time_queries(engine, ids["cr"], runs).items():
        print(f"  {label:40s} {ms:8.1f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dashboard query times on N legs.")
    parser.add_argument("--legs", type=int, required=True, help="legs loaded through the loader")
    parser.add_argument("--scale", type=int, default=1, help="server-side copies: K x legs")
    parser.add_argument("--runs", type=int, default=9, help="timed warm runs per query")
    parser.add_argument("--calls-per-hour", type=float, default=160.0, help="per account")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)

    name = f"cdr_etl_bi_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    url = database_url(name)
    engine = make_engine(url, pool_size=2)
    try:
        upgrade(engine)
        ids = upsert_accounts(
            engine, [AccountConfig(name=n, username=u, timezone=z) for n, u, z in ACCOUNTS]
        )
        hours = load(engine, ids, args.legs, args.calls_per_hour)
        if args.scale > 1:  # the loaded size first, then K times it
            report(engine, ids, args.runs)
            scale(engine, ids, hours, args.scale)
        report(engine, ids, args.runs)
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept database: {url}")
        else:
            admin(f'DROP DATABASE "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
