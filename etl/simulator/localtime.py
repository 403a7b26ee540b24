"""Wall-clock rendering of UTC instants in one IANA zone, fast and exact across DST."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class LocalClock:
    """Renders UTC epoch seconds as naive wall-clock strings of one IANA zone, fast.

    The UTC offset is looked up once per UTC hour; an hour that holds a transition is
    rendered second by second through zoneinfo, so DST is exact.
    """

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self._offsets: dict[int, int | None] = {}
        self._minutes: dict[int, str] = {}

    def _offset(self, hour: int) -> int | None:
        offset = self._offsets.get(hour, -1)
        if offset == -1:
            first = self._utcoffset(hour * 3600)
            offset = first if first == self._utcoffset(hour * 3600 + 3599) else None
            self._offsets[hour] = offset
        return offset

    def _utcoffset(self, ts: int) -> int:
        delta = datetime.fromtimestamp(ts, self.zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    def local_struct(self, ts: int) -> time.struct_time:
        """The local wall-clock fields of `ts` (as `time.gmtime` of the shifted instant)."""
        offset = self._offset(ts // 3600)
        if offset is None:
            offset = self._utcoffset(ts)
        return time.gmtime(ts + offset)

    def render(self, ts: int) -> str:
        """`ts` as `YYYY-MM-DD HH:MM:SS` on this zone's wall clock."""
        offset = self._offsets.get(ts // 3600, -1)
        if offset == -1:
            offset = self._offset(ts // 3600)
        if offset is None:
            return time.strftime(_TIME_FORMAT, self.local_struct(ts))
        minute, second = divmod(ts + offset, 60)
        prefix = self._minutes.get(minute)
        if prefix is None:
            if len(self._minutes) > 100_000:
                self._minutes.clear()
            prefix = self._minutes[minute] = time.strftime(
                "%Y-%m-%d %H:%M:", time.gmtime(minute * 60)
            )
        return f"{prefix}{second:02d}"

    def to_utc_bounds(self, local: str) -> tuple[int, int]:
        """Earliest and latest UTC instant whose wall clock may read `local` (both folds)."""
        naive = datetime.fromisoformat(local)
        stamps = [int(naive.replace(tzinfo=self.zone, fold=fold).timestamp()) for fold in (0, 1)]
        return min(stamps), max(stamps)
