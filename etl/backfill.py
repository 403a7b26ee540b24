"""`cdr-etl backfill`: read a range of one account once, window by window, several in
flight; resumable after a crash; the incremental watermarks are left alone."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from itertools import islice

from sqlalchemy import Engine

from etl.db.state import MarkWindowDone, RunFigures, finish_backfill, open_backfill
from etl.errors import BackfillBusy
from etl.pipeline import Source, store_window
from etl.run import AccountResult, AccountRun
from etl.windows import Window, iter_split

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
        total = -(-(end - start) // window)  # windows of the range, counted, not listed
        stored = sum(1 for s in done if start <= s < end and (s - start) % window == timedelta(0))
        if stored:
            log.info("resuming: %d of %d windows already stored", stored, total)
        todo = (w for w in iter_split(start, end, window) if w.start not in done)
        windows = _Windows(engine, source, backfill_id, run_id, result.figures, stop, progress)
        windows.read(todo, stored, total, concurrency)
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

    def read(self, todo: Iterator[Window], done: int, total: int, concurrency: int) -> None:
        """Read every window of `todo`, `concurrency` at a time, in order; a window is
        taken from `todo` only when one finishes (memory flat in the range's length). The
        first failure starts no new window (those running finish) and is raised."""
        self.finished, self.total = done, total
        if self.progress:
            self.progress(self.finished, self.total, RunFigures())
        try:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="backfill") as pool:
                try:
                    running = {self._start(pool, w) for w in islice(todo, concurrency)}
                    while running:
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        failures = [f.exception() for f in finished if f.exception() is not None]
                        if failures:  # the windows running finish; no new one starts
                            raise failures[0]  # type: ignore[misc]
                        running |= {self._start(pool, w) for w in islice(todo, len(finished))}
                except KeyboardInterrupt:  # Ctrl-C: store the pages in hand, then stop
                    self.stop.set()
                    raise
        except KeyboardInterrupt:  # also while the pool waits for the windows running
            self.stop.set()
            raise

    def _start(self, pool: ThreadPoolExecutor, window: Window) -> Future[None]:
        """Read `window` on a thread of the pool, in this thread's context: its log lines
        carry the run's account and run_id (etl.logs.log_context)."""
        return pool.submit(contextvars.copy_context().run, self.one, window)

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
