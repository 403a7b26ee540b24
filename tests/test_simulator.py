"""The bundled getCdrs.php simulator, over real HTTP on loopback (no mocks)."""

from __future__ import annotations

import csv
import io
import itertools
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal

import httpx
import orjson
import pytest

from etl.simulator import Faults, SimAccount, Simulator, SimulatorServer
from etl.simulator.data import CallGenerator

USER, PASSWORD = "8569841", "01234567891"
CREDENTIALS = {"username": USER, "password": PASSWORD}
NOW = datetime(2024, 3, 12, 18, 0, tzinfo=UTC)  # a Tuesday, noon in Costa Rica (UTC-6)
CR = timedelta(hours=-6)
Record = dict[str, Any]


class ManualClock:
    """The sim clock, moved by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def local(moment: datetime) -> str:
    """A UTC instant on Costa Rica's wall clock (no DST there)."""
    return (moment.astimezone(UTC) + CR).strftime("%Y-%m-%d %H:%M:%S")


def make_sim(
    faults: Faults | None = None,
    clock: ManualClock | None = None,
    days: float = 1.0,
    seed: int = 7,
    **account: Any,
) -> Simulator:
    clock = clock or ManualClock()
    return Simulator(
        [SimAccount(seed=seed, **account)],
        start=clock.now - timedelta(days=days),
        faults=faults,
        clock=clock,
        seed=seed,
    )


@contextmanager
def serving(sim: Simulator) -> Iterator[tuple[str, httpx.Client]]:
    with SimulatorServer(sim) as server, httpx.Client(timeout=10) as client:
        yield server.url, client


def get(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    return client.get(url, params={**CREDENTIALS, **params})


def read_all(
    client: httpx.Client, url: str, start: str, end: str, page: int = 1000
) -> list[Record]:
    """A by-date window read whole the careful way: `ini += len(page)` until an empty page."""
    rows: list[Record] = []
    while True:
        params = {"dateStart": start, "dateEnd": end, "ini": len(rows), "cant": page}
        batch = orjson.loads(get(client, url, **params, format="json").content)
        if not batch:
            return rows
        rows.extend(batch)


def by_callid(rows: list[Record]) -> dict[str, Record]:
    return {str(row["callid"]): row for row in rows}


WINDOW = (local(NOW - timedelta(hours=6)), local(NOW))


def test_same_seed_same_records() -> None:
    """Two simulators with one seed serve the same records; another seed serves others."""
    reads = []
    for seed in (7, 7, 8):
        with serving(make_sim(seed=seed)) as (url, client):
            reads.append(read_all(client, url, *WINDOW))
    assert reads[0] == reads[1]
    assert len(reads[0]) > 100
    assert by_callid(reads[0]).keys() != by_callid(reads[2]).keys()


class _Table(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def decode(body: bytes, fmt: str) -> list[dict[str, str]]:
    """Rows of any format as text cells, with nulls and missing fields dropped."""
    if fmt == "json":
        rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in orjson.loads(body)]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(body.decode())))
    else:
        table = _Table()
        table.feed(body.decode())
        header, *cells = table.rows
        rows = [dict(zip(header, row, strict=True)) for row in cells]
    return [{k: v for k, v in row.items() if v != ""} for row in rows]


def test_formats_carry_the_same_records() -> None:
    """json, csv and html answers to one query hold the same records, field for field."""
    params = {"dateStart": WINDOW[0], "dateEnd": WINDOW[1]}
    with serving(make_sim()) as (url, client):
        answers = {fmt: get(client, url, **params, format=fmt) for fmt in ("json", "csv", "html")}
    assert answers["csv"].headers["content-type"].startswith("text/csv")
    assert answers["html"].headers["content-type"].startswith("text/html")
    decoded = {fmt: decode(answer.content, fmt) for fmt, answer in answers.items()}
    assert len(decoded["json"]) > 100
    assert decoded["json"] == decoded["csv"] == decoded["html"]
    names = {row.get("name_endpoint_dnis") for row in decoded["html"]}
    assert names & {"IVR <Principal>", "Soporte, Nivel 2", "Ventas & Cobros"}  # escaped, quoted


def test_paging_reproduces_the_window() -> None:
    """Pages of `cant` rows stepped by `ini` give exactly one whole read, in the same order."""
    sim = make_sim()
    with serving(sim) as (url, client):
        paged = read_all(client, url, *WINDOW, page=37)
        whole = orjson.loads(get(client, url, dateStart=WINDOW[0], dateEnd=WINDOW[1]).content)
    assert paged == whole
    assert by_callid(paged) == sim.truth_between(USER, *WINDOW)
    keys = [(row["detect_time"], str(row["callid"])) for row in paged]
    assert keys == sorted(keys)


def test_page_cap_returns_short_pages_before_the_end() -> None:
    """With page_cap, a page holds fewer rows than `cant` although more rows follow."""
    sim = make_sim(Faults(page_cap=50))
    with serving(sim) as (url, client):
        first = orjson.loads(
            get(client, url, dateStart=WINDOW[0], dateEnd=WINDOW[1], ini=0, cant=200).content
        )
        second = orjson.loads(
            get(client, url, dateStart=WINDOW[0], dateEnd=WINDOW[1], ini=50, cant=200).content
        )
        everything = read_all(client, url, *WINDOW, page=200)
    assert len(first) == 50
    assert second
    assert by_callid(everything) == sim.truth_between(USER, *WINDOW)


@pytest.mark.parametrize("fmt", ["json", "csv", "html"])
@pytest.mark.parametrize(
    "credentials",
    [{"username": USER, "password": "99999999999"}, {"username": "1234567", "password": PASSWORD}],
)
def test_wrong_credentials_are_an_error_in_a_200(fmt: str, credentials: dict[str, str]) -> None:
    """Bad credentials answer HTTP 200 with an error, in the format asked for, not as no data."""
    with serving(make_sim()) as (url, client):
        answer = client.get(url, params={**credentials, "recent": 1, "format": fmt})
    assert answer.status_code == 200
    if fmt == "json":
        assert answer.json() == {"error": "Invalid username or password"}
    else:
        assert decode(answer.content, fmt) == [{"error": "Invalid username or password"}]


@pytest.mark.parametrize(
    "params",
    [
        {"dateStart": WINDOW[0]},
        {"dateStart": "2024-13-01 00:00:00", "dateEnd": WINDOW[1]},
        {"dateStart": "2024-03-12T00:00:00", "dateEnd": WINDOW[1]},
        {"dateStart": "yesterday", "dateEnd": WINDOW[1]},
        {"dateStart": WINDOW[0], "dateEnd": WINDOW[1], "ini": "-1"},
        {"dateStart": WINDOW[0], "dateEnd": WINDOW[1], "cant": "ten"},
    ],
)
def test_bad_dates_or_paging_are_an_error_in_a_200(params: dict[str, str]) -> None:
    """A missing or malformed date, ini or cant answers HTTP 200 with an error object."""
    with serving(make_sim()) as (url, client):
        answer = get(client, url, **params)
    assert answer.status_code == 200
    assert "error" in answer.json()


def _one_request(faults: Faults) -> httpx.Response:
    with serving(make_sim(faults)) as (url, client):
        return get(client, url, dateStart=WINDOW[0], dateEnd=WINDOW[1], cant=10)


def test_fault_5xx() -> None:
    """error_5xx answers a server error status."""
    assert 500 <= _one_request(Faults(error_5xx=1)).status_code <= 504


@pytest.mark.parametrize(("retry_after", "header"), [(1.0, "1"), (0.0, "0"), (2.5, "2.5")])
def test_fault_429_with_retry_after(retry_after: float, header: str) -> None:
    """rate_429 answers 429 with the configured Retry-After, zero included."""
    answer = _one_request(Faults(rate_429=1, retry_after=retry_after))
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == header


def test_fault_drop_is_a_connection_error() -> None:
    """drop closes the connection unanswered: httpx raises a transport error."""
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        _one_request(Faults(drop=1))


def test_fault_truncate_is_a_read_error() -> None:
    """truncate sends less body than its Content-Length: httpx raises a protocol error."""
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete message body"):
        _one_request(Faults(truncate=1))


def test_fault_error_text_in_a_200() -> None:
    """error_200_text answers HTTP 200 with a plain error text instead of JSON."""
    answer = _one_request(Faults(error_200_text=1))
    assert answer.status_code == 200
    assert answer.text.startswith("Error")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.content)


def test_fault_error_html_in_a_200() -> None:
    """error_200_html answers HTTP 200 with an HTML error page (no table)."""
    answer = _one_request(Faults(error_200_html=1))
    assert answer.status_code == 200
    assert "<html>" in answer.text
    assert "<table" not in answer.text


def test_fault_empty_body_in_a_200() -> None:
    """empty_200 answers HTTP 200 with an empty body."""
    answer = _one_request(Faults(empty_200=1))
    assert answer.status_code == 200
    assert answer.content == b""


@pytest.mark.parametrize("envelope", ["cdrs", "data"])
def test_json_envelope_option(envelope: Literal["cdrs", "data"]) -> None:
    """The envelope option wraps the same json array under a `cdrs` or `data` key."""
    clock = ManualClock()
    wrapped = Simulator(
        [SimAccount(seed=7)], start=NOW - timedelta(days=1), clock=clock, envelope=envelope
    )
    params = {"dateStart": WINDOW[0], "dateEnd": WINDOW[1], "cant": 50}
    with serving(wrapped) as (url, client):
        body = get(client, url, **params).json()
    with serving(make_sim()) as (url, client):
        bare = get(client, url, **params).json()
    assert body == {envelope: bare}


def test_fault_slow() -> None:
    """slow delays the answer by slow_seconds, then answers normally."""
    started = time.perf_counter()
    answer = _one_request(Faults(slow=1, slow_seconds=0.2))
    assert time.perf_counter() - started >= 0.2
    assert len(answer.json()) == 10


def test_request_faults_are_reproducible_and_counted() -> None:
    """The same seed gives the same sequence of request fates; stats count them by kind."""
    faults = Faults(error_5xx=0.2, rate_429=0.2, error_200_text=0.2, retry_after=0)
    runs = []
    for _ in range(2):
        sim = make_sim(faults)
        with serving(sim) as (url, client):
            params = {"dateStart": WINDOW[0], "dateEnd": WINDOW[1], "cant": 1}
            runs.append([get(client, url, **params).status_code for _ in range(30)])
        stats = sim.stats
    assert runs[0] == runs[1]
    assert stats.requests == 30
    assert stats.faults["error_5xx"] == sum(500 <= code <= 504 for code in runs[1])
    assert stats.faults["rate_429"] == runs[1].count(429)
    assert 0 < stats.faults["error_200_text"] < 30


def test_late_cdrs_invisible_before_and_visible_after() -> None:
    """A late CDR is missing from by-date and recent answers until late_seconds after its
    call ended, then it is served, inside the window's order."""
    clock, honest_clock = ManualClock(), ManualClock()
    late = make_sim(Faults(late_rate=0.5, late_seconds=600), clock)
    honest = make_sim(clock=honest_clock)
    expected = honest.truth_between(USER, *WINDOW)
    with serving(late) as (url, client):
        before = by_callid(read_all(client, url, *WINDOW))
        recent_before = by_callid(get(client, url, recent=1).json())
        clock.advance(600)
        after = read_all(client, url, *WINDOW)
    missing = expected.keys() - before.keys()
    assert before.keys() < expected.keys()
    assert missing.isdisjoint(recent_before)
    cut = local(NOW - timedelta(seconds=600))
    assert all(expected[callid]["disconnect_time"] > cut for callid in missing)
    served_after = by_callid(after)
    assert {callid: served_after[callid] for callid in expected} == expected
    positions = [i for i, row in enumerate(after) if str(row["callid"]) in missing]
    assert positions[0] < len(after) - len(missing)  # not all appended at the end


def test_changed_cdrs_served_old_then_new() -> None:
    """A changing CDR is served in its first version until change_after_seconds after its
    call ended, then in its final version."""
    clock = ManualClock()
    changing = make_sim(Faults(change_rate=1, change_after_seconds=600), clock)
    final = make_sim(clock=ManualClock()).truth_between(USER, *WINDOW)
    with serving(changing) as (url, client):
        before = by_callid(read_all(client, url, *WINDOW))
        clock.advance(600)
        after = by_callid(read_all(client, url, *WINDOW))
    recent_cut = local(NOW - timedelta(seconds=600))
    fresh = {c for c, row in final.items() if row["disconnect_time"] > recent_cut}
    assert fresh
    assert before.keys() == final.keys()
    for callid, row in before.items():
        if callid in fresh:
            assert row != final[callid]
            assert row["callid"] == final[callid]["callid"]
        else:
            assert row == final[callid]
    assert {callid: after[callid] for callid in final} == final


def test_duplicate_rows_repeat_a_record_in_its_page() -> None:
    """duplicate_rate repeats records next to themselves; paging still sees each one."""
    sim = make_sim(Faults(duplicate_rate=0.1))
    with serving(sim) as (url, client):
        rows = read_all(client, url, *WINDOW)
    ids = [str(row["callid"]) for row in rows]
    doubled = [callid for callid, n in Counter(ids).items() if n > 1]
    assert doubled
    assert all(n == 2 for n in Counter(ids).values() if n > 1)
    assert any(a == b for a, b in itertools.pairwise(ids))
    assert set(ids) == sim.truth_between(USER, *WINDOW).keys()


def test_live_full_account_versus_one_endpoint() -> None:
    """live=1 shows legs ringing or talking now; fullAccount=0 only those of the endpoint
    logged in with, fullAccount=1 the whole account; legs that just ended show up now and
    then."""
    clock = ManualClock()
    sim = make_sim(clock=clock, days=0.5, calls_per_hour=600)
    just_ended = 0
    with serving(sim) as (url, client):
        full = get(client, url, live=1, fullAccount=1).json()
        mine = get(client, url, live=1, fullAccount=0).json()
        for _ in range(10):
            clock.advance(7)
            snapshot = get(client, url, live=1, fullAccount=1).json()
            ended = [row for row in snapshot if row["disconnect_time"]]
            cut = local(clock.now - timedelta(seconds=5))
            assert all(cut <= row["disconnect_time"] <= local(clock.now) for row in ended)
            just_ended += len(ended)
    in_progress = [row for row in full if not row["disconnect_time"]]
    assert {row["connect_time"] == "" for row in in_progress} == {True, False}  # ringing, talking
    assert all(row["detect_time"] <= local(NOW) for row in full)
    assert 0 < len(mine) < len(full)
    assert all(USER in (str(row["ani_user"]), str(row["dnis_user"])) for row in mine)
    assert {str(r["callid"]) for r in mine} <= {str(r["callid"]) for r in full}
    assert just_ended > 0


def test_recent_is_the_last_24_hours() -> None:
    """recent=1 returns every completed CDR of the 24 h before the clock, and nothing older."""
    sim = make_sim(days=2)
    with serving(sim) as (url, client):
        rows = get(client, url, recent=1).json()
    since = local(NOW - timedelta(hours=24))
    assert rows
    assert all(since <= row["detect_time"] <= local(NOW) for row in rows)
    assert by_callid(rows) == sim.truth_between(USER, since, local(NOW))
    assert len(sim.truth(USER)) > len(rows)


def test_filter_field_can_be_the_disconnect_time() -> None:
    """With filter_field="disconnect_time" the window bounds (inclusive) apply to that field."""
    clock = ManualClock()
    sim = Simulator(
        [SimAccount(seed=7)],
        start=NOW - timedelta(days=1),
        clock=clock,
        filter_field="disconnect_time",
    )
    with serving(sim) as (url, client):
        rows = read_all(client, url, *WINDOW)
    assert rows
    assert all(WINDOW[0] <= row["disconnect_time"] <= WINDOW[1] for row in rows)
    assert any(row["detect_time"] < WINDOW[0] for row in rows)


@pytest.mark.parametrize(
    ("bounds", "first", "last"),
    [("inclusive", 0, 2), ("exclusive", 1, 1), ("start_inclusive", 0, 1), ("end_inclusive", 1, 2)],
)
def test_date_bounds_can_exclude_either_end(bounds: str, first: int, last: int) -> None:
    """`bounds` says which ends of [dateStart, dateEnd] a by-date answer includes: asked for
    the three seconds around a busy second, it serves the seconds from `first` to `last`."""
    sim = make_sim(calls_per_hour=3000, bounds=bounds)
    truth = sim.truth_between(USER, *WINDOW)
    times = sorted({row["detect_time"] for row in truth.values()})
    busy = datetime.fromisoformat(times[len(times) // 2])  # a second with CDRs, in the middle
    seconds = [f"{busy + timedelta(seconds=i):%Y-%m-%d %H:%M:%S}" for i in (-1, 0, 1)]
    with serving(sim) as (url, client):
        rows = read_all(client, url, seconds[0], seconds[2])
    expected = sim.truth_between(USER, seconds[first], seconds[last])
    assert rows
    assert by_callid(rows) == expected
    assert {row["detect_time"] for row in rows} <= set(seconds[first : last + 1])


def test_unknown_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="bounds must be one of"):
        SimAccount(bounds="open")  # type: ignore[arg-type]


def test_tiny_caches_serve_the_same_records() -> None:
    """With caches far too small to hold a window, answers are regenerated identically."""
    clock = ManualClock()
    tiny = Simulator(
        [SimAccount(seed=7)], start=NOW - timedelta(days=1), clock=clock, max_cached_legs=50
    )
    with serving(tiny) as (url, client):
        rows = read_all(client, url, *WINDOW, page=100)
    assert by_callid(rows) == make_sim().truth_between(USER, *WINDOW)


def test_truth_agrees_with_a_full_paged_read() -> None:
    """Simulator.truth() is exactly what paging through the whole data range returns."""
    sim = make_sim(days=2)
    with serving(sim) as (url, client):
        rows = read_all(client, url, local(NOW - timedelta(days=3)), local(NOW))
    assert by_callid(rows) == sim.truth(USER)


def test_new_calls_keep_happening() -> None:
    """As the clock moves on, calls keep coming: new CDRs appear after the first reading."""
    clock = ManualClock()
    sim = make_sim(clock=clock)
    first = sim.truth(USER)
    clock.advance(3 * 3600)
    later = sim.truth(USER)
    assert first.keys() < later.keys()


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2023-11-05 00:00:00", "2023-11-05 03:59:59", {"00", "01", "02", "03"}),  # fall back
        ("2024-03-10 00:00:00", "2024-03-10 04:59:59", {"00", "01", "03", "04"}),  # spring on
    ],
)
def test_dst_zone_repeats_and_skips_hours(start: str, end: str, hours: set[str]) -> None:
    """In a DST zone, local times repeat in the fall-back hour and skip the spring gap."""
    day = datetime.fromisoformat(start).replace(tzinfo=UTC)
    clock = ManualClock(day + timedelta(days=1))
    sim = make_sim(clock=clock, days=2, timezone="America/New_York", calls_per_hour=400)
    with serving(sim) as (url, client):
        rows = read_all(client, url, start, end)
    assert {row["detect_time"][11:13] for row in rows} == hours


def test_local_clock_renders_dst_exactly() -> None:
    """Instants render on the zone's wall clock: the fall-back hour reads twice, an hour
    apart; the spring-forward gap is never read."""
    clock = CallGenerator(USER, 7, "America/New_York").clock
    fall = int(datetime(2023, 11, 5, 5, 30, tzinfo=UTC).timestamp())  # 01:30 EDT
    assert clock.render(fall) == clock.render(fall + 3600) == "2023-11-05 01:30:00"
    spring = int(datetime(2024, 3, 10, 6, 59, 59, tzinfo=UTC).timestamp())  # 01:59:59 EST
    assert clock.render(spring) == "2024-03-10 01:59:59"
    assert clock.render(spring + 1) == "2024-03-10 03:00:00"


def test_call_legs_look_real() -> None:
    """A day of data has IVR trunk legs with their agent legs, outbound routes, feature codes,
    unset times, negative ring times, null types, ints and strings, and extra fields."""
    rows = list(make_sim(calls_per_hour=120).truth(USER).values())
    trunks = {str(r["ref_callid"]): r for r in rows if str(r["ref_callid"]) != "0"}
    agents = [
        r
        for r in rows
        if str(r["original_callid"]) in trunks and str(r["original_callid"]) != str(r["callid"])
    ]
    assert trunks
    assert agents
    assert all(str(t["dnis_user"]) == USER for t in trunks.values())
    answered = Counter(str(r["original_callid"]) for r in agents if int(r["duration"]) > 0)
    assert set(answered.values()) == {1}
    unset = ("", None, "0000-00-00 00:00:00")
    assert all(r["connect_time"] in unset for r in agents if int(r["duration"]) == 0)
    outgoing = [r for r in rows if r["type"] == "outgoing" and r.get("route_name")]
    assert outgoing
    assert any(str(r["dnis"]).startswith("*") for r in rows)
    assert {type(r["callid"]) for r in rows} == {int, str}
    assert {type(r["duration"]) for r in rows} == {int, str}
    assert any(int(r["ring_time"]) < 0 for r in rows)
    assert any(r["type"] is None for r in rows)
    assert {r["connect_time"] for r in rows} >= set(unset)
    assert any("codec" in r for r in rows)
    assert any("route_name" not in r for r in rows)
    assert {r["end_reason"] for r in rows} >= {"OK", "NO_ANSWER", "CANCELLED", "DECLINE"}
    assert all(len(str(r["ani_user"])) == 7 and len(str(r["dnis_user"])) == 7 for r in rows)


def test_faults_parse() -> None:
    """Faults.parse reads the CLI syntax and names a bad item."""
    faults = Faults.parse("error_5xx=0.1, page_cap=300,retry_after=0,late_rate=0.05")
    assert faults == Faults(error_5xx=0.1, page_cap=300, retry_after=0, late_rate=0.05)
    assert Faults.parse("") == Faults.none()
    assert Faults.parse("page_cap=none").page_cap is None
    assert Faults.parse(faults.describe()) == faults
    for bad in ("nonsense=1", "error_5xx", "error_5xx=2", "page_cap=x", "page_cap=0"):
        with pytest.raises(ValueError, match="fault"):
            Faults.parse(bad)


def test_password_never_logged(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Serving requests (good, failing, faulty) prints and logs nothing holding the password."""
    caplog.set_level(logging.DEBUG, logger="etl.simulator")
    with serving(make_sim(Faults(error_5xx=0.3, drop=0.2))) as (url, client):
        for _ in range(10):
            try:
                get(client, url, recent=1)
            except httpx.TransportError:
                continue
        client.get(url, params={"username": USER, "password": "wrong-password-123"})
    out, err = capfd.readouterr()
    logged = "".join(r.getMessage() for r in caplog.records if r.name.startswith("etl.simulator"))
    for secret in (PASSWORD, "wrong-password-123"):
        assert secret not in out + err + logged


def test_stop_ends_kept_alive_connections() -> None:
    """After stop(), the server answers nothing, even on a kept-alive connection."""
    server = SimulatorServer(make_sim()).start()
    with httpx.Client(timeout=5) as client:
        assert get(client, server.url, recent=1).status_code == 200
        server.stop()
        with pytest.raises(httpx.TransportError):
            get(client, server.url, recent=1)


def test_module_entry_point_serves_until_sigterm() -> None:
    """`python -m etl.simulator --port 0` serves the demo account and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl.simulator", "--port", "0", "--days", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        with httpx.Client(timeout=10) as client:
            answer = get(client, url, live=1, fullAccount=1)
        assert answer.status_code == 200
        assert isinstance(answer.json(), list)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_throughput_is_printed() -> None:
    """Serving 100k rows in 1000-row JSON pages is measured and printed (not asserted)."""
    sim = make_sim(calls_per_hour=600, days=0.5)
    window = (local(NOW - timedelta(days=0.5)), local(NOW))
    started = time.perf_counter()
    total = len(sim.truth_between(USER, *window))
    generated = time.perf_counter() - started
    served = rounds = 0
    with serving(sim) as (url, client):
        started = time.perf_counter()
        while served < 100_000:
            ids: set[str] = set()
            for ini in range(0, total, 1000):
                params = {"dateStart": window[0], "dateEnd": window[1], "ini": ini, "cant": 1000}
                rows = orjson.loads(get(client, url, **params).content)
                ids.update(str(row["callid"]) for row in rows)
                served += len(rows)
            assert ids == set(sim.truth_between(USER, *window))  # each round reads it whole
            rounds += 1
        elapsed = time.perf_counter() - started
    print(
        f"\nsimulator: generated {total} CDRs in {generated:.2f} s ({total / generated:,.0f}/s);"
        f" served {served} rows in {elapsed:.2f} s ({served / elapsed:,.0f} rows/s)"
    )
    assert total > 0
    assert served == rounds * total


def whole_answers(sim: Simulator, n: int) -> list[list[Record]]:
    """`n` whole by-date answers of WINDOW, in request order (in process, no paging)."""
    params = {**CREDENTIALS, "dateStart": WINDOW[0], "dateEnd": WINDOW[1], "format": "json"}
    return [orjson.loads(sim.handle(params).body) for _ in range(n)]


def test_shuffled_ties_reorder_only_rows_sharing_a_second() -> None:
    """The shuffled_ties quirk: every answer holds the same rows, sorted by detect_time, but
    rows sharing a second come in a fresh order on each request; duplicates stay adjacent."""
    sim = make_sim(Faults(duplicate_rate=0.1), calls_per_hour=600, order="shuffled_ties")
    answers = whole_answers(sim, 3)
    sorted_rows = whole_answers(make_sim(Faults(duplicate_rate=0.1), calls_per_hour=600), 1)[0]
    for rows in answers:
        assert sorted(map(orjson.dumps, rows)) == sorted(map(orjson.dumps, sorted_rows))
        times = [row["detect_time"] for row in rows]
        assert times == sorted(times)
        ids = [str(row["callid"]) for row in rows]
        for callid, n in Counter(ids).items():
            if n > 1:
                first = ids.index(callid)
                assert ids[first + 1] == callid  # a duplicated row keeps its copy next to it
    orders = {tuple(str(row["callid"]) for row in rows) for rows in answers}
    assert len(orders) == 3, "each request must get a fresh order of the ties"


def test_unordered_answers_come_in_any_order() -> None:
    """The unordered quirk: the same rows in a fresh random order on every request."""
    sim = make_sim(calls_per_hour=200, order="unordered")
    first, second = whole_answers(sim, 2)
    assert sorted(map(orjson.dumps, first)) == sorted(map(orjson.dumps, second))
    times = [row["detect_time"] for row in first]
    assert times != sorted(times)
    assert first != second


def test_order_quirks_are_reproducible_from_the_seed() -> None:
    """Two simulators with the same seed serve the same sequence of orders."""
    for order in ("shuffled_ties", "unordered"):
        one = whole_answers(make_sim(calls_per_hour=300, order=order), 3)
        two = whole_answers(make_sim(calls_per_hour=300, order=order), 3)
        assert one == two


def test_an_unknown_order_is_refused() -> None:
    """SimAccount names the orders it knows."""
    with pytest.raises(ValueError, match="order must be one of"):
        SimAccount(order="backwards")  # type: ignore[arg-type]
