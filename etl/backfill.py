"""`cdr-etl backfill`: read a range of one account once, window by window, several in
flight; resumable after a crash; the incremental watermarks are left alone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection, Engine

from etl.db.state import (
    RunFigures,
    account_lock,
    finish_backfill,
    finish_run,
    mark_window_done,
    open_backfill,
    start_run,
)
from etl.errors import EtlError
from etl.logs import log_context
from etl.pipeline import Source, Stopped, store_window
from etl.sync import AccountResult, describe, error_kind, summary
from etl.windows import Window, split

log = logging.getLogger(__name__)

Progress = Callable[[int, int, RunFigures], None]  # (windows done, windows total, delta)


class BackfillBusy(EtlError):
    """Another backfill of the same account is running."""


def backfill_account(
    engine: Engine,
    source: Source,
    account_name: str,
    start: datetime,
    end: datetime,
    window: timedelta,
    run_id: str,
    *,
    concurrency: int = 3,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> AccountResult:
    """Read [start, end] (provider wall clock) in windows; skip those a crashed run stored."""
    began = time.monotonic()
    stop = stop or threading.Event()
    result = AccountResult(account_name, "backfill", "ok")
    with (
        log_context(account=account_name, run_id=run_id),
        account_lock(engine, source.account_id, "backfill") as got,
    ):
        if got is None:
            raise BackfillBusy(f"another backfill of account {account_name!r} is running")
        backfill_id, done = open_backfill(
            engine, source.account_id, start, end, int(window.total_seconds())
        )
        todo = [w for w in split(start, end, window) if w.start not in done]
        total = len(todo) + len(done)
        if done:
            log.info("resuming: %d of %d windows already stored", len(done), total)
        row = start_run(engine, run_id, source.account_id, "backfill", start, end)
        lock = threading.Lock()
        finished = len(done)
        if progress:
            progress(finished, total, RunFigures())

        def one(w: Window) -> None:
            nonlocal finished
            figures = RunFigures()
            try:
                store_window(
                    engine,
                    source,
                    w,
                    figures,
                    partial(_mark, backfill_id, w),
                    run_id=run_id,
                    stop=stop,
                )
            finally:
                with lock:
                    result.figures.add(figures)
                    if figures.windows:
                        finished += 1
                    if progress:
                        progress(finished, total, figures)

        interrupted = False
        try:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="backfill") as pool:
                futures = [pool.submit(one, w) for w in todo]
                try:
                    completed, pending = wait(futures, return_when=FIRST_EXCEPTION)
                except KeyboardInterrupt:  # Ctrl-C: store the pages in hand, then stop
                    interrupted = True
                    stop.set()
                    completed, pending = set(), set(futures)
                failures = [f.exception() for f in completed if f.exception()]
                for future in pending:  # after a failure: start no new window
                    future.cancel()
                if interrupted:
                    raise Stopped("interrupted")
                if failures:
                    raise failures[0]  # type: ignore[misc]
            finish_backfill(engine, backfill_id)
        except Stopped as exc:
            result.status, result.error = "stopped", str(exc)
        except Exception as exc:
            result.status, result.error = "failed", describe(exc)
            result.error_kind = error_kind(exc)
            log.debug("backfill %s failed", account_name, exc_info=True)
        result.seconds = time.monotonic() - began
        status = "ok" if result.status == "stopped" else result.status
        if interrupted:
            status, result.error = "failed", "interrupted (run the same command to resume)"
        try:
            finish_run(engine, row, result.figures, status, result.error)
        except Exception as exc:
            log.warning("backfill %s: run history not recorded: %s", account_name, describe(exc))
        log.log(logging.INFO if result.ok else logging.ERROR, summary(result))
        if interrupted:
            raise KeyboardInterrupt
        return result


def _mark(backfill_id: int, w: Window, conn: Connection, fetched: int) -> None:
    mark_window_done(conn, backfill_id, w.start, w.end, fetched)
