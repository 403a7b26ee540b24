"""`cdr-etl check` against the simulator and a real PostgreSQL: one line per finding, the
right exit code, and the password never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etl.check import plausible_clock
from etl.db.engine import make_engine
from etl.db.migrate import upgrade
from etl.simulator import SimAccount, Simulator, SimulatorServer
from tests.dbutil import fresh_database

USERNAME, PASSWORD = "8569841", "98765432109"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    # busy enough that the provider's last 24 hours have calls at both ends at any hour and
    # on any weekday (a quiet Sunday night left an hour of doubt on the clock's offset)
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone="America/Costa_Rica", calls_per_hour=3000
    )
    with SimulatorServer(Simulator([account], start=NOW - timedelta(days=2))) as running:
        yield running


def check(
    server: SimulatorServer, db_url: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    settings = {
        "CDR_ETL_DATABASE_URL": db_url,
        "CDR_ETL_API_URL": server.url,
        "CDR_ETL_USERNAME": USERNAME,
        "CDR_ETL_PASSWORD": PASSWORD,
        "CDR_ETL_TIMEZONE": "America/Costa_Rica",
        "CDR_ETL_HOME": str(tmp_path),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "etl", "check"], env={**clean, **settings},
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


def test_a_sound_setup_is_all_ok(server: SimulatorServer, db_url: str, tmp_path: Path) -> None:
    """Settings, database, API and the account's credentials and clock: ok, exit 0."""
    result = check(server, db_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert [line.split()[0] for line in found] == ["ok"] * 6
    assert any("credentials of endpoint 8569841 accepted" in line for line in found)
    assert any("clock America/Costa_Rica plausible" in line for line in found)
    assert PASSWORD not in result.stdout + result.stderr


def test_a_wrong_password_fails_without_printing_it(
    server: SimulatorServer, db_url: str, tmp_path: Path
) -> None:
    """A refused password is one FAIL line that names the credentials; exit 1."""
    wrong = "11122233344"
    result = check(server, db_url, tmp_path, CDR_ETL_PASSWORD=wrong)
    assert result.returncode == 1
    (failed,) = [line for line in lines(result) if line.startswith("FAIL")]
    assert "credentials refused" in failed
    assert wrong not in result.stdout + result.stderr


@pytest.mark.parametrize(("zone", "way"), [("Pacific/Honolulu", "4 h in the future"),
                                           ("Europe/Madrid", "older than 24 hours")])  # fmt: skip
def test_a_wrong_zone_fails_with_the_zone_that_fits(
    server: SimulatorServer, db_url: str, tmp_path: Path, zone: str, way: str
) -> None:
    """The provider's clock read on a wrong zone lands whole hours off: FAIL, naming the
    offset and America/Costa_Rica as a zone that fits."""
    result = check(server, db_url, tmp_path, CDR_ETL_TIMEZONE=zone)
    assert result.returncode == 1
    (failed,) = [line for line in lines(result) if line.startswith("FAIL")]
    assert way in failed
    assert "UTC-06:00 would fit" in failed
    assert "America/Costa_Rica" in failed


def test_a_database_down_fails_and_the_api_is_still_checked(
    server: SimulatorServer, tmp_path: Path
) -> None:
    """No server at the database URL: a FAIL line for it, the account still checked."""
    down = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    result = check(server, down, tmp_path)
    assert result.returncode == 1
    found = lines(result)
    assert any(line.startswith("FAIL  database: cannot reach") for line in found)
    assert any("credentials of endpoint 8569841 accepted" in line for line in found)


def test_a_schema_behind_fails_with_the_command_to_run(
    server: SimulatorServer, tmp_path: Path
) -> None:
    """A database at an older revision: FAIL, saying which and what to run."""
    with fresh_database() as url:
        engine = make_engine(url, pool_size=1)
        upgrade(engine, "0003")
        engine.dispose()
        result = check(server, url, tmp_path)
    assert result.returncode == 1
    (failed,) = [line for line in lines(result) if line.startswith("FAIL")]
    assert "schema at revision 0003" in failed
    assert "run `cdr-etl migrate`" in failed


def test_bad_configuration_exits_2(server: SimulatorServer, db_url: str, tmp_path: Path) -> None:
    """An unknown zone is bad configuration: one line, exit 2."""
    result = check(server, db_url, tmp_path, CDR_ETL_TIMEZONE="Mars/Olympus")
    assert result.returncode == 2
    assert "timezone" in result.stderr.lower()


def test_the_clock_rule_on_its_own() -> None:
    """Pure: times within the last 24 h pass; hours into the future or beyond 24 h fail;
    no CDR at all is a warning, not a failure."""
    now = datetime(2024, 11, 20, 18, 0, tzinfo=UTC)
    zone = "America/Costa_Rica"
    recent = [now - timedelta(hours=h) for h in (0.2, 5, 23.5)]
    assert plausible_clock("a", zone, recent, now).level == "ok"
    assert plausible_clock("a", zone, [t + timedelta(hours=3) for t in recent], now).level == (
        "FAIL"
    )
    assert plausible_clock("a", zone, [t - timedelta(hours=2) for t in recent], now).level == (
        "FAIL"
    )
    assert plausible_clock("a", zone, [], now).level == "warn"
    ahead = plausible_clock("a", zone, [t + timedelta(hours=1) for t in recent], now)
    assert "1 h in the future" in ahead.text
    assert "UTC-05:00 would fit" in ahead.text


@pytest.mark.parametrize(("shift", "way"), [(4, "4 h in the future"), (-7, "7 h older than")])
def test_a_quiet_night_still_names_the_right_offset(shift: int, way: str) -> None:
    """Few calls at night: the newest CDR is 50 minutes old, the oldest 23 h 10 min (both
    ends of the 24 hours are the same hour of the night). A provider on Costa Rica's clock
    read on a zone 4 hours behind or 7 hours ahead is still said to be UTC-06:00."""
    now = datetime(2024, 11, 20, 8, 0, tzinfo=UTC)  # 02:00 in Costa Rica
    zone = "Pacific/Honolulu" if shift > 0 else "Europe/Madrid"
    true_ages = (timedelta(minutes=50), timedelta(hours=9), timedelta(hours=23, minutes=10))
    read = [now - age + timedelta(hours=shift) for age in true_ages]
    finding = plausible_clock("a", zone, read, now)
    assert finding.level == "FAIL"
    assert way in finding.text
    assert "UTC-06:00 would fit" in finding.text
    assert "anywhere" not in finding.text  # 50 minutes at each end leave one whole hour


def test_a_quiet_weekend_night_says_the_offset_is_in_doubt() -> None:
    """Sunday 00:40 in Costa Rica: the newest call 2 h 40 min old, the oldest an hour after
    the 24 hours began. The offset is anywhere from 2 to 5 hours: the finding says so."""
    now = datetime(2026, 11, 29, 6, 40, tzinfo=UTC)
    true_ages = (timedelta(hours=2, minutes=40), timedelta(hours=9), timedelta(hours=23))
    read = [now - age + timedelta(hours=4) for age in true_ages]
    finding = plausible_clock("a", "Pacific/Honolulu", read, now)
    assert finding.level == "FAIL"
    assert "(or anywhere from 2 to 5 h: few calls at both ends of the 24 hours)" in finding.text
