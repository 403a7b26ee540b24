"""A provider whose order moves between requests (rows sharing a second reshuffled, or no
order at all): backfill, sync and verify --repair still store every CDR once, each read on
its own proven exact against the simulator's ground truth; a well-behaved provider costs
not one request more."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select

from etl.backfill import backfill_account
from etl.config import SyncSettings
from etl.db.models import backfill_windows, cdrs, runs, watermarks
from etl.simulator import Faults, SimAccount, Simulator, SimulatorServer
from etl.simulator.app import Bounds
from etl.simulator.store import Order
from etl.verify import verify_account
from tests.simworld import World, local, utc, world
from tests.test_processes import (
    PASSWORD,
    TZ,
    USERNAME,
    assert_exact,
    backfill_args,
    cdr_etl,
    cli_env,
    migrate,
    wait_until,
    wall,
)

START = utc(2024, 6, 3, 22, 0, 0)  # 16:00 in Costa Rica: busy hours behind it
BUSY = 600  # calls an hour at the busiest: about 2,300 legs, many sharing a second
HISTORY = 0.5  # days the simulator serves: the reads here reach at most 5 hours back
TRANSIENT = Faults(
    error_5xx=0.05, rate_429=0.04, retry_after=0, drop=0.03, truncate=0.03,
    error_200_html=0.03, empty_200=0.02,
)  # fmt: skip


def backfill(w: World, start: datetime, end: datetime, window: timedelta) -> None:
    result = backfill_account(w.engine, w.source(), "main", start, end, window, "test")
    assert result.status == "ok", result.error


def assert_stored_exactly(w: World, start: datetime, end: datetime) -> None:
    """The database holds every CDR the provider serves in [start, end], as served, and
    nothing it does not serve."""
    truth = w.truth(start, end)
    stored = w.stored()
    assert truth, "the simulator served nothing: the test proves nothing"
    missing = set(truth) - set(stored)
    assert not missing, f"{len(missing)} of {len(truth)} CDRs missing, e.g. {sorted(missing)[:3]}"
    stale = [k for k in truth if stored[k] != truth[k]]
    assert not stale, f"{len(stale)} CDRs stale, e.g. {stale[:3]}"
    assert not set(stored) - set(w.sim.truth(USERNAME)), "CDRs stored that are not served"


def disturbed(engine: Engine) -> tuple[int, int]:
    """(windows whose walk the order disturbed, requests of their re-reads), all runs."""
    with engine.connect() as conn:
        row = conn.execute(
            select(func.sum(runs.c.disturbed), func.sum(runs.c.reread_requests))
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


@pytest.mark.parametrize(
    ("order", "page_size", "cap"),
    [
        ("shuffled_ties", 50, None),
        ("shuffled_ties", 1000, None),
        ("unordered", 200, None),
        ("unordered", 100, 37),
        pytest.param("shuffled_ties", 200, 60, marks=pytest.mark.slow),
        pytest.param("unordered", 50, None, marks=pytest.mark.slow),
        pytest.param("unordered", 1000, None, marks=pytest.mark.slow),
    ],
)
def test_one_backfill_is_exact_whatever_the_order(
    engine: Engine, order: Order, page_size: int, cap: int | None
) -> None:
    """A single backfill (one read per window) of two busy hours stores every CDR, under
    reshuffled ties and under no order at all, with any page size and a page cap."""
    busy = BUSY * 3 if page_size >= 1000 else BUSY  # pages enough for boundaries to cut ties
    faults = Faults(page_cap=cap)
    with world(
        engine, now=START, days=HISTORY, calls_per_hour=busy, order=order, faults=faults
    ) as w:
        w.page_size = page_size
        end = local(START, w.account.timezone) - timedelta(hours=1)
        start = end - timedelta(hours=2)
        backfill(w, start, end, timedelta(hours=1))
        assert_stored_exactly(w, start, end)
        windows, extra = disturbed(engine)
        assert windows > 0, "the quirk never disturbed a walk: the test proves nothing"
        assert extra > 0


def test_a_well_behaved_server_costs_no_extra_request(engine: Engine) -> None:
    """A sorted server: each window is walked once, pages then one empty page, no re-read."""
    with world(engine, now=START, days=HISTORY, calls_per_hour=BUSY) as w:
        w.page_size = 200
        end = local(START, w.account.timezone) - timedelta(hours=1)
        start = end - timedelta(hours=2)
        backfill(w, start, end, timedelta(hours=1))
        assert_stored_exactly(w, start, end)
        with engine.connect() as conn:
            pages, requests, windows = conn.execute(
                select(runs.c.pages, runs.c.requests, runs.c.windows)
            ).one()
        assert requests == pages + windows == w.sim.stats.requests
        assert disturbed(engine) == (0, 0)


BOUNDS = ["inclusive", "exclusive", "start_inclusive", "end_inclusive"]


def on_the_second(records: dict[str, dict[str, object]], *moments: datetime) -> set[str]:
    """The callids of the records whose detect time is one of these wall-clock seconds."""
    wanted = {f"{moment:%Y-%m-%d %H:%M:%S}" for moment in moments}
    return {k for k, record in records.items() if record.get("detect_time") in wanted}


@pytest.mark.parametrize(
    ("bounds", "order"),
    [*((bounds, "sorted") for bounds in BOUNDS), ("exclusive", "unordered")],
)
def test_every_second_is_stored_whatever_the_servers_date_bounds(
    engine: Engine, bounds: Bounds, order: Order
) -> None:
    """API.md does not say whether dateStart and dateEnd are inclusive. Whatever they are
    (both, neither, only one), a backfill and then a sync store the CDRs that lie exactly
    on the range's first and last seconds, on the windows' shared boundaries and (under a
    moving order) on the sub-windows' cuts, and nothing beyond the second next to the range
    asked."""
    with world(
        engine, now=START, days=HISTORY, calls_per_hour=BUSY, order=order, bounds=bounds
    ) as w:
        w.page_size = 200
        last = local(START, w.account.timezone) - timedelta(hours=1)
        near = sorted({r["detect_time"] for r in w.truth(last - timedelta(hours=2), last).values()})
        start, end = datetime.fromisoformat(near[0]), datetime.fromisoformat(near[-1])
        window = timedelta(minutes=20)  # five boundaries shared inside the range
        inside = [start + window * k for k in range(1, 6)]
        assert on_the_second(w.truth(start, end), *inside), "no CDR on a shared boundary"
        backfill(w, start, end, window)  # a CDR on its first and on its last second
        assert_stored_exactly(w, start, end)
        second = timedelta(seconds=1)
        assert set(w.stored()) <= set(w.truth(start - second, end + second))
        assert (disturbed(engine)[0] > 0) == (order == "unordered")  # sub-windows were read
        w.clock.advance(minutes=40)  # the sync starts on the backfill's last second
        lookback = local(w.clock.now, w.account.timezone) - end
        w.sync = SyncSettings(passes=(timedelta(minutes=2),), initial_lookback=lookback)
        assert w.run().status == "ok"
        assert_stored_exactly(w, start, watermark(engine))


def watermark(engine: Engine) -> datetime:
    with engine.connect() as conn:
        mark: datetime | None = conn.scalar(select(watermarks.c.position))
    assert mark is not None
    return mark


@pytest.mark.parametrize("order", ["shuffled_ties", "unordered"])
def test_each_sync_run_is_exact_on_its_own(engine: Engine, order: Order) -> None:
    """With a single pass (no later pass to hide a loss), each run stores exactly what the
    provider serves, at that moment, for the range its watermark moved over."""
    with world(engine, now=START, days=HISTORY, calls_per_hour=BUSY, order=order) as w:
        w.page_size = 100
        w.sync = SyncSettings(passes=(timedelta(minutes=2),), initial_lookback=timedelta(hours=2))
        before = local(START, w.account.timezone) - timedelta(hours=2)
        for _ in range(3):
            result = w.run()
            assert result.status == "ok", result.error
            after = watermark(engine)
            assert after > before
            assert_stored_exactly(w, before, after)
            before = after
            w.clock.advance(minutes=40)
        windows, extra = disturbed(engine)
        assert windows > 0
        assert extra > 0


@pytest.mark.parametrize("order", ["shuffled_ties", "unordered"])
def test_verify_repair_is_exact_whatever_the_order(engine: Engine, order: Order) -> None:
    """verify --repair (one unpaged recent=1 answer) restores deleted rows exactly."""
    with world(engine, now=START, calls_per_hour=BUSY // 6, order=order) as w:
        w.page_size = 100
        w.sync = SyncSettings(passes=(timedelta(minutes=2),), initial_lookback=timedelta(hours=26))
        assert w.run().status == "ok"
        recent_callids = (
            select(cdrs.c.callid).order_by(cdrs.c.detect_time.desc()).offset(200).limit(40)
        )
        with engine.begin() as conn:
            gone = conn.execute(delete(cdrs).where(cdrs.c.callid.in_(recent_callids))).rowcount
        assert gone == 40
        result = verify_account(engine, w.source(), "main", w.clock(), "test", repair=True)
        assert result.status == "differs"
        assert result.repaired == 40
        first = local(START, w.account.timezone) - timedelta(hours=26)
        assert_stored_exactly(w, first, watermark(engine))


@pytest.mark.slow
@pytest.mark.parametrize("order", ["shuffled_ties", "unordered"])
def test_order_quirks_with_transient_faults_are_exact(engine: Engine, order: Order) -> None:
    """About 20 % of requests fail in every transient way on top of the order quirk:
    backfill and sync each end exact on their own."""
    with world(
        engine, now=START, days=HISTORY, calls_per_hour=BUSY, order=order, faults=TRANSIENT
    ) as w:
        w.page_size = 100
        end = local(START, w.account.timezone) - timedelta(hours=3)
        start = end - timedelta(hours=2)
        backfill(w, start, end, timedelta(hours=1))
        assert_stored_exactly(w, start, end)
        w.sync = SyncSettings(passes=(timedelta(minutes=2),), initial_lookback=timedelta(hours=3))
        result = w.run()
        assert result.status == "ok", result.error
        assert result.figures.retries > 0
        assert_stored_exactly(w, start, watermark(engine))


@pytest.fixture
def shuffling_sim() -> Iterator[SimulatorServer]:
    """A busy account on the real clock whose by-date answers reshuffle ties per request."""
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone=TZ, seed=11, calls_per_hour=BUSY,
        order="shuffled_ties",
    )  # fmt: skip
    simulator = Simulator([account], start=datetime.now(UTC) - timedelta(days=2))
    with SimulatorServer(simulator) as server:
        yield server


@pytest.mark.slow
def test_backfill_killed_mid_window_under_reshuffled_ties_resumes_exactly(
    engine: Engine, db_url: str, shuffling_sim: SimulatorServer, tmp_path: Path
) -> None:
    """SIGKILL a backfill in the middle of a disturbed window; the re-run is exact."""
    env = cli_env(db_url, shuffling_sim, tmp_path)
    # yesterday's busy hours on the account's clock (not the hours before now, which are the
    # night's at some times of day: too few rows for pages whose ties get reshuffled)
    start = wall(datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0)
    end = start + timedelta(hours=3)
    args = backfill_args(start, end, "--window", "1h", "--concurrency", "1")
    migrate(env)
    process = cdr_etl(*args, env=env)

    def some_rows() -> bool:  # mid-run: 1,500 of about 10,000 rows stored
        with engine.connect() as conn:
            count = conn.scalar(select(func.count()).select_from(cdrs)) or 0
        return count >= 1500 or process.poll() is not None

    wait_until(some_rows)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    done = subprocess.run([sys.executable, "-m", "etl", *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_exact(engine, shuffling_sim, start, end)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(backfill_windows)) == 3
    assert disturbed(engine)[0] > 0


def test_the_rereads_reach_the_metrics() -> None:
    """A run's disturbed windows and re-read requests are counted in the daemon's metrics."""
    from etl.db.state import RunFigures
    from etl.metrics import Metrics
    from etl.run import AccountResult

    metrics = Metrics()
    figures = RunFigures(windows=3, requests=40, disturbed=2, reread_requests=31)
    metrics.record_run(AccountResult("main", "sync", "ok", figures), datetime.now(UTC))
    value = metrics.registry.get_sample_value
    assert value("cdr_etl_disturbed_windows_total", {"account": "main"}) == 2
    assert value("cdr_etl_reread_requests_total", {"account": "main"}) == 31


def test_the_summary_line_tells_of_the_rereads() -> None:
    """The run's summary line says how many windows were re-read and at what cost."""
    from etl.db.state import RunFigures
    from etl.run import AccountResult

    quiet = AccountResult("main", "sync", "ok", RunFigures(windows=3)).summary()
    assert "re-read" not in quiet
    figures = RunFigures(windows=3, disturbed=2, reread_requests=31)
    line = AccountResult("main", "sync", "ok", figures).summary()
    assert "2 windows re-read in an order-proof way (31 extra requests" in line
