"""`cdr-etl demo`, end to end against the test database: the README's first command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.db.models import cdrs, live_samples, runs

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_again(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """The demo loads a week, syncs, snapshots live calls and explains how to query; a
    second run stores nothing twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    env.update(CDR_ETL_DATABASE_URL=db_url, CDR_ETL_HOME=str(tmp_path / "home"))

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "etl", "demo"], env=env, capture_output=True, text=True,
            cwd=tmp_path, timeout=120,
        )  # fmt: skip

    first = demo()
    assert first.returncode == 0, first.stderr
    match = re.search(r"Stored ([\d,]+) CDR legs .*: ([\d,]+) calls .* ASR ([\d.]+)%", first.stdout)
    assert match, first.stdout
    legs = int(match[1].replace(",", ""))
    assert legs > 1000
    assert 0 < float(match[3]) <= 100
    assert "psql" in first.stdout
    assert first.stdout.count("SELECT") == 3
    both = first.stdout + first.stderr
    assert both.count("backfill demo: ok") == 1  # each run's summary once, not also logged
    assert both.count("sync demo: ok") == 1
    assert "Where to look next:" in first.stdout
    assert "cdr-etl check" in first.stdout
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(cdrs)) == legs
        assert conn.scalar(select(func.count()).select_from(live_samples)) == 1
    second = demo()
    assert second.returncode == 0, second.stderr
    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(cdrs))
        statuses = set(conn.execute(select(runs.c.status)).scalars())
    assert count is not None
    assert count >= legs  # new calls may have ended meanwhile, none doubled (primary key)
    assert statuses == {"ok"}
