"""One incremental run of one account: every pass, every due window, watermark by watermark."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from etl.config import AccountConfig, SyncSettings, format_duration
from etl.db.state import (
    RunFigures,
    account_lock,
    advance_watermark,
    finish_run,
    read_watermarks,
    start_run,
)
from etl.errors import AuthError, EtlError
from etl.logs import log_context
from etl.pipeline import Source, Stopped, store_window
from etl.redact import RedactingFilter, redact
from etl.windows import due_windows, wall_clock

log = logging.getLogger(__name__)


@dataclass
class AccountResult:
    """The outcome of one account's run, as the summary shows it."""

    account: str
    kind: str
    status: str  # ok | failed | skipped | stopped
    figures: RunFigures = field(default_factory=RunFigures)
    error: str | None = None
    error_kind: str | None = None  # auth | transient | fatal | database | internal
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped", "stopped")


def describe(exc: BaseException) -> str:
    """One line for the run history and the terminal, free of any secret."""
    if isinstance(exc, DBAPIError):
        lines = str(exc.orig).strip().splitlines() if exc.orig else []
        text = f"database: {lines[0] if lines else type(exc).__name__}"
    elif isinstance(exc, AuthError):
        text = f"authentication failed (check the username and password): {exc}"
    elif isinstance(exc, EtlError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text.splitlines()[0] if text else type(exc).__name__, RedactingFilter.secrets())


def error_kind(exc: BaseException) -> str:
    """What kind of failure ended a run, for metrics: auth, transient, fatal, database..."""
    if isinstance(exc, DBAPIError):
        return "database"
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) else "internal"


def summary(result: AccountResult) -> str:
    f = result.figures
    line = (
        f"{result.kind} {result.account}: {result.status} in {result.seconds:.1f}s, "
        f"{f.windows} windows, {f.pages} pages, {f.requests} requests, {f.retries} retries, "
        f"fetched {f.fetched}, inserted {f.inserted}, updated {f.updated}, "
        f"unchanged {f.unchanged}, rejected {f.rejected}"
    )
    if f.disturbed:
        line += (
            f"; {f.disturbed} windows re-read in an order-proof way "
            f"({f.reread_requests} extra requests: the server's order moved between pages)"
        )
    return f"{line}; error: {result.error}" if result.error else line


def sync_account(
    engine: Engine,
    source: Source,
    account: AccountConfig,
    sync: SyncSettings,
    now: datetime,
    run_id: str,
    *,
    stop: threading.Event | None = None,
) -> AccountResult:
    """Read every due window of every pass; each window moves its pass's watermark in the
    transaction of its last page. Another process syncing this account: skipped."""
    began = time.monotonic()
    result = AccountResult(account.name, "sync", "ok")
    with (
        log_context(account=account.name, run_id=run_id),
        account_lock(engine, source.account_id, "sync") as locked,
    ):
        if locked is None:
            result.status = "skipped"
            result.error = "another process is syncing this account"
            log.info("sync %s: skipped, another process is syncing it", account.name)
            return result
        row = start_run(engine, run_id, source.account_id, "sync")
        first: datetime | None = None
        last: datetime | None = None
        try:
            marks = _watermarks(engine, source, sync, now)
            for delay in sync.passes:
                name = format_duration(delay)
                for window in due_windows(
                    marks[name],
                    now,
                    source.tz,
                    delay=delay,
                    size=sync.window,
                    initial_lookback=sync.initial_lookback,
                ):
                    if stop is not None and stop.is_set():
                        raise Stopped("stopped before the next window")
                    store_window(
                        engine,
                        source,
                        window,
                        result.figures,
                        partial(_advance, source.account_id, name, window.end),
                        run_id=run_id,
                        stop=stop,
                        connection=locked,  # no write without the lock
                    )
                    first = min(first or window.start, window.start)
                    last = max(last or window.end, window.end)
        except Stopped as exc:
            result.status = "stopped"
            result.error = str(exc)
        except Exception as exc:
            result.status = "failed"
            result.error, result.error_kind = describe(exc), error_kind(exc)
            log.debug("sync %s failed", account.name, exc_info=True)
        result.seconds = time.monotonic() - began
        status = "ok" if result.status == "stopped" else result.status
        try:
            finish_run(engine, row, result.figures, status, result.error, first, last)
        except Exception as exc:  # the database is gone: the summary still tells
            log.warning("sync %s: run history not recorded: %s", account.name, describe(exc))
        log.log(
            logging.INFO if result.ok else logging.ERROR,
            summary(result),
            extra={"event_kind": "run_summary", **result.figures.counts()},
        )
        return result


def _watermarks(
    engine: Engine, source: Source, sync: SyncSettings, now: datetime
) -> dict[str, datetime]:
    """Each pass's watermark; a pass that has none starts `initial_lookback` before now."""
    with engine.begin() as conn:
        marks = read_watermarks(conn, source.account_id)
        start = wall_clock(now, source.tz) - sync.initial_lookback
        for delay in sync.passes:
            name = format_duration(delay)
            if name not in marks:
                advance_watermark(conn, source.account_id, name, start)
                marks[name] = start
    return marks


def _advance(
    account_id: int, pass_name: str, end: datetime, conn: Connection, fetched: int
) -> None:
    advance_watermark(conn, account_id, pass_name, end)
