"""`cdr-etl status`: what the database says about each account."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select

from etl.config import Settings, format_duration
from etl.db.models import accounts, cdrs, rejects, runs
from etl.db.state import read_watermarks


@dataclass
class PassState:
    name: str
    position: datetime | None  # provider wall clock
    lag: timedelta | None


@dataclass
class AccountStatus:
    name: str
    username: str
    timezone: str
    passes: list[PassState] = field(default_factory=list)
    rows: int = 0
    rejects: int = 0
    last_run: dict[str, object] | None = None
    last_success: datetime | None = None
    failed_runs_24h: int = 0


def account_status(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> list[AccountStatus]:
    now = now or datetime.now(UTC)
    configured = {f"{format_duration(d)}" for d in settings.sync.passes}
    result: list[AccountStatus] = []
    with engine.connect() as conn:
        for account in conn.execute(select(accounts).order_by(accounts.c.name)).mappings():
            status = AccountStatus(account["name"], account["username"], account["timezone"])
            local_now = now.astimezone(ZoneInfo(account["timezone"])).replace(tzinfo=None)
            marks = read_watermarks(conn, account["id"])
            for name in sorted(configured | set(marks), key=_delay_order):
                position = marks.get(name)
                lag = local_now - position if position else None
                status.passes.append(PassState(name, position, lag))
            status.rows = (
                conn.scalar(
                    select(func.count()).select_from(cdrs).where(cdrs.c.account_id == account["id"])
                )
                or 0
            )
            status.rejects = (
                conn.scalar(
                    select(func.count())
                    .select_from(rejects)
                    .where(rejects.c.account_id == account["id"])
                )
                or 0
            )
            last = (
                conn.execute(
                    select(runs)
                    .where(runs.c.account_id == account["id"])
                    .order_by(runs.c.started_at.desc(), runs.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            status.last_run = dict(last) if last else None
            status.last_success = conn.scalar(
                select(func.max(runs.c.finished_at)).where(
                    runs.c.account_id == account["id"], runs.c.status == "ok"
                )
            )
            status.failed_runs_24h = (
                conn.scalar(
                    select(func.count())
                    .select_from(runs)
                    .where(
                        runs.c.account_id == account["id"],
                        runs.c.status == "failed",
                        runs.c.started_at > now - timedelta(hours=24),
                    )
                )
                or 0
            )
            result.append(status)
    return result


def _delay_order(name: str) -> float:
    from etl.config import parse_duration

    try:
        return parse_duration(name).total_seconds()
    except ValueError:
        return float("inf")


def render_status(console: Console, statuses: list[AccountStatus]) -> None:
    if not statuses:
        console.print("no accounts: configure one (see `cdr-etl --help`) and run a command")
        return
    for status in statuses:
        console.print(
            f"[bold]{status.name}[/bold]  endpoint {status.username}, clock {status.timezone}"
        )
        table = Table()
        table.add_column("pass")
        table.add_column("watermark (provider clock)")
        table.add_column("lag", justify="right")
        for state in status.passes:
            table.add_row(
                state.name,
                state.position.isoformat(sep=" ") if state.position else "not started",
                _ago(state.lag) if state.lag is not None else "-",
            )
        console.print(table)
        run = status.last_run
        if run:
            finished = run["finished_at"] or run["started_at"]
            line = (
                f"last run: {run['kind']} {run['status']} at {finished:%Y-%m-%d %H:%M:%S %Z}, "
                f"fetched {run['fetched']}, inserted {run['inserted']}, updated "
                f"{run['updated']}, unchanged {run['unchanged']}, rejected {run['rejected']}"
            )
            if run["error"]:
                line += f"\n  error: {run['error']}"
        else:
            line = "last run: never"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
        success = f"{status.last_success:%Y-%m-%d %H:%M:%S %Z}" if status.last_success else "never"
        console.print(
            f"rows stored: {status.rows}   rejects: {status.rejects}   "
            f"failed runs (24 h): {status.failed_runs_24h}   last success: {success}\n",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{sign}{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{sign}{seconds // 60}m {seconds % 60}s"
