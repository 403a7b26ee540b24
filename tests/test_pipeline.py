"""The fetch-ahead thread of a window read: it never keeps a reader that stopped waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from etl.pipeline import ahead


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
