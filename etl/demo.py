"""`cdr-etl demo`: the credential-free tour.

The embedded PostgreSQL (or the configured database), the bundled simulator on a free
loopback port with the manual's demo account, migrate, a backfill of the last 7 days, an
incremental sync, a live snapshot; then the figures of the week and how to query them.
Running it again is safe: it reads again and stores nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from etl.api.client import RetryPolicy
from etl.backfill import Progress, backfill_account
from etl.config import AccountConfig, Settings
from etl.db.accounts import upsert_accounts
from etl.db.migrate import upgrade
from etl.live import LiveResult, snapshot_live
from etl.run import AccountResult
from etl.simulator import SimAccount, Simulator, SimulatorServer
from etl.sync import sync_account
from etl.windows import wall_clock
from etl.wiring import api_client
from etl.wiring import source as wiring_source

DEMO = AccountConfig(name="demo", username="8569841", timezone="America/Costa_Rica")
DEMO_PASSWORD = "01234567891"  # the manual's example: the simulator's demo account
DAYS = 7

EXAMPLES = (
    (
        "Calls, ASR and ACD per day",
        "SELECT day, calls, answered, asr, acd, minutes FROM v_daily_account "
        "WHERE account_name = 'demo' ORDER BY day;",
    ),
    (
        "Busiest hours of the week",
        "SELECT local_hour, calls, answered FROM v_hourly_account "
        "WHERE account_name = 'demo' ORDER BY calls DESC LIMIT 5;",
    ),
    (
        "Agent league table",
        "SELECT endpoint_name, sum(answered) AS answered, sum(talk_seconds) / 60 AS talk_min "
        "FROM v_daily_endpoint WHERE account_name = 'demo' "
        "GROUP BY endpoint_name ORDER BY answered DESC;",
    ),
)


@dataclass
class DemoReport:
    backfill: AccountResult
    sync: AccountResult
    live: LiveResult
    rows: int
    calls: int
    answered: int

    @property
    def asr(self) -> float:
        return self.answered / self.calls if self.calls else 0.0


def run_demo(
    settings: Settings, engine: Engine, now: datetime | None = None,
    progress: Progress | None = None,
) -> DemoReport:  # fmt: skip
    now = now or datetime.now(UTC)
    upgrade(engine)
    account_id = upsert_accounts(engine, [*settings.accounts, DEMO])[DEMO.name]
    sim = Simulator(
        [SimAccount(username=DEMO.username, password=DEMO_PASSWORD, timezone=DEMO.timezone)],
        start=now - timedelta(days=DAYS + 2),
    )
    run_id = uuid.uuid4().hex[:12]
    with (
        SimulatorServer(sim) as server,
        api_client(
            settings.api.model_copy(update={"url": server.url}),
            retry=RetryPolicy(max_attempts=3),
        ) as client,
    ):
        source = wiring_source(client, DEMO, account_id, DEMO_PASSWORD, settings.api.page_size)
        local_now = wall_clock(now, DEMO.tz).replace(minute=0, second=0)
        backfilled = backfill_account(
            engine, source, DEMO.name, local_now - timedelta(days=DAYS), local_now,
            timedelta(hours=6), run_id, concurrency=3, progress=progress,
        )  # fmt: skip
        synced = sync_account(engine, source, DEMO, settings.sync, now, run_id)
        live = snapshot_live(engine, source, DEMO.name, now, run_id)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(*) FROM cdrs WHERE account_id = :id"), {"id": account_id}
        ).scalar_one()
        calls, answered = conn.execute(
            text(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(answered), 0) "
                "FROM v_daily_account WHERE account_id = :id AND day >= :since"
            ),
            {"id": account_id, "since": (local_now - timedelta(days=DAYS)).date()},
        ).one()
    return DemoReport(backfilled, synced, live, rows, int(calls), int(answered))


def psql_command(url: str) -> str:
    """A psql command line for the database at `url` (the embedded server's own psql
    when the machine has none)."""
    import shutil

    from sqlalchemy import make_url

    parsed = make_url(url)
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=True)
    binary = shutil.which("psql") or _bundled_psql() or "psql"
    return f'{binary} "{dsn}"'


def _bundled_psql() -> str | None:
    try:
        import pgserver
    except ImportError:
        return None
    candidate = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(candidate) if candidate.exists() else None


def summary_lines(report: DemoReport, url: str) -> list[Any]:
    lines: list[Any] = [
        "",
        f"Stored {report.rows:,} CDR legs of the demo account: {report.calls:,} calls in the "
        f"last {DAYS} days, {report.answered:,} answered, ASR {report.asr:.1%}.",
        f"Live now: {report.live.active} calls ({report.live.ringing} ringing, "
        f"{report.live.talking} talking).",
        "",
        "Open the database:",
        f"  {psql_command(url)}",
        "",
        "Try:",
    ]
    for title, sql in EXAMPLES:
        lines += [f"  -- {title}", f"  {sql}"]
    lines += [
        "",
        "Where to look next:",
        "  cdr-etl status     each pass's watermark and lag, the last run, rows, rejects",
        "  cdr-etl check      is a set-up sound: database, API, credentials, clock",
        "  cdr-etl --help     every command; README.md for configuration and deployment",
        "  dashboards         docker compose --profile sim --profile grafana up -d "
        "sim daemon-sim grafana",
        "                     then http://127.0.0.1:3000 (deploy/grafana: sync health, calls;",
        "                     the simulated daemon's account is `sim`)",
    ]
    return lines
