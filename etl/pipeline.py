"""One window, from the API to the database: fetch pages (a thread ahead of the load),
normalize, load each page in its own transaction, and complete the window (a
`Completion`: move a watermark, mark a backfill window) in the same transaction as its
last page."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from etl.api.client import CdrApiClient, Credentials, RequestStats
from etl.api.paging import walk_window
from etl.db.load import database_errors, load_page
from etl.db.state import Completion, RunFigures
from etl.errors import Stopped, StoppedRetrying
from etl.normalize import Cdr, Reject, normalize_page
from etl.windows import Window

log = logging.getLogger(__name__)
T = TypeVar("T")
_DONE = object()


@dataclass(frozen=True)
class Source:
    """Where one account's CDRs come from, and what we call it."""

    client: CdrApiClient
    creds: Credentials
    account_id: int
    tz: ZoneInfo
    page_size: int


def ahead(produce: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Run the iterator `produce()` in a thread, at most `depth` items ahead of the reader.

    Errors of the producer are raised in the reader; a reader that stops early stops the
    producer at its next item.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        """Put the item in the queue unless the reader stops first (then say so)."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce():
                if not offer(item):
                    return
            offer(_DONE)  # a reader gone (stopped early) no longer waits for the end
        except BaseException as exc:  # handed to the reader, who raises it
            offer(exc)

    # the producer runs in the reader's context: its log lines carry the run's account and
    # run_id (etl.logs.log_context), as every line of a run does
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name="fetch-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def transaction(engine: Engine, connection: Connection | None) -> Iterator[Connection]:
    """A transaction on `connection` if given, else on a connection of the pool."""
    if connection is None:
        with engine.begin() as conn:
            yield conn
    else:
        with connection.begin():
            yield connection


class Page(NamedTuple):
    """One page of a window, normalized: what loads, what is rejected, how many records
    came, and when the answer was received (an older read never overwrites a newer one)."""

    good: list[Cdr]
    bad: list[Reject]
    fetched: int
    received: datetime


def store_window(
    engine: Engine,
    source: Source,
    window: Window,
    figures: RunFigures,
    completion: Completion,
    *,
    run_id: str | None = None,
    stop: threading.Event | None = None,
    connection: Connection | None = None,
) -> None:
    """Read `window` whole and store it; `completion` is applied in the transaction of the
    last page. Any error leaves the window incomplete (and `completion` not applied).

    The pages are stored on `connection` when given (the one holding the account's lock),
    else on connections of `engine`'s pool. One page is fetched ahead (a thread) while the
    one before is stored: overlap, and memory flat in the window's size."""
    stats = RequestStats()
    store = _PageStore(engine, connection, source.account_id, run_id, figures)
    held: Page | None = None
    try:
        try:
            for page in ahead(lambda: _pages(source, window, stats), depth=1):
                figures.pages += 1
                figures.fetched += page.fetched
                if held is not None:
                    store(held)
                held = page
                if stop is not None and stop.is_set():
                    raise Stopped(f"stopped in window {window}")
        except Stopped:  # asked to stop, here or while a request waited to be retried
            if held is not None:
                store(held)  # the page in hand is kept; the window stays incomplete
            raise
        store(held or Page([], [], 0, datetime.now(UTC)), completion)
        figures.windows += 1
    finally:
        figures.add_requests(stats)


def stoppable_sleep(stop: threading.Event) -> Callable[[float], None]:
    """The wait before a failed request is retried, cut short by `stop` (the daemon's
    SIGTERM): then the request is not tried again but the run stops, storing the page in
    hand, instead of spending its remaining attempts back to back. It is recorded as
    failed (`StoppedRetrying`): its request was failing, so it is no success."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise StoppedRetrying(f"stopped while waiting {seconds:.1f}s to retry a failed request")

    return sleep


def _pages(source: Source, window: Window, stats: RequestStats) -> Iterator[Page]:
    """The window's pages, proven complete whatever the server's order, normalized."""
    for records in walk_window(
        source.client, source.creds, window.start, window.end, source.page_size, stats
    ):
        received = datetime.now(UTC)
        page = normalize_page(records, source.tz)
        yield Page(page.legs, page.rejects, len(records), received)


class _PageStore:
    """Stores pages, each in its own transaction; the last one with the completion."""

    def __init__(
        self,
        engine: Engine,
        connection: Connection | None,
        account_id: int,
        run_id: str | None,
        figures: RunFigures,
    ) -> None:
        self.engine, self.connection, self.account_id = engine, connection, account_id
        self.run_id, self.figures = run_id, figures
        self.fetched = 0  # records of the window so far

    def __call__(self, page: Page, completion: Completion | None = None) -> None:
        self.fetched += page.fetched
        with database_errors(), transaction(self.engine, self.connection) as conn:
            counts = load_page(
                conn, self.account_id, page.good, page.bad, self.run_id, page.received
            )
            if completion is not None:
                completion.apply(conn, self.fetched)
        self.figures.add_counts(counts)
