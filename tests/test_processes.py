"""Real processes: `cdr-etl` subprocesses killed with SIGKILL, run side by side, and a
database connection cut mid-run, each checked against the simulator's ground truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from etl.db.models import backfill_windows, cdrs, runs, watermarks
from etl.db.state import ABANDONED
from etl.simulator import SimAccount, Simulator, SimulatorServer
from tests.test_rollup import assert_kept_equals_recomputed

pytestmark = pytest.mark.slow

USERNAME, PASSWORD, TZ = "8569841", "98765432109", "America/Costa_Rica"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A simulator on the real clock: five days of a busy account."""
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone=TZ, seed=11, calls_per_hour=240
    )
    simulator = Simulator([account], start=datetime.now(UTC) - timedelta(days=5))
    with SimulatorServer(simulator) as server:
        yield server


def cli_env(db_url: str, server: SimulatorServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    env.update(
        CDR_ETL_DATABASE_URL=db_url,
        CDR_ETL_API_URL=server.url,
        CDR_ETL_USERNAME=USERNAME,
        CDR_ETL_PASSWORD=PASSWORD,
        CDR_ETL_TIMEZONE=TZ,
        CDR_ETL_HOME=str(tmp_path / "home"),
        CDR_ETL_API_PAGE_SIZE="100",
        CDR_ETL_SYNC_INITIAL_LOOKBACK="6h",
        CDR_ETL_LOG_LEVEL="DEBUG",
        **extra,
    )
    return env


def cdr_etl(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etl", "migrate"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def backfill_args(start: datetime, end: datetime, *extra: str) -> tuple[str, ...]:
    return ("backfill", "--account", "default", "--start", f"{start}", "--end", f"{end}",
            "--no-progress", *extra)  # fmt: skip


def has_rows(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.scalar(select(func.count()).select_from(cdrs)))


def stored(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.callid: r.raw for r in conn.execute(select(cdrs.c.callid, cdrs.c.raw))}


def wall(moment: datetime) -> datetime:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(TZ)).replace(tzinfo=None, microsecond=0)


def assert_exact(engine: Engine, server: SimulatorServer, start: datetime, end: datetime) -> None:
    """Every CDR served in [start, end] is stored once, as served; nothing else is stored
    but those of the second next to each end (asked too, as the bounds may be exclusive)."""
    truth = server.sim.truth_between(USERNAME, start, end)
    second = timedelta(seconds=1)
    around = server.sim.truth_between(USERNAME, start - second, end + second)
    rows = stored(engine)
    assert truth
    assert set(truth) <= set(rows) <= set(around), (len(rows), len(truth), len(around))
    assert all(rows[k] == around[k] for k in rows)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(cdrs)) == len(rows)


def wait_until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_backfill_killed_at_random_moments_resumes_exactly(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """SIGKILL a backfill three times mid-run; the re-run asks the provider only for the
    windows not marked done, and completes it: exact, no doubles."""
    env = cli_env(db_url, sim, tmp_path)
    end = wall(datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0)
    start = end - timedelta(hours=24)
    args = backfill_args(start, end, "--window", "1h", "--concurrency", "3")
    rng = random.Random(5)
    migrate(env)
    for _ in range(3):
        with engine.connect() as conn:
            before = conn.scalar(select(func.count()).select_from(cdrs)) or 0
        target = before + rng.randint(50, 1500)
        process = cdr_etl(*args, env=env)

        def far_enough(p: subprocess.Popen[str] = process, n: int = target) -> bool:
            with engine.connect() as conn:
                count = conn.scalar(select(func.count()).select_from(cdrs)) or 0
            return count >= n or p.poll() is not None

        wait_until(far_enough)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert_kept_equals_recomputed(engine)  # the rollups of what the killed run committed
    with engine.connect() as conn:
        stored_windows = {
            f"{s:%Y-%m-%d %H:%M:%S}"
            for s in conn.execute(select(backfill_windows.c.window_start)).scalars()
        }
    assert len(stored_windows) < 24, "the kills left nothing to resume"
    asked_before = sim.sim.stats.windows
    done = subprocess.run([sys.executable, "-m", "etl", *args], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    asked = {  # by the windows' starts (each is asked from the second before)
        f"{datetime.fromisoformat(w) + timedelta(seconds=1):%Y-%m-%d %H:%M:%S}"
        for w, n in sim.sim.stats.windows.items()
        if n > asked_before.get(w, 0)
    }
    every = {f"{start + timedelta(hours=h):%Y-%m-%d %H:%M:%S}" for h in range(24)}
    assert asked == every - stored_windows  # the windows not done, and only those
    assert_exact(engine, sim, start, end)
    with engine.connect() as conn:
        windows = conn.scalar(select(func.count()).select_from(backfill_windows))
        history = conn.execute(select(runs.c.kind, runs.c.status, runs.c.error)).all()
        marks = conn.scalar(select(func.count()).select_from(watermarks))
    assert windows == 24
    assert {kind for kind, _, _ in history} == {"backfill"}
    # the killed runs are no longer shown running: failed, as the next run found them
    assert sorted((status, error) for _, status, error in history) == [
        *[("failed", ABANDONED)] * 3,
        ("ok", None),
    ]
    assert_kept_equals_recomputed(engine)
    assert marks == 0  # a backfill leaves the incremental watermarks alone


def test_status_tells_what_the_database_holds_without_sqlalchemy(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """`cdr-etl status` before and after a sync: the account, its passes, its last run and
    its rows, as stored; through psycopg alone (no SQLAlchemy, Alembic or httpx import),
    with the database password from its file, which it never prints."""
    secret = tmp_path / "db-password"
    secret.write_text("dbsecret77\n")
    env = cli_env(db_url, sim, tmp_path, CDR_ETL_DATABASE_PASSWORD_FILE=str(secret))
    migrate(env)

    def status() -> str:
        out, err = cdr_etl("status", env=env).communicate(timeout=120)
        assert err == "", err
        assert "dbsecret77" not in out
        assert PASSWORD not in out
        return out

    before = status()
    assert f"default  endpoint {USERNAME}, clock {TZ}" in before
    assert "not started" in before
    assert "last run: never" in before
    assert "rows stored: 0 " in before
    sync = cdr_etl("sync", env=env)
    _, err = sync.communicate(timeout=300)
    assert sync.returncode == 0, err
    after = status()
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(cdrs))
        mark = conn.scalar(select(watermarks.c.position).where(watermarks.c.pass_name == "2m"))
        fetched = conn.scalar(select(runs.c.fetched).where(runs.c.kind == "sync"))
    assert rows
    assert mark is not None
    assert f"rows stored: {rows} " in after
    assert f"2m   │ {mark:%Y-%m-%d %H:%M:%S}" in after
    assert "last run: sync ok at " in after
    assert f"fetched {fetched}, inserted {rows}," in after
    probe = (
        "import sys\n"
        "from etl.cli import main\n"
        "try:\n"
        "    main(['status'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('sqlalchemy', 'alembic', 'httpx')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_two_syncs_at_once_are_exact(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Two `cdr-etl sync` processes started together: one syncs, the other skips or
    follows; the data is exact."""
    env = cli_env(db_url, sim, tmp_path)
    migrate(env)
    first, second = cdr_etl("sync", env=env), cdr_etl("sync", env=env)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0, outputs[0][1]
    assert second.returncode == 0, outputs[1][1]
    with engine.connect() as conn:
        mark = conn.scalar(select(watermarks.c.position).where(watermarks.c.pass_name == "2m"))
    assert mark is not None
    begin = wall(datetime.now(UTC)) - timedelta(hours=6, minutes=5)
    settled = mark - timedelta(hours=1)  # calls still going on at the read come later
    truth = sim.sim.truth_between(USERNAME, begin + timedelta(minutes=10), settled)
    rows = stored(engine)
    assert truth
    assert set(truth) <= set(rows)
    assert all(rows[k] == truth[k] for k in truth)
    assert set(rows) <= set(sim.sim.truth(USERNAME))


def test_sync_and_backfill_side_by_side(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """A backfill over the range a sync reads, at the same time: no loss, no doubles,
    and the watermark is where the sync put it."""
    env = cli_env(db_url, sim, tmp_path)
    migrate(env)
    now = wall(datetime.now(UTC))
    start, end = now - timedelta(hours=30), now - timedelta(hours=2)
    backfill = cdr_etl(*backfill_args(start, end), env=env)
    sync = cdr_etl("sync", env=env)
    for process in (backfill, sync):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    truth = sim.sim.truth_between(USERNAME, start, end)
    rows = stored(engine)
    assert truth
    assert {k: rows.get(k) for k in truth} == truth  # the backfilled range is exact
    assert set(rows) <= set(sim.sim.truth(USERNAME))  # nothing the provider does not serve
    with engine.connect() as conn:
        marks: dict[str, datetime] = {
            name: position
            for name, position in conn.execute(
                select(watermarks.c.pass_name, watermarks.c.position)
            )
        }
    assert marks["2m"] >= now - timedelta(minutes=3)  # where the sync put it
    assert_kept_equals_recomputed(engine)  # two writers of one account side by side


def test_connection_cut_mid_run_then_next_run_is_exact(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """The database drops every connection of a running backfill (as a restart does): the
    run fails cleanly, and the re-run is exact."""
    env = cli_env(db_url, sim, tmp_path)
    migrate(env)
    end = wall(datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0)
    start = end - timedelta(hours=24)
    args = backfill_args(start, end)
    process = cdr_etl(*args, env=env)
    wait_until(lambda: has_rows(engine))
    with engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'cdr-etl' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        )
    out, err = process.communicate(timeout=300)
    assert process.returncode in (0, 1), err
    again = subprocess.run([sys.executable, "-m", "etl", *args], env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert_exact(engine, sim, start, end)


def test_database_restart_mid_run_then_next_run_is_exact(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A real PostgreSQL restart (pg_ctl restart -m fast) while a backfill writes: the run
    fails cleanly or survives, and the re-run is exact."""
    import pgserver

    # pgserver makes its command wrappers at import time, out of mypy's sight
    pg_ctl: Callable[..., Any] = pgserver.pg_ctl  # type: ignore[attr-defined]

    from etl.db.engine import embedded_url, make_engine, stop_embedded
    from etl.db.migrate import upgrade

    user = "pgserver" if os.geteuid() == 0 else None
    url = embedded_url(tmp_path / "restart")
    engine = make_engine(url, pool_size=2)
    try:
        upgrade(engine)
        env = cli_env(url, sim, tmp_path)
        end = wall(datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0)
        start = end - timedelta(hours=24)
        args = backfill_args(start, end)
        process = cdr_etl(*args, env=env)
        wait_until(lambda: has_rows(engine))
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=tmp_path / "restart" / "pgdata",
                        user=user)  # fmt: skip
        out, err = process.communicate(timeout=300)
        assert process.returncode in (0, 1), err
        again = subprocess.run([sys.executable, "-m", "etl", *args], env=env,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        assert again.returncode == 0, again.stderr
        engine.dispose()
        assert_exact(engine, sim, start, end)
    finally:
        engine.dispose()
        stop_embedded(tmp_path / "restart")
        # The restarted postmaster is not the process pgserver started: stop it by hand.
        pgdata = tmp_path / "restart" / "pgdata"
        if (pgdata / "postmaster.pid").exists():
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def test_a_sync_of_more_accounts_than_connections_at_once(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """`sync.concurrency` 20 over 20 accounts: each account in flight holds its lock
    connection and needs a load connection, so the command's pool is sized for both (a
    fixed pool of 16 left every worker waiting for a second connection until they failed)."""
    config = tmp_path / "cdr-etl.toml"
    config.write_text(
        "[sync]\nconcurrency = 20\n\n"
        + "".join(
            f'[[accounts]]\nname = "a{n:02d}"\nusername = "{USERNAME}"\n'
            f'password_env = "SIM_PASSWORD"\ntimezone = "{TZ}"\n\n'
            for n in range(20)
        )
    )
    env = cli_env(db_url, sim, tmp_path, CDR_ETL_CONFIG=str(config), SIM_PASSWORD=PASSWORD)
    for name in ("CDR_ETL_USERNAME", "CDR_ETL_PASSWORD", "CDR_ETL_TIMEZONE"):
        del env[name]
    env["CDR_ETL_SYNC_INITIAL_LOOKBACK"] = "20m"
    migrate(env)
    sync = cdr_etl("sync", env=env)
    out, err = sync.communicate(timeout=120)
    assert sync.returncode == 0, err[-2000:]
    assert out.count(": ok in ") == 20, out
    with engine.connect() as conn:  # each pass of each account moved (rows or not: night)
        moved = conn.scalar(select(func.count()).select_from(watermarks))
    assert moved == 20 * 3
