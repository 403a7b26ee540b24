"""The page walker: every record of one by-date window, page by page.

Never trust a short page (a server may cap `cant` silently): ask `ini=0`, then
`ini += len(page)`, until a page comes back EMPTY. Each non-empty page is yielded as it
arrives, so the caller can store it before asking for the next.

Two guards turn a misbehaving server into a `FatalSourceError` instead of a loop:
- a page identical to the previous one (the same callids in the same order; the whole
  records when callids are missing) although `ini` moved: the server ignores `ini`;
- more than `max_pages` pages in one window.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from etl.api.client import Credentials, RequestStats
from etl.errors import FatalSourceError

__all__ = ["PageSource", "walk_window"]


class PageSource(Protocol):
    """What the walker needs of a client (CdrApiClient is one)."""

    def fetch_page(
        self,
        creds: Credentials,
        date_start: datetime,
        date_end: datetime,
        ini: int,
        cant: int,
        stats: RequestStats | None = None,
    ) -> list[dict[str, Any]]: ...


def _identity(page: list[dict[str, Any]]) -> object:
    callids = [record.get("callid") for record in page]
    return callids if None not in callids else page


def walk_window(
    client: PageSource,
    creds: Credentials,
    start: datetime,
    end: datetime,
    page_size: int,
    stats: RequestStats | None = None,
    max_pages: int = 100_000,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each non-empty page of the window [start, end] (naive provider times)."""
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be at least 1")
    window = f"{start:%Y-%m-%d %H:%M:%S}..{end:%Y-%m-%d %H:%M:%S}"
    ini = 0
    previous: object = None
    for _ in range(max_pages):
        page = client.fetch_page(creds, start, end, ini, page_size, stats)
        if not page:
            return
        identity = _identity(page)
        if ini > 0 and identity == previous:
            raise FatalSourceError(
                f"account {creds.username} window {window}: server ignores ini "
                f"(ini={ini} returned the same {len(page)} records as the page before)"
            )
        previous = identity
        yield page
        ini += len(page)
    raise FatalSourceError(
        f"account {creds.username} window {window}: more than {max_pages} pages "
        f"(ini reached {ini}); giving up on this window"
    )
