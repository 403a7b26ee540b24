"""The CDRs of one simulated account, as the server sees them at a given instant.

Legs come from `data.CallGenerator` one hour bucket at a time and are kept in an LRU cache
(bounded by a number of legs: the generator can always make them again). Each leg is kept
as the JSON bytes of its final record, plus the earlier version when it is one of the CDRs
that change, plus the instants that decide what is served at a sim-clock instant `now`:

    served    end <= now and visible_at <= now     (visible_at = end, or end + late_seconds)
    version   old while now < change_at, then new  (change_at = end + change_after_seconds)

A by-date query is answered from a cached, sorted list of the legs in its range (sorted by
the filter field's local string, then callid, like `ORDER BY`) and a view of it for `now`.
The view only changes when `now` crosses one of the legs' instants, so it is rebuilt only
then: paging through a window costs a slice per page, not a scan.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import orjson

from .data import MAX_CALL_SPAN, CallGenerator, Leg, Record, earlier_version, live_version
from .faults import Faults

FilterField = Literal["detect_time", "connect_time", "disconnect_time"]
Order = Literal["sorted", "shuffled_ties", "unordered"]
ORDERS: tuple[Order, ...] = ("sorted", "shuffled_ties", "unordered")
FILTER_FIELDS: tuple[FilterField, ...] = ("detect_time", "connect_time", "disconnect_time")
JUST_ENDED = 5
"""A live answer also shows legs that ended less than this many seconds ago."""
_NEVER = float("inf")


@dataclass(slots=True)
class ServedLeg:
    """One leg as the server holds it: its order key, instants, and JSON versions."""

    callid: str
    key: str
    """The filter field's local wall-clock string ('' when unset: never matches a range)."""
    at: int | None
    """The filter field's UTC instant."""
    visible_at: float
    change_at: float
    new: bytes
    old: bytes | None
    duplicated: bool

    def current(self, now: float) -> bytes:
        """The version served at `now`."""
        return self.old if self.old is not None and now < self.change_at else self.new


@dataclass(slots=True)
class _Query:
    """A by-date range: its legs in order, the instants at which what is served changes,
    and the rows served after the first `events_passed` of them."""

    legs: list[ServedLeg]
    events: list[float]
    covered_until: int
    """The last hour bucket read: a later one holds no leg ended before that hour ends."""
    view: list[bytes] = field(default_factory=list)
    events_passed: int = -1


def view_of(legs: Iterable[ServedLeg], now: float) -> list[bytes]:
    """The rows served at `now`, in order, duplicates included."""
    rows: list[bytes] = []
    for leg in legs:
        if leg.visible_at <= now:
            row = leg.current(now)
            rows.append(row)
            if leg.duplicated:
                rows.append(row)
    return rows


class AccountStore:
    """Generation, caches and time-dependent views for one account.

    Memory stays bounded: the hour buckets and the by-date queries each keep at most about
    `max_cached_legs` legs (about 0.8 KiB each), least recently used first out."""

    def __init__(
        self,
        generator: CallGenerator,
        faults: Faults,
        filter_field: FilterField = "detect_time",
        max_cached_legs: int = 100_000,
        max_cached_queries: int = 16,
    ) -> None:
        self.generator = generator
        self.faults = faults
        self.filter_field: FilterField = filter_field
        self._max_legs, self._max_queries = max_cached_legs, max_cached_queries
        self._buckets: OrderedDict[int, list[ServedLeg]] = OrderedDict()
        self._raw: OrderedDict[int, list[Leg]] = OrderedDict()
        self._queries: OrderedDict[tuple[str, str], _Query] = OrderedDict()
        self._cached_legs = 0
        self._query_legs = 0
        self._lock = threading.RLock()

    # -- buckets ----------------------------------------------------------------------------

    def hours(self, first_instant: float, last_instant: float, now: float) -> range:
        """The hour buckets that may hold legs whose filter instant lies between the two
        instants, clipped to the data range and to the calls that can have ended by `now`."""
        first = int(first_instant - MAX_CALL_SPAN) // 3600
        last = min(int(last_instant), int(now)) // 3600
        gen = self.generator
        if gen.start is not None:
            first = max(first, gen.start // 3600)
        if gen.end is not None:
            last = min(last, (gen.end - 1) // 3600)
        return range(first, last + 1)

    def bucket(self, hour: int) -> list[ServedLeg]:
        """The served form of one hour's legs (LRU cache bounded by a number of legs)."""
        with self._lock:
            legs = self._buckets.get(hour)
            if legs is not None:
                self._buckets.move_to_end(hour)
                return legs
            legs = self._served_form(hour, self.generator.hour(hour))
            self._buckets[hour] = legs
            self._cached_legs += len(legs)
            while self._cached_legs > self._max_legs and len(self._buckets) > 1:
                _, evicted = self._buckets.popitem(last=False)
                self._cached_legs -= len(evicted)
            return legs

    def raw_bucket(self, hour: int) -> list[Leg]:
        """The generated legs of one hour (a small cache: live answers need few hours)."""
        with self._lock:
            legs = self._raw.get(hour)
            if legs is None:
                legs = self._raw[hour] = self.generator.hour(hour)
                while len(self._raw) > 8:
                    self._raw.popitem(last=False)
            else:
                self._raw.move_to_end(hour)
            return legs

    def _served_form(self, hour: int, legs: list[Leg]) -> list[ServedLeg]:
        faults, gen = self.faults, self.generator
        rng = random.Random(f"cdr-faults:{gen.seed}:{gen.username}:{hour}")
        served: list[ServedLeg] = []
        for leg in legs:
            late, change, duplicate = rng.random(), rng.random(), rng.random()
            delay = faults.late_seconds if late < faults.late_rate else 0.0
            at = _instant(leg, self.filter_field)
            old: bytes | None = None
            change_at = _NEVER
            if change < faults.change_rate:
                old = _compact_json(earlier_version(leg, rng, gen.clock))
                change_at = leg.end + faults.change_after_seconds
            served.append(
                ServedLeg(
                    callid=leg.callid,
                    key=leg.record[self.filter_field] if at is not None else "",
                    at=at,
                    visible_at=leg.end + delay,
                    change_at=change_at,
                    new=_compact_json(leg.record),
                    old=old,
                    duplicated=duplicate < faults.duplicate_rate,
                )
            )
        return served

    # -- answers ----------------------------------------------------------------------------

    def select(self, lo: str, hi: str, now: float) -> list[bytes]:
        """Rows of a by-date query (`lo` <= filter field <= `hi`, local strings) at `now`."""
        with self._lock:
            query = self._queries.get((lo, hi))
            hours = self._hours_between(lo, hi, now)
            if query is None or query.covered_until < hours.stop - 1:
                if query is not None:
                    self._query_legs -= len(query.legs)
                query = self._queries[(lo, hi)] = self._build_query(lo, hi, hours)
                self._query_legs += len(query.legs)
                self._queries.move_to_end((lo, hi))
                while len(self._queries) > 1 and (
                    len(self._queries) > self._max_queries or self._query_legs > self._max_legs
                ):
                    _, evicted = self._queries.popitem(last=False)
                    self._query_legs -= len(evicted.legs)
            else:
                self._queries.move_to_end((lo, hi))
            passed = bisect_right(query.events, now)
            if passed != query.events_passed:
                query.view, query.events_passed = view_of(query.legs, now), passed
            return query.view

    def select_reordered(
        self, lo: str, hi: str, now: float, rng: random.Random, order: Order
    ) -> list[bytes]:
        """The rows of `select`, reordered by `rng`: within each run of rows sharing the
        filter field's second (`shuffled_ties`), or all of them (`unordered`). A duplicated
        row keeps its copy next to it (the duplicated-rows quirk is not an order quirk)."""
        with self._lock:
            self.select(lo, hi, now)
            legs = [leg for leg in self._queries[(lo, hi)].legs if leg.visible_at <= now]
        if order == "unordered":
            rng.shuffle(legs)
        else:
            start = 0
            for i in range(1, len(legs) + 1):
                if i == len(legs) or legs[i].key != legs[start].key:
                    tie = legs[start:i]
                    rng.shuffle(tie)
                    legs[start:i] = tie
                    start = i
        return view_of(legs, now)

    def _hours_between(self, lo: str, hi: str, now: float) -> range:
        clock = self.generator.clock
        return self.hours(clock.to_utc_bounds(lo)[0] - 3600, clock.to_utc_bounds(hi)[1] + 3600, now)

    def _build_query(self, lo: str, hi: str, hours: range) -> _Query:
        legs = [leg for hour in hours for leg in self.bucket(hour) if lo <= leg.key <= hi]
        legs.sort(key=_order)
        events = sorted(
            [leg.visible_at for leg in legs] + [leg.change_at for leg in legs if leg.old]
        )
        return _Query(legs, events, hours.stop - 1)

    def recent(self, now: float) -> list[bytes]:
        """Rows of the last 24 hours before `now` (by the filter field's instant)."""
        since = now - 86_400
        with self._lock:
            legs = [
                leg
                for hour in self.hours(since, now, now)
                for leg in self.bucket(hour)
                if leg.at is not None and since <= leg.at <= now
            ]
        legs.sort(key=_order)
        return view_of(legs, now)

    def served(self, now: float) -> list[bytes]:
        """Every row served at `now`, over the whole data range (unordered)."""
        gen = self.generator
        first = float(gen.start) if gen.start is not None else now - 30 * 86_400
        with self._lock:
            return view_of(
                (leg for h in self.hours(first, now, now) for leg in self.bucket(h)), now
            )

    def live(self, now: float, endpoint: str | None) -> list[bytes]:
        """Legs in progress at `now` (and those that ended just before), of the account or of
        one endpoint, ordered by start."""
        second = int(now)
        legs = [
            leg
            for hour in self.hours(now, now, now)
            for leg in self.raw_bucket(hour)
            if leg.start <= second < leg.end + JUST_ENDED
            and (endpoint is None or endpoint in leg.users)
        ]
        legs.sort(key=lambda leg: (leg.start, leg.callid))
        clock = self.generator.clock
        return [orjson.dumps(live_version(leg, second, clock)) for leg in legs]


def _compact_json(record: Record) -> bytes:
    # A copy of exactly the right size: orjson's result keeps its whole write buffer
    # (about 8 KiB) allocated, which for a kept record is 20 times its size.
    return memoryview(orjson.dumps(record)).tobytes()


def _order(leg: ServedLeg) -> tuple[str, str]:
    return leg.key, leg.callid


def _instant(leg: Leg, field_name: FilterField) -> int | None:
    if field_name == "detect_time":
        return leg.start
    if field_name == "connect_time":
        return leg.connect
    return leg.end
