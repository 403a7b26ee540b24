"""Window planning, pure: which ranges of the provider's wall clock are due for reading.

The API filters on naive local strings in the provider's zone, so windows are planned on
that wall clock: a DST change then neither skips nor doubles a range. The repeated hour of
a fall-back is one wall-clock range, read by each pass only once both of its occurrences
are `delay` behind (`complete_up_to`); the missing hour of a spring-forward is a range
that simply holds nothing.

Windows are closed ranges `[start, end]` whose adjacent members share their boundary
second. The API's bound inclusiveness is not stated: the reader asks one second beyond
each end (`etl.api.paging`), and dedup makes the overlaps harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, order=True)
class Window:
    """A range of the provider's wall clock (naive datetimes), read as one by-date query."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{self.start:{FORMAT}} .. {self.end:{FORMAT}}"


def wall_clock(now: datetime, tz: ZoneInfo) -> datetime:
    """The provider's wall-clock reading at the aware instant `now`, to the second."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(tz).replace(tzinfo=None, microsecond=0)


def split(start: datetime, end: datetime, size: timedelta) -> list[Window]:
    """Cut `[start, end]` into consecutive windows of at most `size`."""
    return list(iter_split(start, end, size))


def iter_split(start: datetime, end: datetime, size: timedelta) -> Iterator[Window]:
    """The windows of `split`, one at a time (a range of decades holds a million hours)."""
    if size <= timedelta(0):
        raise ValueError("window size must be positive")
    cursor = start
    while cursor < end:
        stop = end if end - cursor <= size else cursor + size  # no overflow near year 9999
        yield Window(cursor, stop)
        cursor = stop


def due_windows(
    position: datetime | None,
    now: datetime,
    tz: ZoneInfo,
    *,
    delay: timedelta,
    size: timedelta,
    initial_lookback: timedelta,
    min_window: timedelta = timedelta(0),
) -> list[Window]:
    """The windows one pass must read now: from its watermark `position` (or, for a new
    account, `initial_lookback` before now) up to `delay` before now, on the wall clock.

    Nothing is due while the wall clock is behind the watermark (the hour after a
    fall-back): the watermark never moves backwards; nor while less than `min_window` has
    come due (a run right after another costs no request: the next run reads it).
    """
    start = position if position is not None else wall_clock(now, tz) - initial_lookback
    end = complete_up_to(now - delay, tz)
    if end - start < min_window:
        return []
    return split(start, end, size)


def complete_up_to(instant: datetime, tz: ZoneInfo) -> datetime:
    """The latest wall-clock time all of whose occurrences are at or before `instant`.

    That is the wall clock at `instant`, except during the first pass through a repeated
    hour (a fall-back): then the repeated range is not complete until its second pass, so
    the answer stays at the range's start.
    """
    local = instant.astimezone(tz)
    wall = local.replace(tzinfo=None, microsecond=0)
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if local.fold == 1 or first is None or second is None or first <= second:
        return wall  # unambiguous, or already the second pass
    shift = first - second
    # The change of offset (the fall-back instant) lies within `shift` after `instant`.
    low, high = instant, instant + shift
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == first:
            low = middle
        else:
            high = middle
    return (high - shift).astimezone(tz).replace(tzinfo=None, microsecond=0)


def utc_now() -> datetime:
    return datetime.now(UTC)
