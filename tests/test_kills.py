"""SIGKILL of a real `cdr-etl sync` mid-window: whatever it committed holds up (no
watermark ahead of its data), and the next run is exact."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.db.models import cdrs, watermarks
from etl.simulator import SimAccount, Simulator, SimulatorServer
from etl.simulator.faults import Faults
from tests.test_processes import (
    PASSWORD,
    TZ,
    USERNAME,
    cdr_etl,
    cli_env,
    migrate,
    stored,
    wait_until,
    wall,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """test_processes' account on the real clock, each answer 0.1 s late: a sync lasts long
    enough to be killed mid-window at any hour (six hours of a night hold few calls)."""
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone=TZ, seed=11, calls_per_hour=240
    )
    simulator = Simulator(
        [account],
        start=datetime.now(UTC) - timedelta(days=5),
        faults=Faults(slow=1.0, slow_seconds=0.1),
    )
    with SimulatorServer(simulator) as server:
        yield server


def assert_covered(engine: Engine, server: SimulatorServer, begin: datetime) -> None:
    """Every CDR up to each pass's watermark, less an hour for calls still going on at the
    read, is stored as served; nothing is stored the provider does not serve."""
    with engine.connect() as conn:
        found = conn.execute(select(watermarks.c.pass_name, watermarks.c.position))
        marks: dict[str, datetime] = {name: position for name, position in found}
    rows = stored(engine)
    for name, mark in marks.items():
        truth = server.sim.truth_between(USERNAME, begin, mark - timedelta(hours=1))
        missing = set(truth) - set(rows)
        assert not missing, f"pass {name} at {mark}: {len(missing)} CDRs missing"
        assert all(rows[k] == truth[k] for k in truth if name == "1h")
    assert set(rows) <= set(server.sim.truth(USERNAME))


def test_sync_killed_mid_window_then_next_run_is_exact(
    engine: Engine,
    db_url: str,
    sim: SimulatorServer,
    tmp_path: Path,
) -> None:
    """SIGKILL `cdr-etl sync` once some pages of a window are stored: no watermark is ahead
    of the data, and the next sync exits 0 and is exact."""
    env = cli_env(db_url, sim, tmp_path)
    migrate(env)
    begin = wall(datetime.now(UTC)) - timedelta(hours=5, minutes=50)
    served = len(sim.sim.truth_between(USERNAME, begin, wall(datetime.now(UTC))))
    process = cdr_etl("sync", env=env)

    def some_pages() -> bool:
        with engine.connect() as conn:
            count = conn.scalar(select(func.count()).select_from(cdrs)) or 0
        return count >= max(1, min(250, served // 3)) or process.poll() is not None

    wait_until(some_pages)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the sync ended before the kill"
    assert_covered(engine, sim, begin)
    again = subprocess.run([sys.executable, "-m", "etl", "sync"], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert_covered(engine, sim, begin)
