"""The window rules against an independent oracle: every minute of DST days enumerated
with zoneinfo, never the planner's own arithmetic."""

from __future__ import annotations

from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest

from etl.windows import complete_up_to, due_windows

MINUTE = timedelta(minutes=1)


@cache
def brute_complete(tz: ZoneInfo, day: datetime) -> dict[datetime, datetime]:
    """For each UTC minute of a day (and a margin): the wall clock then, or, if earlier,
    the first wall minute that will still occur again later (every wall time before the
    answer is over for good), found by enumerating the minutes."""
    begin, end = day - timedelta(hours=12), day + timedelta(hours=36)
    last_seen: dict[datetime, datetime] = {}  # wall minute -> its latest occurrence
    instant = begin - timedelta(hours=6)
    while instant <= end + timedelta(hours=6):
        last_seen[instant.astimezone(tz).replace(tzinfo=None)] = instant
        instant += MINUTE
    walls = sorted(last_seen)
    answer: dict[datetime, datetime] = {}
    instant = begin
    while instant <= end:
        wall = instant.astimezone(tz).replace(tzinfo=None)
        i = bisect_left(walls, wall - timedelta(hours=3))
        while last_seen[walls[i]] <= instant:
            i += 1
        pending = walls[i]
        answer[instant] = min(wall, pending)
        instant += MINUTE
    return answer


DAYS = [
    ("America/New_York", datetime(2024, 3, 10, tzinfo=UTC)),  # spring forward
    ("America/New_York", datetime(2024, 11, 3, tzinfo=UTC)),  # fall back
    ("Europe/London", datetime(2024, 10, 27, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2024, 4, 6, tzinfo=UTC)),  # a 30-minute fall back
    ("America/Costa_Rica", datetime(2024, 11, 3, tzinfo=UTC)),  # no DST at all
]


@pytest.mark.parametrize(("zone", "day"), DAYS)
def test_complete_up_to_agrees_with_enumerating_every_minute(zone: str, day: datetime) -> None:
    """complete_up_to equals, minute by minute over a DST day, the latest wall minute all
    of whose occurrences are past (the repeated hour waits for its second pass)."""
    tz = ZoneInfo(zone)
    wrong = {
        instant: (complete_up_to(instant, tz), expected)
        for instant, expected in brute_complete(tz, day).items()
        if complete_up_to(instant, tz) != expected
    }
    assert not wrong, f"{len(wrong)} minutes disagree, e.g. {sorted(wrong.items())[:3]}"


@pytest.mark.parametrize(("zone", "day"), DAYS)
@pytest.mark.parametrize("delay", [timedelta(minutes=2), timedelta(hours=1)])
def test_due_windows_run_every_few_minutes_cover_the_day_once(
    zone: str, day: datetime, delay: timedelta
) -> None:
    """A pass planned every 7 minutes through a DST day reads contiguous windows, never one
    twice, and after each run covers exactly up to the oracle's complete wall time."""
    tz = ZoneInfo(zone)
    oracle = brute_complete(tz, day)
    position: datetime | None = None
    covered: list[tuple[datetime, datetime]] = []
    now = day
    while now <= day + timedelta(hours=24):
        windows = due_windows(position, now, tz, delay=delay, size=timedelta(minutes=20),
                              initial_lookback=timedelta(hours=3))  # fmt: skip
        for window in windows:
            assert window.start < window.end
            if covered:
                assert window.start == covered[-1][1], "a gap or an overlap"
            covered.append((window.start, window.end))
            position = window.end
        if position is not None and (now - delay) in oracle:
            assert position == max(oracle[now - delay], covered[0][0]), now
        now += timedelta(minutes=7)
    assert covered
