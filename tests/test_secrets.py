"""The password travels in every request's query string: it must appear in no log line at
any level, no error, no run-history row, no table, whatever goes wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from etl.db.models import metadata
from etl.simulator import Faults, SimAccount, Simulator, SimulatorServer

pytestmark = pytest.mark.slow

USERNAME, PASSWORD, WRONG = "8569841", "98765432109", "55566677788"
FAULTS = Faults(
    error_5xx=0.1, rate_429=0.05, retry_after=0, drop=0.05, truncate=0.05,
    error_200_text=0.03, error_200_html=0.05, slow=0.02, slow_seconds=0.05,
)  # fmt: skip


def dump(engine: Engine) -> str:
    """Every row of every table, as text."""
    with engine.connect() as conn:
        return "\n".join(
            str(row)
            for table in metadata.sorted_tables
            for row in conn.execute(text(f'SELECT t::text FROM "{table.name}" t'))
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_password_never_leaks_through_faults_or_refusals(
    engine: Engine, db_url: str, tmp_path: Path, log_format: str
) -> None:
    """Sync through every fault kind at DEBUG, then with a wrong password: neither
    password shows in stdout, stderr or any table."""
    sim = Simulator(
        [SimAccount(username=USERNAME, password=PASSWORD, seed=2, calls_per_hour=60)],
        start=datetime.now(UTC) - timedelta(days=2),
        faults=FAULTS,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    with SimulatorServer(sim) as server:
        env.update(
            CDR_ETL_DATABASE_URL=db_url, CDR_ETL_API_URL=server.url, CDR_ETL_USERNAME=USERNAME,
            CDR_ETL_LOG_LEVEL="DEBUG", CDR_ETL_LOG_FORMAT=log_format,
            CDR_ETL_HOME=str(tmp_path), CDR_ETL_API_PAGE_SIZE="200",
            CDR_ETL_API_MAX_ATTEMPTS="4", CDR_ETL_SYNC_INITIAL_LOOKBACK="3h",
        )  # fmt: skip
        outputs = []
        for password in (PASSWORD, WRONG):
            for command in ("sync", "live", "verify --account default"):
                result = subprocess.run(
                    [sys.executable, "-m", "etl", *command.split()],
                    env={**env, "CDR_ETL_PASSWORD": password},
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                outputs.append(result.stdout + result.stderr)
        assert sum(sim.stats.faults.values()) > 0  # the faults really happened
    everything = "\n".join(outputs) + dump(engine)
    assert "retry" in everything.lower()  # the retries were logged...
    assert "authentication" in everything.lower()  # ...and the refusal reported
    for secret in (PASSWORD, WRONG):
        assert secret not in everything
