"""Benchmark: `load_page`'s cost per leg with the kept BI data and without, on the same pages.

    .venv/bin/python bench/refresh.py [--hours 12] [--page-size 1000] [--runs 7]
                                      [--calls-per-hour 3500]

1. creates a fresh database on TEST_DATABASE_URL's server (else the local one), migrates it
   and loads the `--hours` hours before a busy hour of one simulated call centre through
   `load_page`, pages in the provider's order (by start); the busy hour is 10:00 on a
   weekday in Costa Rica, about 19,600 legs;
2. takes the busy hour's first 40 pages (of `--page-size` legs) and loads them through
   `load_page`, all in one transaction that is rolled back, once per variant and run (the
   variants' order turns with each run, so none always meets the dead index entries of
   the ones before it):
   - `kept data (now: the cheaper way)`: the load as it is;
   - `with the foreign keys of revision 0007`: `call_legs` and `inbound_calls` keyed to
     `accounts` again, as before revision 0008;
   - `always by the calls' difference` and `always buckets recomputed (0008's way)`: the
     two ways of keeping the rollups that `kept data (now: ...)` chooses between per page (the
     setting `cdr_etl.rollup_way`): moved by the difference of the page's calls' figures,
     or every 5-minute bucket those calls count in recomputed from all its legs;
   - `kept data off`: `cdr_rollup_refresh` replaced by a no-op, the COPY path alone;
3. prints the median microseconds per leg of each variant (wall time of `load_page`: the
   client, the server and the round trips; the server is local), and drops the database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etl.config import AccountConfig  # noqa: E402
from etl.db.accounts import upsert_accounts  # noqa: E402
from etl.db.engine import make_engine  # noqa: E402
from etl.db.load import load_page  # noqa: E402
from etl.db.migrate import upgrade  # noqa: E402
from etl.normalize import Cdr, normalize  # noqa: E402
from etl.simulator.data import CallGenerator  # noqa: E402

TIMED_HOUR = 1_704_153_600 // 3600 + 16  # 2024-01-02 16:00 UTC, 10:00 in Costa Rica: busy
ZONE = "America/Costa_Rica"
VARIANTS: dict[str, list[str]] = {
    "kept data (now: the cheaper way)": [],
    "with the foreign keys of revision 0007": [
        "ALTER TABLE call_legs ADD FOREIGN KEY (account_id) REFERENCES accounts (id) "
        "ON DELETE CASCADE",
        "ALTER TABLE inbound_calls ADD FOREIGN KEY (account_id) REFERENCES accounts (id) "
        "ON DELETE CASCADE",
    ],
    "always by the calls' difference": ["SET cdr_etl.rollup_way = 'delta'"],
    "always buckets recomputed (0008's way)": ["SET cdr_etl.rollup_way = 'recompute'"],
    "kept data off": [
        "CREATE OR REPLACE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[], "
        "p_recompute boolean DEFAULT false) "
        "RETURNS void LANGUAGE sql AS 'SELECT'"
    ],
}


def admin(server: str, sql: str) -> None:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Server cost of the kept BI data per leg.")
    parser.add_argument("--hours", type=int, default=12, help="hours loaded first")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--calls-per-hour", type=int, default=3500, help="the call centre's size (busy hour)"
    )
    args = parser.parse_args(argv)

    server = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"cdr_etl_refresh_{uuid.uuid4().hex[:8]}"
    admin(server, f'CREATE DATABASE "{name}"')
    engine = make_engine(
        make_url(server).set(database=name).render_as_string(hide_password=False), pool_size=1
    )
    generator = CallGenerator("8569841", seed=7, timezone=ZONE, calls_per_hour=args.calls_per_hour)
    zone = ZoneInfo(ZONE)

    def pages(hour: int) -> list[list[Cdr]]:
        rows = [normalize(leg.record, zone) for leg in generator.hour(hour)]
        good = sorted(
            (r for r in rows if isinstance(r, Cdr)),
            key=lambda r: (r.detect_time is None, r.detect_time, r.callid),
        )
        return [good[i : i + args.page_size] for i in range(0, len(good), args.page_size)]

    try:
        upgrade(engine)
        account = upsert_accounts(
            engine, [AccountConfig(name="cr", username="8569841", timezone=ZONE)]
        )["cr"]
        for hour in range(TIMED_HOUR - args.hours, TIMED_HOUR):
            for page in pages(hour):
                with engine.begin() as conn:
                    load_page(conn, account, page)
        timed = pages(TIMED_HOUR)[:40]
        legs = sum(len(p) for p in timed)
        print(
            f"loaded {args.hours} h before; timing {len(timed)} pages ({legs} legs) x {args.runs}"
        )
        per_leg: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for run in range(args.runs):
            order = list(VARIANTS)[run % len(VARIANTS) :] + list(VARIANTS)[: run % len(VARIANTS)]
            for variant in order:
                with engine.connect() as conn:
                    for statement in VARIANTS[variant]:
                        conn.execute(text(statement))
                    began = time.perf_counter()
                    for page in timed:
                        load_page(conn, account, page)
                    per_leg[variant].append((time.perf_counter() - began) / legs * 1e6)
                    conn.rollback()
        for variant, times in per_leg.items():
            print(f"  {variant:40s} {statistics.median(times):7.1f} us per leg")
    finally:
        engine.dispose()
        admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
