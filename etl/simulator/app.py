"""The request handler of the simulated `getCdrs.php`: query parameters in, an answer out.

Pure apart from its injected clock and its caches; `server.py` puts it on a socket.

Modes (callmyway/API.md):

- by date: `dateStart`, `dateEnd` (`YYYY-MM-DD HH:MM:SS`, the account's local wall clock,
  both bounds inclusive unless the account's `bounds` says otherwise) filter on
  `detect_time` (the `filter_field` option picks `connect_time` or `disconnect_time`
  instead); `ini` skips rows, `cant` limits them (no
  `cant`: all the rest); rows ordered by the filter field, then callid.
- `live=1`: legs in progress at the sim clock (ringing: no `connect_time`; talking:
  `connect_time` set, `disconnect_time` empty) plus legs that ended in the last few
  seconds; `fullAccount=1` the whole account, otherwise only the legs of the endpoint
  logged in with (as caller or callee).
- `recent=1`: completed CDRs whose filter instant lies in the 24 h before the sim clock,
  unpaged (and never capped by `page_cap`).

By-date and recent answers hold only completed CDRs (the leg ended, and is not hidden as
late), in the version current at the sim clock. Errors (bad credentials, bad dates, bad
paging, unknown format) come as HTTP 200 with an error object, as the real server may.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import orjson

from .data import CallGenerator, Record
from .faults import FaultDice, Faults, RequestFate
from .render import CONTENT_TYPES, ENVELOPES, FORMATS, Envelope, Format, render, render_error
from .store import FILTER_FIELDS, ORDERS, AccountStore, FilterField, Order

Action = Literal["send", "drop", "truncate"]
Bounds = Literal["inclusive", "exclusive", "start_inclusive", "end_inclusive"]
BOUNDS: tuple[Bounds, ...] = ("inclusive", "exclusive", "start_inclusive", "end_inclusive")
Clock = Callable[[], datetime]
BAD_CREDENTIALS = "Invalid username or password"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_HTML = "text/html; charset=UTF-8"
_ERROR_TEXTS = (
    "Error: database busy",
    "Error: Too many connections",
    "Error de conexión con la base de datos",
)
_FATAL_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body>\n"
    b"<h1>Fatal error</h1>\n<p><b>Fatal error</b>: Uncaught PDOException: SQLSTATE[HY000] "
    b"[2002] Connection refused in /var/www/html/getCdrs.php:42</p>\n</body></html>\n"
)


@dataclass(frozen=True, slots=True)
class SimAccount:
    """One simulated account: its credentials, clock, and the seed of its calls."""

    username: str = "8569841"
    password: str = "01234567891"
    timezone: str = "America/Costa_Rica"
    seed: int = 1
    calls_per_hour: float = 60.0
    agents: int = 6
    order: Order = "sorted"
    """How by-date answers are ordered: `sorted` (by the filter field, then callid: a
    stable ORDER BY), `shuffled_ties` (rows sharing the filter field's second in a fresh
    random order on every request, as MySQL's ORDER BY ... LIMIT may), `unordered` (the
    window's rows in a fresh random order on every request: no ORDER BY)."""

    bounds: Bounds = "inclusive"
    """Which ends of a by-date range the server includes (API.md: not stated): both
    (`inclusive`, SQL's BETWEEN), neither (`exclusive`), `start_inclusive` (`>= AND <`)
    or `end_inclusive` (`> AND <=`)."""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.bounds not in BOUNDS:
            raise ValueError(f"bounds must be one of {', '.join(BOUNDS)}, not {self.bounds!r}")


@dataclass(frozen=True, slots=True)
class SimResponse:
    """An answer: `send` it, `drop` the connection unanswered, or `truncate` the body
    (promise its full length, send half, close). `delay` seconds pass before any of it."""

    status: int
    headers: dict[str, str]
    body: bytes
    action: Action = "send"
    delay: float = 0.0


@dataclass
class SimStats:
    """What the simulator did: requests by mode, rows served, faults injected by kind."""

    requests: int = 0
    rows: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)
    """By-date requests answered, by their `dateStart`."""

    def copy(self) -> SimStats:
        return SimStats(
            self.requests, self.rows, dict(self.modes), dict(self.faults), dict(self.windows)
        )


class Simulator:
    """A deterministic, misbehaving getCdrs.php over generated accounts."""

    def __init__(
        self,
        accounts: Sequence[SimAccount] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        faults: Faults | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        filter_field: FilterField = "detect_time",
        envelope: Envelope = "bare",
        max_cached_legs: int = 100_000,
    ) -> None:
        """`start`/`end` (aware) bound the calls (default: from 30 days before the clock's
        first reading, open-ended); `seed` drives the request faults; each account's own
        seed drives its calls. `clock` returns the sim's aware "now" (default: real time).
        `envelope` wraps json answers: a bare array, or `{"cdrs": [...]}` / `{"data": [...]}`.
        `max_cached_legs` bounds each account's caches (about 0.8 KiB a leg); raise it to
        `warm()` a whole benchmark data set ahead."""
        if filter_field not in FILTER_FIELDS:
            raise ValueError(f"filter_field must be one of {FILTER_FIELDS}")
        if envelope not in ENVELOPES:
            raise ValueError(f"envelope must be one of {ENVELOPES}")
        self.envelope: Envelope = envelope
        self.clock: Clock = clock or _real_clock
        self.faults = faults or Faults.none()
        first = start if start is not None else self.now() - timedelta(days=30)
        self.start, self.end = _aware(first, "start"), _aware(end, "end") if end else None
        self._dice = FaultDice(self.faults, seed)
        self._stats = SimStats()
        self._stats_lock = threading.Lock()
        self._accounts: dict[str, tuple[SimAccount, AccountStore]] = {}
        self._order_requests: dict[str, int] = {}
        for account in accounts if accounts is not None else [SimAccount()]:
            if account.username in self._accounts:
                raise ValueError(f"account {account.username} given twice")
            generator = CallGenerator(
                account.username,
                account.seed,
                account.timezone,
                account.calls_per_hour,
                account.agents,
                start=int(self.start.timestamp()),
                end=int(self.end.timestamp()) if self.end else None,
            )
            store = AccountStore(generator, self.faults, filter_field, max_cached_legs)
            self._accounts[account.username] = (account, store)

    @property
    def accounts(self) -> list[SimAccount]:
        return [account for account, _ in self._accounts.values()]

    @property
    def stats(self) -> SimStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            return self._stats.copy()

    def now(self) -> datetime:
        return _aware(self.clock(), "clock()")

    # -- the handler ------------------------------------------------------------------------

    def handle(self, params: Mapping[str, str]) -> SimResponse:
        """Answer one request, given its query parameters."""
        fate = self._dice.next()
        delay = self.faults.slow_seconds if fate.slow else 0.0
        self._count(fate)
        if fate.kind is not None and fate.kind != "truncate":
            return replace(self._fault(fate), delay=delay)
        fmt = cast(Format, params.get("format", "json").lower())
        if fmt not in FORMATS:
            return _error("Invalid format", "json")
        answer = self._answer(params, fmt, self.now().timestamp())
        action: Action = "truncate" if fate.kind == "truncate" else "send"
        return replace(answer, action=action, delay=delay)

    def _answer(self, params: Mapping[str, str], fmt: Format, now: float) -> SimResponse:
        username = params.get("username", "")
        entry = self._accounts.get(username)
        if entry is None or params.get("password") != entry[0].password:
            return _error(BAD_CREDENTIALS, fmt)
        store = entry[1]
        if params.get("live") == "1":
            endpoint = None if params.get("fullAccount") == "1" else username
            mode, rows = "live", store.live(now, endpoint)
        elif params.get("recent") == "1":
            mode, rows = "recent", store.recent(now)
        else:
            answer = self._by_date(entry[0], store, params, now)
            if isinstance(answer, str):  # a request the real server answers with an error
                return _error(answer, fmt)
            mode, rows = "date", answer
            with self._stats_lock:
                start = params.get("dateStart", "")
                self._stats.windows[start] = self._stats.windows.get(start, 0) + 1
        with self._stats_lock:
            self._stats.modes[mode] = self._stats.modes.get(mode, 0) + 1
            self._stats.rows += len(rows)
        body = render(rows, fmt, self.envelope)
        return SimResponse(200, {"Content-Type": CONTENT_TYPES[fmt]}, body)

    def _by_date(
        self, account: SimAccount, store: AccountStore, params: Mapping[str, str], now: float
    ) -> list[bytes] | str:
        """The rows of a by-date request, or the error message it gets."""
        lo, hi = params.get("dateStart", ""), params.get("dateEnd", "")
        if not (_valid_date(lo) and _valid_date(hi)):
            return "Invalid date format, expected yyyy-mm-dd HH:ii:ss"
        paging = _paging(params.get("ini"), params.get("cant"))
        if paging is None:
            return "Invalid ini or cant"
        ini, cant = paging
        lo, hi = _included(lo, hi, account.bounds)
        cap = self.faults.page_cap
        if cap is not None:
            cant = cap if cant is None else min(cant, cap)
        if account.order == "sorted":
            rows = store.select(lo, hi, now)
        else:
            rows = store.select_reordered(lo, hi, now, self._order_dice(account), account.order)
        return rows[ini : ini + cant] if cant is not None else rows[ini:]

    def _order_dice(self, account: SimAccount) -> random.Random:
        """The dice of one by-date request's order: the account's seed and the number of
        its reordered requests so far, so a run is reproducible."""
        with self._stats_lock:
            n = self._order_requests.get(account.username, 0)
            self._order_requests[account.username] = n + 1
        return random.Random(f"order:{account.seed}:{account.username}:{n}")

    def _fault(self, fate: RequestFate) -> SimResponse:
        if fate.kind == "error_5xx":
            status = (500, 502, 503, 504)[int(fate.pick * 4)]
            body = f"<html><body><h1>{status} Server Error</h1></body></html>\n".encode()
            return SimResponse(status, {"Content-Type": _HTML}, body)
        if fate.kind == "rate_429":
            wait = self.faults.retry_after
            headers = {"Content-Type": _HTML, "Retry-After": f"{wait:g}"}
            return SimResponse(429, headers, b"Too Many Requests\n")
        if fate.kind == "drop":
            return SimResponse(0, {}, b"", action="drop")
        if fate.kind == "empty_200":
            return SimResponse(200, {"Content-Type": _HTML}, b"")
        if fate.kind == "error_200_text":
            text = _ERROR_TEXTS[int(fate.pick * len(_ERROR_TEXTS))]
            return SimResponse(200, {"Content-Type": _HTML}, text.encode())
        return SimResponse(200, {"Content-Type": _HTML}, _FATAL_PAGE)

    def _count(self, fate: RequestFate) -> None:
        with self._stats_lock:
            self._stats.requests += 1
            for kind in filter(None, (fate.kind, "slow" if fate.slow else None)):
                self._stats.faults[kind] = self._stats.faults.get(kind, 0) + 1

    # -- ground truth -----------------------------------------------------------------------

    def truth(self, username: str) -> dict[str, Record]:
        """Every CDR of the account served at the sim clock (completed, not hidden as late),
        over the whole data range: callid (as str) -> the record as served now."""
        return _by_callid(self._store(username).served(self.now().timestamp()))

    def truth_between(
        self, username: str, start_local: str | datetime, end_local: str | datetime
    ) -> dict[str, Record]:
        """What a by-date query over these local bounds (inclusive) holds at the sim clock,
        read whole (no paging, no page cap)."""
        lo, hi = _local(start_local), _local(end_local)
        return _by_callid(self._store(username).select(lo, hi, self.now().timestamp()))

    def warm(self, username: str, start: datetime, end: datetime) -> int:
        """Generate (and cache, within the cache bound) the hours between two aware instants
        ahead of time, e.g. before a benchmark; returns the number of legs."""
        store = self._store(username)
        hours = store.hours(start.timestamp(), end.timestamp(), end.timestamp())
        return sum(len(store.bucket(hour)) for hour in hours)

    def _store(self, username: str) -> AccountStore:
        entry = self._accounts.get(username)
        if entry is None:
            raise KeyError(f"no simulated account {username}")
        return entry[1]


def _real_clock() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime")
    return moment


def _error(message: str, fmt: Format) -> SimResponse:
    return SimResponse(200, {"Content-Type": CONTENT_TYPES[fmt]}, render_error(message, fmt))


def _included(lo: str, hi: str, bounds: Bounds) -> tuple[str, str]:
    """The inclusive range of seconds a by-date range covers under these bounds (times
    have whole seconds, so an excluded bound is the second next to it included)."""
    second = timedelta(seconds=1)
    if bounds in ("exclusive", "end_inclusive"):
        lo = f"{datetime.fromisoformat(lo) + second:%Y-%m-%d %H:%M:%S}"
    if bounds in ("exclusive", "start_inclusive"):
        hi = f"{datetime.fromisoformat(hi) - second:%Y-%m-%d %H:%M:%S}"
    return lo, hi


def _valid_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _paging(ini: str | None, cant: str | None) -> tuple[int, int | None] | None:
    """(offset, limit or None: all) from the raw parameters; None when they are bad."""
    values: list[int | None] = []
    for text in (ini, cant):
        if text is None or text == "":
            values.append(None)
        elif text.isdigit():
            values.append(int(text))
        else:
            return None
    return values[0] or 0, values[1]


def _local(moment: str | datetime) -> str:
    if isinstance(moment, datetime):
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if not _valid_date(moment):
        raise ValueError(f"not a local time YYYY-MM-DD HH:MM:SS: {moment!r}")
    return moment


def _by_callid(rows: Sequence[bytes]) -> dict[str, Record]:
    records: dict[str, Record] = {}
    for row in rows:
        record: dict[str, Any] = orjson.loads(row)
        records[str(record["callid"])] = record
    return records
