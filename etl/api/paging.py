"""The window reader: every record of one by-date window, whatever the server's order.

The API states no order, and the order may change between two requests for the same
window (MySQL's `ORDER BY detect_time LIMIT ini, cant` returns rows that share a
`detect_time` in any order; without ORDER BY, any order at all). Offset paging then
skips a row at a page boundary and reads another twice. So a window is read in two steps:

1. **The walk** (what a well-behaved server costs, and all it costs): ask `ini=0`, then
   `ini += len(page)`, until a page comes back EMPTY (never trust a short page: a server
   may cap `cant` silently). Each non-empty page is yielded as it arrives. The rows a
   walk reads add up to the window's row count, so if no row came twice, none was
   skipped: the walk is complete. A row whose callid was already met on an EARLIER page
   is the proof that the order moved under the walk (rows repeated next to each other
   inside one page are the duplicated-rows quirk, and prove nothing). A disturbed walk
   still goes on to its end: its pages are real rows, and their times tell where to cut.
2. **The order-proof read**, only for a disturbed window: the seconds the walk asked
   (the window and a second either side, below) are split into sub-windows (cut where
   the walk's rows say about 3/4 of a page falls), each read as ONE page at `ini=0`. A
   page that comes back with fewer rows than the page size and than any page cap seen
   holds the whole sub-window, in whatever order: no boundary can cut through it. A full
   answer is split in two and read again. A single second whose ask (with a second
   either side, below) fills a page is asked alone, `[t, t]`: rows in that answer prove
   the bounds inclusive, so a short one holds the whole second (an empty one counts once
   some answer to `[t, t]` has proven them so; times are whole seconds, as API.md shows
   them). A second that still cannot be read in one short page is a `FatalSourceError`,
   never a silent completion. Every callid the walk met must come back in the
   order-proof read (it asks for the same seconds), or the server answers the same range
   differently: a `FatalSourceError` too.

Whether the server's date bounds are inclusive is not stated: every request asks for one
second more at each end than the range it reads (`_ask`), so each second of the range is
asked for whether the server's bounds are inclusive, exclusive or half-open. Adjacent
windows and sub-windows share their boundary second, so their requests overlap by up to
three seconds; the load dedups. A range's neighbouring seconds may be stored with it: they
are real CDRs, never a loss.
The walk's guards turn a misbehaving server into a `FatalSourceError` instead of a loop:
a page identical to the previous one although `ini` moved (the server ignores `ini`),
and more than `max_pages` pages in one window. `RequestStats` counts disturbed windows
and the requests their order-proof reads cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from etl.api.client import Credentials, RequestStats
from etl.errors import FatalSourceError

__all__ = ["PageSource", "walk_window"]

Record = dict[str, Any]
_SECOND = timedelta(seconds=1)


class PageSource(Protocol):
    """What the reader needs of a client (CdrApiClient is one)."""

    def fetch_page(
        self,
        creds: Credentials,
        date_start: datetime,
        date_end: datetime,
        ini: int,
        cant: int,
        stats: RequestStats | None = None,
    ) -> list[Record]: ...


def walk_window(
    client: PageSource,
    creds: Credentials,
    start: datetime,
    end: datetime,
    page_size: int,
    stats: RequestStats | None = None,
    max_pages: int = 100_000,
) -> Iterator[list[Record]]:
    """Yield pages that together hold every record of the window [start, end] (naive
    provider times), proven complete whatever the server's order. The generator ending
    normally is that proof; any error leaves the window unproven."""
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be at least 1")
    stats = stats if stats is not None else RequestStats()
    walk = _Walk(f"account {creds.username} window {_span(start, end)}")
    yield from _walk(client, creds, start, end, page_size, stats, max_pages, walk)
    if not walk.disturbed:
        return
    before = stats.requests
    try:
        reader = _OrderProofRead(client, creds, page_size, walk, stats)
        yield from reader.read(start - _SECOND, end + _SECOND)  # the seconds the walk asked
    finally:
        stats.add_reread(stats.requests - before)


@dataclass
class _Walk:
    """What one walk met: callids (to prove a repeat), detect times (to plan sub-windows),
    and the smallest page that was followed by another (a page cap, when below cant)."""

    name: str
    keys: set[object] = field(default_factory=set)
    times: list[str] = field(default_factory=list)
    cap: int | None = None
    disturbed: bool = False


def _walk(
    client: PageSource,
    creds: Credentials,
    start: datetime,
    end: datetime,
    page_size: int,
    stats: RequestStats,
    max_pages: int,
    walk: _Walk,
) -> Iterator[list[Record]]:
    ini = 0
    last = 0  # the length of the page before
    previous: object = None
    for _ in range(max_pages):
        page = _ask(client, creds, start, end, ini, page_size, stats)
        if not page:
            return
        identity = _identity(page)
        if ini > 0 and identity == previous:
            raise FatalSourceError(
                f"{walk.name}: server ignores ini "
                f"(ini={ini} returned the same {len(page)} records as the page before)"
            )
        if ini > 0:  # the page before was followed by this one: as full as the server serves
            walk.cap = last if walk.cap is None else min(walk.cap, last)
        previous, last = identity, len(page)
        keys = {_key(record) for record in page}
        repeated = not keys.isdisjoint(walk.keys)
        walk.keys |= keys
        walk.times.extend(_time(record) for record in page)
        yield page
        if repeated and not walk.disturbed:
            walk.disturbed = True
            stats.add_disturbed()
        ini += len(page)
        if walk.disturbed and ini > 2 * (len(walk.keys) + page_size):
            return  # far more rows read than met: the walk has told all it can
    raise FatalSourceError(
        f"{walk.name}: more than {max_pages} pages (ini reached {ini}); giving up on this window"
    )


class _OrderProofRead:
    """Sub-windows, each answered in one page short of every limit: no order needed."""

    def __init__(
        self,
        client: PageSource,
        creds: Credentials,
        page_size: int,
        walk: _Walk,
        stats: RequestStats,
    ) -> None:
        self.client, self.creds, self.page_size, self.stats = client, creds, page_size, stats
        self.walk = walk
        self.limit = min(page_size, walk.cap or page_size)
        self.found: set[object] = set()
        self.inclusive = False  # a second asked alone, [t, t], came back with rows
        self.unproven: list[tuple[datetime, int]] = []  # seconds alone that came back empty

    def read(self, start: datetime, end: datetime) -> Iterator[list[Record]]:
        """Read [start, end], the range the walk asked: each sub-window is asked a second
        wider at each end (as `_ask`), but never beyond that range, so the read covers the
        seconds the walk's answers covered, whatever the bounds, and stores no others."""
        pending = list(reversed(_plan(start, end, self.walk.times, self.limit)))
        while pending:  # depth first, so sub-windows come in time order
            lo, hi = pending.pop()
            ask = max(lo - _SECOND, start), min(hi + _SECOND, end)
            page = self.client.fetch_page(self.creds, *ask, 0, self.page_size, self.stats)
            if len(page) >= self.limit and lo == hi:
                page = self._second_alone(lo, len(page))
            if len(page) < self.limit:
                self.found.update(_key(record) for record in page)
                if page:
                    yield page
                continue
            pending.extend(reversed(_halves(lo, hi)))
        if self.unproven and not self.inclusive and not self._proven_inclusive():
            second, around = self.unproven[0]
            raise self._unreadable(second, around, "empty (the server may exclude its bounds)")
        missing = len(self.walk.keys - self.found)
        if missing:
            raise FatalSourceError(
                f"{self.walk.name}: the read by sub-windows lacks {missing} record(s) the "
                "paged read returned for the same seconds"
            )

    def _second_alone(self, second: datetime, around: int) -> list[Record]:
        """One second whose ask with a second either side came back full, asked alone:
        [t, t]. Rows in that answer prove the server's bounds inclusive, so a short one
        holds all of the second. An empty one proves nothing until some other second's
        answer has proven the bounds inclusive (an exclusive server answers [t, t] with
        nothing): the read fails at its end if none has. A full one fails at once."""
        page = self.client.fetch_page(self.creds, second, second, 0, self.page_size, self.stats)
        if len(page) >= self.limit:
            raise self._unreadable(second, around, "full")
        if page:
            self.inclusive = True
        else:
            self.unproven.append((second, around))
        return page

    def _proven_inclusive(self) -> bool:
        """One request that may prove the bounds inclusive: the second where the walk met
        most rows (by detect time), asked alone for one row."""
        seconds = Counter(t for t in self.walk.times if _parse(t) is not None)
        busiest = _parse(seconds.most_common(1)[0][0]) if seconds else None
        if busiest is None:
            return False
        return bool(self.client.fetch_page(self.creds, busiest, busiest, 0, 1, self.stats))

    def _unreadable(self, second: datetime, around: int, alone: str) -> FatalSourceError:
        return FatalSourceError(
            f"{self.walk.name}: {around} or more records lie in the seconds "
            f"{_span(second - _SECOND, second + _SECOND)}, more than one page holds "
            f"({self.limit}), and the second {_fmt(second)} asked alone came back {alone}; "
            "the server's order moves between requests, so they cannot be read "
            "completely (raise api.page_size if the server allows bigger pages)"
        )


def _plan(
    start: datetime, end: datetime, times: list[str], limit: int
) -> list[tuple[datetime, datetime]]:
    """Sub-windows of [start, end] cut so that about 3/4 of `limit` of the walk's rows
    (by detect time, when they carry one) fall in each; sharing their boundary seconds."""
    inside = sorted(t for t in times if _fmt(start) <= t <= _fmt(end))
    step = max(1, limit * 3 // 4)
    cuts = [start]
    for i in range(step, len(inside), step):
        cut = _parse(inside[i])
        if cut is not None and cuts[-1] < cut < end:
            cuts.append(cut)
    if cuts[-1] < end or len(cuts) == 1:
        cuts.append(end)
    return list(pairwise(cuts))


def _ask(
    client: PageSource,
    creds: Credentials,
    lo: datetime,
    hi: datetime,
    ini: int,
    cant: int,
    stats: RequestStats,
) -> list[Record]:
    """One page of the range [lo, hi] (naive provider times), asked one second wider at each
    end: whatever the server's bounds, inclusive, exclusive or half-open, every second of
    [lo, hi] lies inside what it answers."""
    return client.fetch_page(creds, lo - _SECOND, hi + _SECOND, ini, cant, stats)


def _halves(lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """Two sub-windows of [lo, hi], each strictly shorter, together covering it."""
    seconds = int((hi - lo).total_seconds())
    if seconds <= 1:
        return [(lo, lo), (hi, hi)]
    mid = lo + timedelta(seconds=seconds // 2)
    return [(lo, mid), (mid, hi)]


def _identity(page: list[Record]) -> object:
    callids = [record.get("callid") for record in page]
    return callids if None not in callids else page


def _key(record: Record) -> object:
    callid = record.get("callid")
    if callid is None or callid == "":
        return repr(sorted(record.items(), key=lambda item: str(item[0])))
    return str(callid)


def _time(record: Record) -> str:
    value = record.get("detect_time")
    return value if isinstance(value, str) else ""


def _fmt(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _parse(text: str) -> datetime | None:
    """A provider wall-clock time (naive on purpose), or None for anything else."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(microsecond=0) if moment.tzinfo is None else None


def _span(start: datetime, end: datetime) -> str:
    return f"{_fmt(start)}..{_fmt(end)}"
