"""The page walker: ini += len(page) until an empty page, with guards against bad servers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from etl.api.client import Credentials, RequestStats
from etl.api.paging import walk_window
from etl.errors import FatalSourceError, TransientSourceError

CREDS = Credentials("8569841", "98765432109")
START, END = datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11)


class FakeServer:
    """A window of `total` records, served with an optional silent page cap."""

    def __init__(self, total: int, cap: int | None = None, ignore_ini: bool = False) -> None:
        self.rows = [{"callid": str(i), "n": i} for i in range(total)]
        self.cap = cap
        self.ignore_ini = ignore_ini
        self.asked: list[tuple[int, int]] = []

    def fetch_page(
        self,
        creds: Credentials,
        date_start: datetime,
        date_end: datetime,
        ini: int,
        cant: int,
        stats: RequestStats | None = None,
    ) -> list[dict[str, Any]]:
        assert (creds, date_start, date_end) == (CREDS, START, END)
        self.asked.append((ini, cant))
        if stats is not None:
            stats.add_request()
        size = min(cant, self.cap) if self.cap is not None else cant
        offset = 0 if self.ignore_ini else ini
        return self.rows[offset : offset + size]


def walk(server: FakeServer, page_size: int, **kwargs: Any) -> list[list[dict[str, Any]]]:
    return list(walk_window(server, CREDS, START, END, page_size, **kwargs))


def test_empty_window_costs_one_request() -> None:
    """An empty window is one request that yields nothing."""
    server = FakeServer(0)
    assert walk(server, 1000) == []
    assert server.asked == [(0, 1000)]


def test_pages_until_an_empty_page() -> None:
    """Pages are asked at ini 0, 1000, 2000, ... and the walk ends on the first empty page."""
    server = FakeServer(2500)
    pages = walk(server, 1000)
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert server.asked == [(0, 1000), (1000, 1000), (2000, 1000), (2500, 1000)]
    assert [r["n"] for p in pages for r in p] == list(range(2500))


def test_an_exact_multiple_of_the_page_size() -> None:
    """A window of exactly two full pages needs a third, empty, request to end."""
    server = FakeServer(2000)
    assert [len(p) for p in walk(server, 1000)] == [1000, 1000]
    assert server.asked[-1] == (2000, 1000)


def test_a_short_page_is_not_the_end() -> None:
    """With a silent cap of 300 under cant=1000, ini advances by 300 and nothing is lost."""
    server = FakeServer(1000, cap=300)
    pages = walk(server, 1000)
    assert [len(p) for p in pages] == [300, 300, 300, 100]
    assert [ini for ini, _ in server.asked] == [0, 300, 600, 900, 1000]
    assert [r["n"] for p in pages for r in p] == list(range(1000))


def test_a_server_that_ignores_ini_is_fatal() -> None:
    """The same page again at a later ini means the server ignores ini: a fatal error."""
    server = FakeServer(50, ignore_ini=True)
    walker = walk_window(server, CREDS, START, END, 20)
    assert len(next(walker)) == 20
    with pytest.raises(FatalSourceError, match="server ignores ini"):
        next(walker)


def test_a_single_record_window_that_ignores_ini_is_caught_too() -> None:
    """Even a one-record window served regardless of ini stops with the fatal error."""
    with pytest.raises(FatalSourceError, match="server ignores ini"):
        walk(FakeServer(1, ignore_ini=True), 1000)


def test_pages_without_callids_compare_whole_records() -> None:
    """Records lacking callids are compared whole, so distinct pages are not mistaken."""

    class NoIds(FakeServer):
        def fetch_page(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            return [{"n": r["n"]} for r in super().fetch_page(*args, **kwargs)]

    assert [len(p) for p in walk(NoIds(5), 2)] == [2, 2, 1]


def test_max_pages_guard() -> None:
    """More pages than max_pages in one window is a fatal error, not an endless loop."""
    server = FakeServer(100)
    with pytest.raises(FatalSourceError, match="more than 3 pages"):
        walk(server, 10, max_pages=3)
    assert len(server.asked) == 3


def test_errors_pass_through_and_stats_are_handed_on() -> None:
    """A client error ends the walk as raised; the stats object reaches the client."""

    class Failing(FakeServer):
        def fetch_page(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            if self.asked:
                raise TransientSourceError("boom")
            return super().fetch_page(*args, **kwargs)

    stats = RequestStats()
    walker = walk_window(Failing(10), CREDS, START, END, 5, stats)
    assert len(next(walker)) == 5
    with pytest.raises(TransientSourceError):
        next(walker)
    assert stats.requests == 1


def test_bad_arguments() -> None:
    """A page size or page limit below 1 is refused."""
    with pytest.raises(ValueError, match="page_size"):
        walk(FakeServer(1), 0)
