"""One incremental run of one account: every pass, every due window, watermark by watermark."""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import Engine

from etl.config import AccountConfig, SyncSettings, format_duration
from etl.db.state import AdvanceWatermark, advance_watermark, read_watermarks
from etl.errors import Stopped
from etl.pipeline import Source, store_window
from etl.run import AccountResult, AccountRun
from etl.windows import Window, due_windows, wall_clock

__all__ = ["AccountResult", "sync_account"]


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
    result = AccountResult(account.name, "sync", "ok")
    busy = "another process is syncing this account"
    with AccountRun(
        engine, result, source.account_id, run_id, lock="sync", busy_message=busy
    ) as run:
        if run.busy:
            return result
        for pass_name, window in _due(engine, source, sync, now):
            if stop is not None and stop.is_set():
                raise Stopped("stopped before the next window")
            completion = AdvanceWatermark(source.account_id, pass_name, window.end)
            store_window(
                engine, source, window, result.figures, completion,
                run_id=run_id, stop=stop, connection=run.conn,  # no write without the lock
            )  # fmt: skip
            run.range_start = min(run.range_start or window.start, window.start)
            run.range_end = max(run.range_end or window.end, window.end)
    return result


def _due(
    engine: Engine, source: Source, sync: SyncSettings, now: datetime
) -> list[tuple[str, Window]]:
    """(pass name, window) of every window due now, pass by pass (shortest delay first)."""
    marks = _watermarks(engine, source, sync, now)
    due: list[tuple[str, Window]] = []
    for delay in sync.passes:
        name = format_duration(delay)
        windows = due_windows(
            marks[name], now, source.tz,
            delay=delay, size=sync.window, initial_lookback=sync.initial_lookback,
            min_window=sync.min_window,
        )  # fmt: skip
        due.extend((name, window) for window in windows)
    return due


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
