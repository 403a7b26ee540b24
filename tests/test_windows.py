"""Window planning: due windows cover every instant up to now - delay, with no gap and no
window over the size, across DST changes, however often the run happens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.windows import Window, complete_up_to, due_windows, split, wall_clock

NEW_YORK = ZoneInfo("America/New_York")
COSTA_RICA = ZoneInfo("America/Costa_Rica")
HOUR = timedelta(hours=1)


def test_split_cuts_a_range_into_sized_windows_sharing_boundaries() -> None:
    """split() gives consecutive windows of at most the size; the last one may be shorter."""
    start = datetime(2024, 1, 1, 0, 0)
    windows = split(start, start + timedelta(minutes=150), HOUR)
    assert windows == [
        Window(datetime(2024, 1, 1, 0), datetime(2024, 1, 1, 1)),
        Window(datetime(2024, 1, 1, 1), datetime(2024, 1, 1, 2)),
        Window(datetime(2024, 1, 1, 2), datetime(2024, 1, 1, 2, 30)),
    ]
    assert split(start, start, HOUR) == []


def test_new_account_starts_at_initial_lookback() -> None:
    """A pass with no watermark starts `initial_lookback` before now, on the wall clock."""
    now = datetime(2024, 3, 1, 18, 0, 30, tzinfo=UTC)  # 12:00:30 in Costa Rica (UTC-6)
    windows = due_windows(
        None, now, COSTA_RICA, delay=timedelta(minutes=2), size=HOUR,
        initial_lookback=timedelta(hours=3),
    )  # fmt: skip
    assert windows[0].start == datetime(2024, 3, 1, 9, 0, 30)
    assert windows[-1].end == datetime(2024, 3, 1, 11, 58, 30)
    assert len(windows) == 3


def test_nothing_is_due_while_the_clock_is_behind_the_watermark() -> None:
    """After a fall-back the wall clock repeats an hour: no window is planned backwards."""
    # 2024-11-03 06:30 UTC is 01:30 EST, the second 01:30 of that night in New York.
    now = datetime(2024, 11, 3, 6, 30, tzinfo=UTC)
    position = datetime(2024, 11, 3, 1, 58)  # read up to there during the first 01:xx
    assert due_windows(
        position, now, NEW_YORK, delay=timedelta(minutes=2), size=HOUR,
        initial_lookback=HOUR,
    ) == []  # fmt: skip


def _simulate(
    tz: ZoneInfo, start_utc: datetime, steps: list[int], delay: timedelta, size: timedelta
) -> tuple[datetime, list[Window], datetime]:
    """Run the planner at successive instants, moving the watermark like the sync does."""
    now = start_utc
    position: datetime | None = None
    first: datetime | None = None
    read: list[Window] = []
    for minutes in steps:
        now += timedelta(minutes=minutes)
        windows = due_windows(
            position, now, tz, delay=delay, size=size, initial_lookback=timedelta(hours=2)
        )
        if position is None:
            first = wall_clock(now, tz) - timedelta(hours=2)
        for window in windows:
            assert window.end - window.start <= size
            assert position is None or window.start == position
            assert position is None or window.end > position  # never backwards
            read.append(window)
            position = window.end
        if position is None:
            position = first
    assert first is not None
    return first, read, complete_up_to(now - delay, tz)


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(["America/New_York", "Europe/London", "America/Costa_Rica"]),
    start=st.sampled_from(
        [
            datetime(2024, 3, 10, 4, tzinfo=UTC),
            datetime(2024, 11, 3, 3, tzinfo=UTC),
            datetime(2024, 3, 31, 0, tzinfo=UTC),
            datetime(2024, 10, 27, 0, tzinfo=UTC),
        ]
    ),  # fmt: skip
    offset=st.integers(min_value=0, max_value=240),
    steps=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=40),
    delay=st.sampled_from([timedelta(0), timedelta(minutes=2), HOUR, timedelta(hours=24)]),
    size=st.sampled_from([timedelta(minutes=15), HOUR, timedelta(hours=6)]),
)
def test_windows_cover_every_instant_without_gap_across_dst(
    zone: str,
    start: datetime,
    offset: int,
    steps: list[int],
    delay: timedelta,
    size: timedelta,
) -> None:
    """Whatever the run times, the read windows tile [first, now - delay] exactly."""
    tz = ZoneInfo(zone)
    first, read, limit = _simulate(tz, start + timedelta(minutes=offset), steps, delay, size)
    cursor = first
    for window in read:
        assert window.start == cursor  # no gap, no overlap beyond the shared boundary
        cursor = window.end
    # Every wall-clock instant up to now - delay is covered (the cursor may be ahead when
    # the clock went back, never behind).
    assert cursor >= limit


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2024, 3, 10, 6, 59, 59, tzinfo=UTC), datetime(2024, 3, 10, 1, 59, 59)),
        (datetime(2024, 3, 10, 7, 0, 0, tzinfo=UTC), datetime(2024, 3, 10, 3, 0, 0)),
        (datetime(2024, 11, 3, 5, 30, tzinfo=UTC), datetime(2024, 11, 3, 1, 30)),
        (datetime(2024, 11, 3, 6, 30, tzinfo=UTC), datetime(2024, 11, 3, 1, 30)),
    ],
)
def test_wall_clock_follows_dst(instant: datetime, expected: datetime) -> None:
    """The wall clock skips the spring-forward hour and repeats the fall-back hour."""
    assert wall_clock(instant, NEW_YORK) == expected


def test_wall_clock_needs_an_aware_instant() -> None:
    """A naive `now` is a programming error."""
    with pytest.raises(ValueError, match="aware"):
        wall_clock(datetime(2024, 1, 1), NEW_YORK)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # New York, 2024-11-03: 01:00-02:00 happens at 05:00-06:00 UTC (EDT), again at
        # 06:00-07:00 UTC (EST).
        (datetime(2024, 11, 3, 4, 59, 59, tzinfo=UTC), datetime(2024, 11, 3, 0, 59, 59)),
        (datetime(2024, 11, 3, 5, 30, tzinfo=UTC), datetime(2024, 11, 3, 1, 0)),
        (datetime(2024, 11, 3, 5, 59, 59, tzinfo=UTC), datetime(2024, 11, 3, 1, 0)),
        (datetime(2024, 11, 3, 6, 30, tzinfo=UTC), datetime(2024, 11, 3, 1, 30)),
        (datetime(2024, 11, 3, 7, 0, tzinfo=UTC), datetime(2024, 11, 3, 2, 0)),
        (datetime(2024, 3, 10, 7, 0, tzinfo=UTC), datetime(2024, 3, 10, 3, 0)),
    ],
)
def test_a_repeated_hour_is_complete_only_after_its_second_pass(
    instant: datetime, expected: datetime
) -> None:
    """During the first 01:xx of a fall-back, nothing of the repeated hour is complete."""
    assert complete_up_to(instant, NEW_YORK) == expected


def test_a_pass_waits_until_a_minimum_is_due() -> None:
    """Less than min_window due: nothing to read yet (a run right after another costs no
    request); once it is due, the whole range is read, nothing skipped."""
    tz = ZoneInfo("America/Costa_Rica")
    now = datetime(2024, 6, 3, 18, 0, tzinfo=UTC)
    mark = wall_clock(now, tz) - timedelta(minutes=2, seconds=30)
    args = {
        "delay": timedelta(minutes=2),
        "size": timedelta(hours=1),
        "initial_lookback": timedelta(hours=24),
        "min_window": timedelta(minutes=1),
    }
    assert due_windows(mark, now, tz, **args) == []
    later = now + timedelta(seconds=40)
    (window,) = due_windows(mark, later, tz, **args)
    assert window.start == mark
    assert window.end == wall_clock(later - timedelta(minutes=2), tz)
