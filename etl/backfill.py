"""`cdr-etl backfill`: read a range of one account once, window by window, several in
flight; resumable after a crash; the incremental watermarks are left alone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from sqlalchemy import Engine

from etl.db.state import MarkWindowDone, RunFigures, finish_backfill, open_backfill
from etl.errors import BackfillBusy
from etl.pipeline import Source, store_window
from etl.run import AccountResult, AccountRun
from etl.windows import Window, split

__all__ = ["BackfillBusy", "Progress", "backfill_account"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, RunFigures], None]  # (windows done, windows total, delta)


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
    """Read [start, end] (provider wall clock) in windows; skip those a crashed run stored.

    Ctrl-C stores the pages in hand, records the run as interrupted, and raises
    KeyboardInterrupt again."""
    result = AccountResult(account_name, "backfill", "ok")
    with AccountRun(
        engine, result, source.account_id, run_id, lock="backfill",
        range_start=start, range_end=end,
        busy_message=f"another backfill of account {account_name!r} is running",
        busy_error=BackfillBusy,
    ):  # fmt: skip
        backfill_id, done = open_backfill(
            engine, source.account_id, start, end, int(window.total_seconds())
        )
        todo = [w for w in split(start, end, window) if w.start not in done]
        if done:
            log.info("resuming: %d of %d windows already stored", len(done), len(todo) + len(done))
        windows = _Windows(engine, source, backfill_id, run_id, result.figures, stop, progress)
        windows.read(todo, len(done), concurrency)
        finish_backfill(engine, backfill_id)
    return result


class _Windows:
    """The windows of one backfill, several in flight; progress counted as they finish."""

    def __init__(
        self,
        engine: Engine,
        source: Source,
        backfill_id: int,
        run_id: str,
        figures: RunFigures,
        stop: threading.Event | None,
        progress: Progress | None,
    ) -> None:
        self.engine, self.source, self.backfill_id, self.run_id = (
            engine,
            source,
            backfill_id,
            run_id,
        )
        self.figures, self.progress = figures, progress
        self.stop = stop or threading.Event()
        self.lock = threading.Lock()
        self.finished = self.total = 0

    def read(self, todo: list[Window], done: int, concurrency: int) -> None:
        """Read every window of `todo`; the first failure stops new windows and is raised."""
        self.finished, self.total = done, done + len(todo)
        if self.progress:
            self.progress(self.finished, self.total, RunFigures())
        with ThreadPoolExecutor(concurrency, thread_name_prefix="backfill") as pool:
            futures = [pool.submit(self.one, w) for w in todo]
            try:
                completed, pending = wait(futures, return_when=FIRST_EXCEPTION)
            except KeyboardInterrupt:  # Ctrl-C: store the pages in hand, then stop
                self.stop.set()
                _cancel(futures)
                raise
            _cancel(pending)
            failures = [f.exception() for f in completed if f.exception() is not None]
            if failures:
                raise failures[0]  # type: ignore[misc]

    def one(self, window: Window) -> None:
        figures = RunFigures()
        try:
            store_window(
                self.engine, self.source, window, figures,
                MarkWindowDone(self.backfill_id, window.start, window.end),
                run_id=self.run_id, stop=self.stop,
            )  # fmt: skip
        finally:
            with self.lock:
                self.figures.add(figures)
                self.finished += figures.windows
                if self.progress:
                    self.progress(self.finished, self.total, figures)


def _cancel(futures: set[Future[None]] | list[Future[None]]) -> None:
    for future in futures:  # after a failure or Ctrl-C: start no new window
        future.cancel()
