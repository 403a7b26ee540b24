"""The fetch-ahead thread of a window read: it never keeps a reader that stopped waiting;
and a backfill's windows, taken as it goes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import cast

import pytest
from sqlalchemy import Engine

from etl.backfill import _Windows
from etl.db.state import RunFigures
from etl.pipeline import Source, ahead
from etl.windows import Window, iter_split


def test_a_reader_that_stops_early_does_not_wait_for_a_finished_producer() -> None:
    """The producer has put its last item and waits to hand over the end; storing the
    first page fails: the read ends at once, not after the join's 5 s timeout."""

    queued_all = threading.Event()

    def produce() -> Iterator[str]:
        yield from ("first", "second")
        queued_all.set()  # "second" is in the queue; the end is offered next

    def store_pages() -> None:
        for _ in ahead(produce, depth=1):
            assert queued_all.wait(timeout=5)
            raise RuntimeError("storing the page failed")

    began = time.monotonic()
    with pytest.raises(RuntimeError):
        store_pages()
    assert time.monotonic() - began < 1.3


def test_every_item_then_the_producers_error_reach_the_reader() -> None:
    def produce() -> Iterator[int]:
        yield from range(5)
        raise ValueError("page 6 failed")

    got: list[int] = []
    with pytest.raises(ValueError, match="page 6 failed"):
        got.extend(ahead(produce, depth=1))
    assert got == [0, 1, 2, 3, 4]


class _FailingWindows(_Windows):
    """A backfill's window reader whose windows fail from `fail_at` on (no database)."""

    def __init__(self, fail_at: datetime) -> None:
        engine, source = cast(Engine, None), cast(Source, None)
        super().__init__(engine, source, 1, "run", RunFigures(), None, None)
        self.fail_at = fail_at

    def one(self, window: Window) -> None:
        if window.start >= self.fail_at:
            raise RuntimeError(f"window {window} failed")


def test_a_backfill_takes_its_windows_as_it_goes() -> None:
    """The windows of a range are taken one at a time as earlier ones finish, never all
    at once: a range of centuries costs no memory, and a failure stops the taking."""
    start = datetime(2024, 1, 1)
    taken: list[Window] = []

    def windows() -> Iterator[Window]:
        for window in iter_split(start, datetime(9999, 1, 1), timedelta(hours=1)):
            taken.append(window)
            yield window

    reader = _FailingWindows(fail_at=start + timedelta(hours=10))
    with pytest.raises(RuntimeError, match="failed"):
        reader.read(windows(), 0, 70_000_000, concurrency=3)
    assert 11 <= len(taken) <= 10 + 3 + 3
    assert [w.start for w in taken] == [start + timedelta(hours=i) for i in range(len(taken))]
