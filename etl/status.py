"""`cdr-etl status`: what the database says about each account.

It reads through a bare psycopg connection (etl/db/url.py), not SQLAlchemy: an operator's
`status` pays for no import it does not need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from etl.config import Settings, format_duration

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow


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


_HEALTH = """
    SELECT h.account_id, h.account_name, a.username, h.timezone, h.watermarks,
           h.last_success_at, h.rows_stored, h.rejects, h.failed_runs_24h
    FROM v_sync_health h JOIN accounts a ON a.id = h.account_id
    ORDER BY h.account_name
    """
_LAST_RUNS = """
    SELECT last.*
    FROM accounts a
    CROSS JOIN LATERAL (
        SELECT * FROM runs WHERE runs.account_id = a.id
        ORDER BY started_at DESC, id DESC LIMIT 1
    ) last
    """


def account_status(conn: psycopg.Connection[DictRow], settings: Settings) -> list[AccountStatus]:
    """Each account as `v_sync_health` tells it (the view BI reads too), with the figures
    of its last run; passes configured but not started yet are shown as such."""
    configured = {format_duration(d) for d in settings.sync.passes}
    health = conn.execute(_HEALTH).fetchall()
    last_runs = {row["account_id"]: row for row in conn.execute(_LAST_RUNS)}
    result: list[AccountStatus] = []
    for row in health:
        marks = row["watermarks"] or {}
        status = AccountStatus(
            row["account_name"], row["username"], row["timezone"],
            rows=row["rows_stored"] or 0, rejects=row["rejects"],
            last_run=last_runs.get(row["account_id"]), last_success=row["last_success_at"],
            failed_runs_24h=row["failed_runs_24h"],
        )  # fmt: skip
        for name in sorted(configured | set(marks), key=_delay_order):
            mark = marks.get(name)
            position = datetime.fromisoformat(mark["position"]) if mark else None
            lag = timedelta(seconds=mark["lag_seconds"]) if mark else None
            status.passes.append(PassState(name, position, lag))
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
