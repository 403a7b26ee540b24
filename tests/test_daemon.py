"""The daemon: its schedule, and real `cdr-etl daemon` processes against the simulator:
health and metrics, a clean SIGTERM, one failing account beside a good one, and two
replicas sharing one database."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from etl.config import load_settings
from etl.daemon import Daemon
from etl.db.models import accounts, cdrs, runs, watermarks
from etl.simulator import SimAccount, Simulator, SimulatorServer

USERNAME, PASSWORD, TZ = "8569841", "98765432109", "America/Costa_Rica"
OTHER, OTHER_PASSWORD = "1234567", "11122233344"


def test_schedule_spells_out_every_job_option(clean_env: None) -> None:
    """Each account gets a sync job (and a live job where live = true), max one instance,
    coalesced, never dropped when late; the first sync runs at start."""
    settings = load_settings(
        {"CDR_ETL_USERNAME": USERNAME, "CDR_ETL_SYNC_INTERVAL": "5m", "CDR_ETL_LIVE": "true"}
    )
    from etl.db.engine import make_engine

    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    account = settings.accounts[0]
    now = datetime(2024, 1, 1, tzinfo=UTC)
    daemon = Daemon(settings, engine, [(account, None)], clock=lambda: now)  # type: ignore[list-item]
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {"sync:default", "live:default"}
    for job in jobs.values():
        assert job.max_instances == 1
        assert job.coalesce is True
        assert job.misfire_grace_time is None
    assert jobs["sync:default"].trigger.interval == timedelta(minutes=5)
    assert jobs["sync:default"].trigger.jitter == 30
    assert jobs["live:default"].trigger.interval == timedelta(seconds=30)
    assert jobs["live:default"].executor == "live"  # never starved by a long catch-up
    assert jobs["sync:default"].next_run_time == now  # catch up at start
    engine.dispose()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    simulator = Simulator(
        [
            SimAccount(
                username=USERNAME, password=PASSWORD, timezone=TZ, seed=3, calls_per_hour=120
            ),
            SimAccount(
                username=OTHER, password=OTHER_PASSWORD, timezone=TZ, seed=4, calls_per_hour=30
            ),
        ],  # fmt: skip
        start=datetime.now(UTC) - timedelta(days=2),
    )
    with SimulatorServer(simulator) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(db_url: str, server: SimulatorServer, tmp_path: Path, toml: str) -> dict[str, str]:
    config = tmp_path / "cdr-etl.toml"
    config.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    env.update(
        CDR_ETL_CONFIG=str(config),
        CDR_ETL_DATABASE_URL=db_url,
        CDR_ETL_API_URL=server.url,
        CDR_ETL_HOME=str(tmp_path / "home"),
        CDR_ETL_LOG_LEVEL="DEBUG",
        CDR_ETL_LOG_FORMAT="json",
        PW_MAIN=PASSWORD,
        PW_OTHER=OTHER_PASSWORD,
    )
    return env


ONE_ACCOUNT = f"""
[sync]
interval = "1s"
jitter = "0s"
live_interval = "1s"
[[accounts]]
name = "main"
username = "{USERNAME}"
password_env = "PW_MAIN"
timezone = "{TZ}"
"""


def start_daemon(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "daemon"],
        env={**env, "CDR_ETL_DAEMON_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "etl", "migrate"], env=env, check=True,
                   capture_output=True)  # fmt: skip


def synced(engine: Engine, name: str = "main") -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                select(func.count())
                .select_from(runs)
                .join(accounts, accounts.c.id == runs.c.account_id)
                .where(accounts.c.name == name, runs.c.status == "ok", runs.c.kind == "sync")
            )
        )


def assert_settled_range_exact(engine: Engine, server: SimulatorServer, name: str = "main",
                               username: str = USERNAME) -> None:  # fmt: skip
    """Every CDR of the range the 2m pass read (less the last hour, whose calls may still
    have been going on) is stored as served; nothing stored that is not served."""
    with engine.connect() as conn:
        account_id = conn.scalar(select(accounts.c.id).where(accounts.c.name == name))
        mark = conn.scalar(
            select(watermarks.c.position).where(
                watermarks.c.account_id == account_id, watermarks.c.pass_name == "2m"
            )
        )
        rows = {
            r.callid: r.raw
            for r in conn.execute(
                select(cdrs.c.callid, cdrs.c.raw).where(cdrs.c.account_id == account_id)
            )
        }
    assert mark is not None
    truth = server.sim.truth_between(
        username, mark - timedelta(hours=20), mark - timedelta(hours=1)
    )
    assert truth
    assert {k: rows.get(k) for k in truth} == truth
    assert set(rows) <= set(server.sim.truth(username))


@pytest.mark.slow
def test_daemon_syncs_serves_health_and_stops_cleanly(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """A real daemon syncs and snapshots live calls, answers /healthz and /metrics, never
    logs the password, and exits 0 soon after SIGTERM."""
    env = daemon_env(db_url, sim, tmp_path, ONE_ACCOUNT)
    migrate(env)
    port = free_port()
    process = start_daemon(env, port)
    try:
        wait_until(lambda: synced(engine))
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        expected = (
            'cdr_etl_requests_total{account="main"}',
            'cdr_etl_rows_total{account="main",outcome="inserted"}',
            'cdr_etl_watermark_lag_seconds{account="main",pass_name="2m"}',
            "cdr_etl_live_calls",
            'cdr_etl_runs_total{account="main",kind="live",status="ok"}',
            'cdr_etl_last_success_timestamp_seconds{account="main",kind="live"}',
            'cdr_etl_disturbed_windows_total{account="main"} 0.0',
            'cdr_etl_reread_requests_total{account="main"} 0.0',
        )
        scraped: list[str] = []

        def scrape_has_every_series() -> bool:
            # the run's row commits a moment before the daemon counts the run in its metrics
            scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            return all(series in scraped[-1] for series in expected)

        wait_until(scrape_has_every_series, timeout=30)
        assert all(PASSWORD not in metrics for metrics in scraped)
    finally:
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert time.monotonic() - began < 20
    assert PASSWORD not in out + err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["event"] == "daemon stopped cleanly" for e in events)
    summaries = [e for e in events if e.get("event_kind") == "run_summary"]
    assert summaries
    assert all(e["account"] == "main" and e["run_id"] for e in summaries)
    assert_settled_range_exact(engine, sim)


@pytest.mark.slow
def test_one_failing_account_does_not_stop_the_others(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """An account with a refused password fails run after run; the good one syncs."""
    toml = (
        ONE_ACCOUNT
        + f"""
[[accounts]]
name = "other"
username = "{OTHER}"
password_env = "PW_WRONG"
timezone = "{TZ}"
live = false
"""
    )
    env = daemon_env(db_url, sim, tmp_path, toml) | {"PW_WRONG": "00000000000"}
    migrate(env)
    process = start_daemon(env, free_port())
    try:
        wait_until(lambda: synced(engine))

        def failed_twice() -> bool:
            with engine.connect() as conn:
                return (conn.scalar(
                    select(func.count()).select_from(runs)
                    .join(accounts, accounts.c.id == runs.c.account_id)
                    .where(accounts.c.name == "other", runs.c.status == "failed")
                ) or 0) >= 2  # fmt: skip

        wait_until(failed_twice)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "00000000000" not in out + err
    assert_settled_range_exact(engine, sim)


@pytest.mark.slow
def test_two_replicas_share_accounts_without_overlap(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """Two daemons on one database: no account is synced by both at once; data exact."""
    env = daemon_env(db_url, sim, tmp_path, ONE_ACCOUNT)
    migrate(env)
    replicas = [start_daemon(env, free_port()) for _ in range(2)]
    try:

        def enough_runs() -> bool:
            with engine.connect() as conn:
                return (conn.scalar(select(func.count()).select_from(runs).where(
                    runs.c.kind == "sync", runs.c.status == "ok")) or 0) >= 6  # fmt: skip

        wait_until(enough_runs)
    finally:
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60) for p in replicas]
    for process, (_, err) in zip(replicas, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    with engine.connect() as conn:
        spans = conn.execute(
            select(runs.c.started_at, runs.c.finished_at)
            .where(runs.c.kind == "sync")
            .order_by(runs.c.started_at)
        ).all()
    for before, after in itertools.pairwise(spans):
        assert before.finished_at is not None
        assert before.finished_at <= after.started_at, "two syncs of one account overlapped"
    assert_settled_range_exact(engine, sim)


def test_health_is_503_when_the_database_or_scheduler_is_down(
    engine: Engine, clean_env: None
) -> None:
    """/healthz answers 200 only while the scheduler runs and the database answers."""
    from etl.db.engine import make_engine

    settings = load_settings({"CDR_ETL_USERNAME": USERNAME, "CDR_ETL_DAEMON_PORT": "0"})
    account = settings.accounts[0]
    dead = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    for db, expected in ((engine, 200), (dead, 503)):
        daemon = Daemon(settings, db, [(account, None)])  # type: ignore[list-item]
        server = daemon.serve_health()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 503  # not started
            daemon.scheduler.start(paused=True)
            assert httpx.get(f"{base}/healthz", timeout=15).status_code == expected
            assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
            assert httpx.get(f"{base}/other", timeout=5).status_code == 404
            daemon.stop.set()
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 503  # stopping
        finally:
            daemon.scheduler.shutdown(wait=False)
            server.shutdown()
            server.server_close()
    dead.dispose()


def run_daemon_quietly(env: dict[str, str]) -> subprocess.Popen[str]:
    """A daemon whose log goes to a file in its home (read back by `log_tail`)."""
    log = Path(env["CDR_ETL_HOME"]).parent / f"daemon-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", "daemon"],
            env={**env, "CDR_ETL_DAEMON_PORT": str(free_port()), "CDR_ETL_LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    _LOGS[process.pid] = log
    return process


_LOGS: dict[int, Path] = {}  # each quiet daemon's log, for the failure messages


def log_tail(process: subprocess.Popen[str]) -> str:
    return _LOGS[process.pid].read_text()[-3000:]


def ok_syncs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(runs)
                .where(runs.c.kind == "sync", runs.c.status == "ok")
            )
            or 0
        )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_daemon_killed_mid_window_then_restarted_is_exact(
    engine: Engine, db_url: str, sim: SimulatorServer, tmp_path: Path
) -> None:
    """SIGKILL the daemon while its first sync stores pages: no watermark is ahead of the
    data; a new daemon catches up and the settled range is exact."""
    env = daemon_env(db_url, sim, tmp_path, ONE_ACCOUNT)
    migrate(env)
    process = run_daemon_quietly(env)
    try:
        wait_until(lambda: has_cdrs(engine, 300) or process.poll() is not None)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, log_tail(process)
        assert ok_syncs(engine) == 0, "killed before its first sync finished"
    finally:
        stop(process)
    again = run_daemon_quietly(env)
    try:
        wait_until(lambda: ok_syncs(engine) >= 2)
    finally:
        stop(again)
    assert again.returncode == 0, log_tail(again)
    assert_settled_range_exact(engine, sim)


def has_cdrs(engine: Engine, at_least: int) -> bool:
    with engine.connect() as conn:
        return (conn.scalar(select(func.count()).select_from(cdrs)) or 0) >= at_least


@pytest.mark.slow
def test_postgres_restart_under_the_daemon_then_exact(sim: SimulatorServer, tmp_path: Path) -> None:
    """A real PostgreSQL restart (pg_ctl restart -m fast, a private server) while the
    daemon syncs: the daemon goes on by itself, its next syncs succeed, and the settled
    range is exact."""
    import pgserver

    from etl.db.engine import embedded_url, make_engine, stop_embedded
    from etl.db.migrate import upgrade

    # pgserver makes its command wrappers at import time, out of mypy's sight
    pg_ctl: Any = pgserver.pg_ctl  # type: ignore[attr-defined]
    user = "pgserver" if os.geteuid() == 0 else None
    home = tmp_path / "restart"
    url = embedded_url(home)
    engine = make_engine(url, pool_size=2)
    process: subprocess.Popen[str] | None = None
    try:
        upgrade(engine)
        env = daemon_env(url, sim, tmp_path, ONE_ACCOUNT)
        process = run_daemon_quietly(env)
        wait_until(lambda: has_cdrs(engine, 100))
        engine.dispose()
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=home / "pgdata", user=user)
        done = ok_syncs(engine)
        wait_until(lambda: ok_syncs(engine) >= done + 2, timeout=180)
        assert process.poll() is None, log_tail(process)
        stop(process)
        assert process.returncode == 0, log_tail(process)
        assert_settled_range_exact(engine, sim)
    finally:
        if process is not None:
            stop(process)
        engine.dispose()
        stop_embedded(home)
        # The restarted postmaster is not the process pgserver started: stop it by hand.
        if (home / "pgdata" / "postmaster.pid").exists():
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=home / "pgdata", user=user)


def test_live_snapshots_and_verifies_are_counted_like_syncs() -> None:
    """A live snapshot's and a verify's requests, retries and failed attempts count as a
    sync's do, and their outcomes in cdr_etl_runs_total; a failed one is one error of its
    kind; a verify's rows are those its repair stored, not the day it compared."""
    from prometheus_client import generate_latest

    from etl.db.state import RunFigures
    from etl.live import LiveResult
    from etl.metrics import Metrics
    from etl.verify import VerifyResult

    metrics, now = Metrics(), datetime.now(UTC)
    outage = RunFigures(requests=6, retries=5)
    outage.errors.update({"5xx": 6})
    metrics.record_live(LiveResult("main", "ok", ringing=2, talking=3,
                                   figures=RunFigures(requests=1)), now)  # fmt: skip
    metrics.record_live(LiveResult("main", "failed", figures=outage), now)
    repaired = RunFigures(requests=1, inserted=4, unchanged=900, rejected=20)
    metrics.record_verify(VerifyResult("main", "differs", figures=repaired), now)
    metrics.record_verify(VerifyResult("main", "failed", figures=RunFigures(requests=1)), now)
    text = generate_latest(metrics.registry).decode()
    for line in (
        'cdr_etl_requests_total{account="main"} 9.0',
        'cdr_etl_retries_total{account="main"} 5.0',
        'cdr_etl_errors_total{account="main",kind="5xx"} 6.0',
        'cdr_etl_errors_total{account="main",kind="live"} 1.0',
        'cdr_etl_errors_total{account="main",kind="verify"} 1.0',
        'cdr_etl_runs_total{account="main",kind="live",status="ok"} 1.0',
        'cdr_etl_runs_total{account="main",kind="live",status="failed"} 1.0',
        'cdr_etl_runs_total{account="main",kind="verify",status="differs"} 1.0',
        'cdr_etl_last_success_timestamp_seconds{account="main",kind="live"}',
        'cdr_etl_live_calls{account="main",state="talking"} 3.0',
        'cdr_etl_rows_total{account="main",outcome="inserted"} 4.0',
    ):
        assert line in text, line
    assert 'outcome="unchanged"' not in text
    assert 'outcome="rejected"' not in text
    assert "run_" not in text  # a failed live or verify is counted once, as its own kind
