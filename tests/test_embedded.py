"""The embedded PostgreSQL: started in a data folder, reused, stopped cleanly, data kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from etl.db import url as url_module
from etl.db.engine import embedded_url, make_engine, stop_embedded


def _postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().splitlines()[0])


def _running(pid: int | None) -> bool:
    """The process exists and is not a zombie (a server we started and stopped stays a
    zombie child of this process until it exits)."""
    status = Path(f"/proc/{pid}/status")
    if pid is None or not status.exists():
        return False
    return "\nState:\tZ" not in status.read_text()


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A folder outside pytest's own temporary root: pgserver runs initdb as another user
    and opens the folders above the data for it, and a second pytest session on the
    machine closes pytest's root again (mode 0700) while this one runs."""
    path = Path(tempfile.mkdtemp(prefix="cdr-etl-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_embedded_server_starts_is_reused_and_stops(own_tmp: Path) -> None:
    """A server starts in CDR_ETL_HOME, a second call reuses it, stop ends it, and the
    next start finds the data again."""
    home = own_tmp / "home"
    url = embedded_url(home)
    assert embedded_url(home) == url  # reused within the process
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (x int)"))
        conn.execute(text("INSERT INTO kept VALUES (42)"))
    engine.dispose()
    pid = _postmaster_pid(home / "pgdata")
    assert _running(pid)
    stop_embedded(home)
    assert (home / "pgdata").resolve() not in url_module._servers
    assert not _running(pid)
    engine = make_engine(embedded_url(home), pool_size=1)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM kept")).scalar() == 42
    engine.dispose()
    stop_embedded(home)


@pytest.mark.slow
def test_commands_use_the_embedded_server_without_a_database_url(own_tmp: Path) -> None:
    """With no database URL, `cdr-etl migrate` then `status` run on the embedded server,
    which is stopped when the command exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    env.pop("DATABASE_URL", None)
    env["CDR_ETL_HOME"] = str(own_tmp / "home")
    for command in ("migrate", "status"):
        result = subprocess.run(
            [sys.executable, "-m", "etl", command], env=env, capture_output=True, text=True,
            cwd=own_tmp, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert not _running(_postmaster_pid(own_tmp / "home" / "pgdata"))


def test_missing_embedded_extra_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pgserver installed, the error names the extra and the variable to set."""
    from etl.errors import ConfigError

    monkeypatch.setitem(sys.modules, "pgserver", None)  # import fails
    with pytest.raises(ConfigError, match=r"cdr-etl\[embedded\].*CDR_ETL_DATABASE_URL"):
        embedded_url(tmp_path / "nowhere")
