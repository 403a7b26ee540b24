"""The incremental sync against the simulator's ground truth on a real PostgreSQL: every
CDR once, with its latest content and correct UTC times, whatever the provider does."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from sqlalchemy import Engine, func, select

from etl import wiring
from etl.api.client import CdrApiClient, RetryPolicy
from etl.backfill import backfill_account
from etl.config import SyncSettings
from etl.db.models import cdrs, rejects, runs, watermarks
from etl.db.state import RunFigures
from etl.logs import ContextFilter
from etl.normalize import SAME_CALLID
from etl.pipeline import stoppable_sleep
from etl.simulator import Faults
from etl.sync import sync_account
from tests.simworld import PASSWORD, USERNAME, World, local, utc, world

START = utc(2024, 6, 3, 12, 0, 0)


def settle(w: World, hours: float, step_minutes: float = 20) -> None:
    """Run the sync now, then every `step_minutes` for `hours` of simulated time."""
    end = w.clock.now + timedelta(hours=hours)
    while True:
        result = w.run()
        assert result.status == "ok", result.error
        if w.clock.now >= end:
            return
        w.clock.advance(minutes=step_minutes)


def assert_exact(w: World, first: datetime) -> None:
    """Everything the longest pass has covered is in the database exactly as served now,
    and nothing is stored that the provider does not serve."""
    with w.engine.connect() as conn:
        rows = conn.execute(
            select(watermarks.c.pass_name, watermarks.c.position).where(
                watermarks.c.account_id == w.account_id
            )
        )
        marks: dict[str, datetime] = {name: position for name, position in rows}
    settled = marks["24h"]
    truth = w.truth(first, settled)
    stored = w.stored()
    assert truth, "the simulator served nothing: the test proves nothing"
    missing = set(truth) - set(stored)
    assert not missing, f"{len(missing)} CDRs missing, e.g. {sorted(missing)[:3]}"
    stale = [k for k in truth if stored[k] != truth[k]]
    assert not stale, f"{len(stale)} CDRs stale, e.g. {stale[:3]}"
    everything = w.sim.truth("8569841")
    extra = set(stored) - set(everything)
    assert not extra, f"{len(extra)} CDRs stored that the provider does not serve"


def test_incremental_runs_store_every_cdr_once(engine: Engine) -> None:
    """Runs every 20 min for a day and a half: the database equals the provider's answer."""
    with world(engine, now=START) as w:
        first = local(START, "America/Costa_Rica") - timedelta(hours=24)
        settle(w, hours=30)
        assert_exact(w, first)
        with engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(cdrs))
            history = conn.execute(select(runs.c.status, runs.c.inserted)).all()
        assert total == len(w.stored())
        assert {status for status, _ in history} == {"ok"}
        assert sum(inserted for _, inserted in history) == total


def test_each_window_is_read_once_per_pass(engine: Engine) -> None:
    """However often the run happens, a window is requested once per pass."""
    with world(engine, now=START, calls_per_hour=0.5) as w:
        w.run()
        requests = w.sim.stats.requests
        again = w.run()  # nothing new is due: one request per due window, here none
        assert again.figures.requests == 0
        assert w.sim.stats.requests == requests
        w.clock.advance(minutes=5)
        third = w.run()
        assert third.figures.windows == 3  # each pass has five new minutes due
        assert third.figures.requests == 3  # an empty window costs one request


def test_page_cap_below_page_size_loses_nothing(engine: Engine) -> None:
    """A server that silently returns 300 rows when asked for 1000 still gives everything."""
    with world(engine, now=START, faults=Faults(page_cap=37), calls_per_hour=200) as w:
        first = local(START, "America/Costa_Rica") - timedelta(hours=24)
        settle(w, hours=25, step_minutes=60)
        assert_exact(w, first)


@pytest.mark.slow
def test_mixed_transient_faults_are_retried_and_exact(engine: Engine) -> None:
    """20 % of requests fail in every transient way; retries make the result exact."""
    faults = Faults(
        error_5xx=0.05, rate_429=0.04, retry_after=0, drop=0.03, truncate=0.03,
        slow=0.02, slow_seconds=0.05, error_200_html=0.03, empty_200=0.03,
    )  # fmt: skip
    with world(engine, now=START, faults=faults, calls_per_hour=120) as w:
        w.page_size = 200
        first = local(START, "America/Costa_Rica") - timedelta(hours=24)
        settle(w, hours=25, step_minutes=60)
        assert_exact(w, first)
        with engine.connect() as conn:
            retries = conn.scalar(select(func.sum(runs.c.retries)))
        assert retries is not None
        assert retries > 0
        kinds = ("5xx", "429", "drop", "truncate", "empty_200")
        injected = sum(w.sim.stats.faults.get(k, 0) for k in kinds)
        assert injected > 0


def test_late_and_changed_cdrs_are_caught_by_later_passes(engine: Engine) -> None:
    """CDRs that appear late or change after a first read end up stored, latest version."""
    faults = Faults(late_rate=0.2, late_seconds=1800, change_rate=0.2, change_after_seconds=2400)
    with world(engine, now=START, faults=faults, calls_per_hour=60) as w:
        first = local(START, "America/Costa_Rica") - timedelta(hours=24)
        settle(w, hours=26)
        assert_exact(w, first)
        with engine.connect() as conn:
            updated = conn.scalar(select(func.sum(runs.c.updated)))
        assert updated is not None
        assert updated > 0  # a changed CDR was rewritten


@pytest.mark.parametrize(
    ("start", "label"),
    [(utc(2024, 11, 2, 18), "fall-back"), (utc(2024, 3, 9, 18), "spring-forward")],
)
def test_dst_zone_neither_skips_nor_doubles(engine: Engine, start: datetime, label: str) -> None:
    """Across a DST change in New York the data is exact and times are right in UTC."""
    tz = "America/New_York"
    with world(engine, now=start, timezone=tz, calls_per_hour=120) as w:
        first = local(start, tz) - timedelta(hours=24)
        settle(w, hours=36, step_minutes=30)
        assert_exact(w, first)
        with engine.connect() as conn:
            rows = conn.execute(select(cdrs.c.raw, cdrs.c.detect_time)).all()
        zone = ZoneInfo(tz)
        for raw, detect in rows:
            text = raw["detect_time"]
            expected = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
            assert detect == expected.astimezone(UTC), (label, text)


def test_short_passes_read_the_repeated_hour_after_both_occurrences(engine: Engine) -> None:
    """With every pass shorter than the hour a fall-back repeats, the second 01:xx is still
    read: no pass completes the repeated range before its second occurrence is over."""
    tz = "America/New_York"
    start = utc(2024, 11, 3, 3)  # 23:00 EDT, the evening before the change
    with world(engine, now=start, timezone=tz, calls_per_hour=120) as w:
        w.sync = SyncSettings(passes=(timedelta(minutes=2), timedelta(minutes=45)),
                              initial_lookback=timedelta(hours=2))  # fmt: skip
        first = local(start, tz) - timedelta(hours=2)
        settle(w, hours=7, step_minutes=5)
        with engine.connect() as conn:
            mark = conn.scalar(select(watermarks.c.position).where(watermarks.c.pass_name == "45m"))
        assert mark is not None
        truth = w.truth(first, mark)
        stored = w.stored()
        repeated = [k for k, r in truth.items() if r["detect_time"].startswith("2024-11-03 01:")]
        assert len(repeated) > 5  # both occurrences of 01:xx have calls (a quiet night)
        assert {k: stored.get(k) for k in truth} == truth


def test_wrong_credentials_fail_clearly_and_move_nothing(engine: Engine) -> None:
    """A refused password: run failed naming authentication, no rows, no watermark; the
    next run with the right password is exact."""
    with world(engine, now=START) as w:
        result = w.run(password="00000000000")
        assert result.status == "failed"
        assert result.error is not None
        assert "authentication" in result.error.lower()
        assert "00000000000" not in result.error
        assert result.figures.retries == 0
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(cdrs)) == 0
            positions = set(conn.execute(select(watermarks.c.position)).scalars())
            row = conn.execute(select(runs.c.status, runs.c.error)).one()
        first = local(START, "America/Costa_Rica") - timedelta(hours=24)
        assert positions == {first}  # each pass still at its starting point
        assert row.status == "failed"
        assert "00000000000" not in (row.error or "")
        settle(w, hours=25, step_minutes=60)
        assert_exact(w, first)


def test_a_new_account_starts_at_initial_lookback(engine: Engine) -> None:
    """The first run reads `initial_lookback` back, not the whole history."""
    with world(engine, now=START, days=5) as w:
        w.sync = SyncSettings(initial_lookback=timedelta(hours=6))
        w.run()
        with engine.connect() as conn:
            oldest = conn.scalar(select(func.min(cdrs.c.detect_time)))
        assert oldest is not None
        assert oldest >= START - timedelta(hours=6, seconds=1)


def test_no_write_once_the_lock_session_is_gone(engine: Engine) -> None:
    """The sync writes on the session that holds its lock: when that session dies (and the
    lock with it), the next page fails instead of writing unlocked."""
    from sqlalchemy import text

    from etl.db.state import AdvanceWatermark, account_lock
    from etl.errors import LoadError
    from etl.pipeline import store_window
    from etl.windows import Window

    with world(engine, now=START) as w, account_lock(engine, w.account_id, "sync") as locked:
        assert locked is not None
        pid = locked.execute(text("SELECT pg_backend_pid()")).scalar()
        locked.commit()
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        window = Window(local(START, "America/Costa_Rica") - timedelta(hours=2),
                        local(START, "America/Costa_Rica") - timedelta(hours=1))  # fmt: skip
        complete = AdvanceWatermark(w.account_id, "2m", window.end)
        with pytest.raises(LoadError):
            store_window(engine, w.source(), window, RunFigures(), complete, connection=locked)
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(cdrs)) == 0


class _Scripted(httpx.BaseTransport):
    """Forwards requests to the simulator, except those whose number (1, 2, ...) `fails`
    says: those are answered 503, and `stop` (if any) is set a moment later (a SIGTERM
    arriving while the client waits to retry)."""

    def __init__(self, fails: Callable[[int], bool], stop: threading.Event | None = None):
        self.inner, self.fails, self.stop = httpx.HTTPTransport(), fails, stop
        self.requests = 0
        self.lock = threading.Lock()  # a backfill's windows request from several threads

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests += 1
            number = self.requests
        if not self.fails(number):
            return self.inner.handle_request(request)
        if self.stop is not None:
            threading.Timer(0.2, self.stop.set).start()
        return httpx.Response(503)

    def close(self) -> None:
        self.inner.close()


def test_a_stop_while_a_request_waits_to_be_retried_keeps_the_pages_in_hand(
    engine: Engine,
) -> None:
    """The daemon's SIGTERM during a retry's wait (30 s here): the request is not tried
    again, the run stops at once, recorded as failed (it met an outage, no success), the
    pages already read are stored, and the window's watermark does not move."""
    stop = threading.Event()
    now = utc(2024, 6, 3, 18, 0, 0)  # noon in Costa Rica: the first window is busy
    with world(engine, now=now) as w:
        transport = _Scripted(lambda n: n > 2, stop)
        client = CdrApiClient(
            w.server.url,
            transport=transport,
            retry=RetryPolicy(max_attempts=6, base=30, cap=30, max_total=600, jitter=False),
            sleep=stoppable_sleep(stop),
        )
        source = wiring.source(client, w.account, w.account_id, PASSWORD, page_size=20)
        began = time.monotonic()
        with client:
            result = sync_account(engine, source, w.account, w.sync, now, "stop", stop=stop)
        assert time.monotonic() - began < 10
        # no success to record: its request was failing (v_sync_health, the metrics)
        assert (result.status, result.error_kind) == ("failed", "transient")
        assert transport.requests == 3  # two pages, one 503, no retry
        with engine.connect() as conn:
            row = conn.execute(select(runs.c.status, runs.c.error)).one()
        assert row.status == "failed"
        assert "stopped while waiting 30.0s to retry a failed request" in (row.error or "")
        first = local(now, "America/Costa_Rica") - timedelta(hours=24)
        assert set(w.watermarks().values()) == {first}  # each pass still at its start
        stored = w.stored()
        assert len(stored) == 40  # both pages read, the second one stored on the way out
        assert {k: r for k, r in w.sim.truth(USERNAME).items() if k in stored} == stored


class _Capture(logging.Handler):
    """The records of the `etl` loggers, with the run's context as the real handlers see it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("kind", ["sync", "backfill"])
def test_retry_lines_name_the_runs_account_and_run_id(engine: Engine, kind: str) -> None:
    """A request retried in the thread that fetches ahead (and, in a backfill, in the
    thread of a window) logs a line that carries the run's account and run_id."""
    now = utc(2024, 6, 3, 18, 0, 0)
    capture = _Capture()
    logging.getLogger("etl").addHandler(capture)
    try:
        with world(engine, now=now) as w:
            client = CdrApiClient(
                w.server.url, transport=_Scripted(lambda n: n in (2, 5)),
                retry=RetryPolicy(base=0.001, cap=0.001), sleep=lambda _: None,
            )  # fmt: skip
            source = wiring.source(client, w.account, w.account_id, PASSWORD, page_size=20)
            with client:
                if kind == "sync":
                    result = sync_account(engine, source, w.account, w.sync, now, "run-1")
                else:
                    start = local(now, "America/Costa_Rica") - timedelta(hours=6)
                    result = backfill_account(engine, source, "main", start,
                                              start + timedelta(hours=3), timedelta(hours=1),
                                              "run-1", concurrency=2)  # fmt: skip
            assert result.status == "ok", result.error
    finally:
        logging.getLogger("etl").removeHandler(capture)
    retries = [r for r in capture.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all((r.__dict__.get("account"), r.__dict__.get("run_id")) == ("main", "run-1")
               for r in retries)  # fmt: skip


class _Twins(httpx.BaseTransport):
    """Forwards to the simulator; to each by-date answer with rows it adds, last, a record
    with its first record's callid and other content that starts a day earlier (API.md:
    callids are not proven unique)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.twins: list[dict[str, object]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "dateStart" not in request.url.params:
            return response
        rows = orjson.loads(response.read())
        if rows and rows[0]["detect_time"]:
            earlier = datetime.fromisoformat(rows[0]["detect_time"]) - timedelta(days=1)
            twin = {**rows[0], "detect_time": f"{earlier:%Y-%m-%d %H:%M:%S}", "end_reason": "TWIN"}
            self.twins.append(twin)
            rows.append(twin)
        return httpx.Response(200, content=orjson.dumps(rows))

    def close(self) -> None:
        self.inner.close()


def test_a_callid_served_twice_with_other_content_is_kept_in_rejects(engine: Engine) -> None:
    """Two records of one answer share a callid and differ: the one that reads as the later
    is stored (here the provider's true record, though the twin is read last), the other
    is kept whole in rejects and counted, and the run goes on; nothing else changes."""
    now = utc(2024, 6, 3, 18, 0, 0)
    with world(engine, now=now) as w:
        transport = _Twins()
        client = CdrApiClient(w.server.url, transport=transport)
        source = wiring.source(client, w.account, w.account_id, PASSWORD, page_size=50)
        with client:
            result = sync_account(engine, source, w.account, w.sync, now, "run-1")
        assert result.status == "ok", result.error
        assert transport.twins, "no answer had rows: the test proves nothing"
        assert result.figures.rejected == len(transport.twins)
        stored = w.stored()
        assert all(stored[str(t["callid"])] != t for t in transport.twins)
        assert_exact(w, local(now, "America/Costa_Rica") - w.sync.initial_lookback)
        with engine.connect() as conn:
            kept = conn.execute(
                select(rejects.c.callid, rejects.c.reason, rejects.c.raw, rejects.c.times_seen)
            ).all()
    # one row per distinct record; the passes that read a window again count in times_seen
    assert {row.raw["callid"] for row in kept} == {t["callid"] for t in transport.twins}
    assert sum(row.times_seen for row in kept) == len(transport.twins)
    assert all(row.raw["end_reason"] == "TWIN" for row in kept)
    assert all(row.callid == str(row.raw["callid"]) for row in kept)
    assert all(row.reason == SAME_CALLID for row in kept)
