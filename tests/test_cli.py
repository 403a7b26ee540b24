"""The command line's manners: --help everywhere, one line per error, the right exit code
(0 success, 1 a run failed, 2 bad usage or configuration), no stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from etl.cli import cli


def run(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "etl", *args], env={**clean, "CDR_ETL_HOME": str(tmp_path), **env},
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_command_has_help_even_with_a_bad_configuration(tmp_path: Path) -> None:
    """`cdr-etl <command> --help` explains itself, whatever the settings say."""
    for command in sorted(cli.commands):
        result = run(command, "--help", tmp_path=tmp_path, CDR_ETL_SYNC_WINDOW="soon")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage: cdr-etl" in result.stdout
        assert len(result.stdout.splitlines()) > 3


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("status",), {"CDR_ETL_SYNC_WINDOW": "soon"}, "cdr-etl: error: sync.window: "),
        (("sync",), {"CDR_ETL_DATABASE_URL": "postgresql://u@h/db"}, "accounts: none configured"),
        (("sync", "--account", "nope"), {"CDR_ETL_USERNAME": "8569841"}, "unknown account 'nope'"),
        (("status",), {"CDR_ETL_DATABASE_URL": "postgresql://u@h:port/db"}, "database_url: "),
        (("sync",), {"CDR_ETL_USERNAME": "8569841", "CDR_ETL_DATABASE_URL": "postgresql://u@h/d"},
         "CDR_ETL_PASSWORD is not set"),
        (("demo",), {"CDR_ETL_USERNAME": "8569841", "CDR_ETL_CONFIG": ""}, None),
    ],
)  # fmt: skip
def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str | None
) -> None:
    """A bad setting or argument: exit 2 and one line naming it."""
    if message is None:  # an account named like the demo's is refused
        (tmp_path / "cdr-etl.toml").write_text('[[accounts]]\nname = "demo"\nusername = "1"\n')
        message = "an account named 'demo' is configured"
    result = run(*args, tmp_path=tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("backfill", "--account", "default", "--start", "yesterday", "--end", "2024-01-02"),
        ("backfill", "--account", "default", "--start", "2024-01-02", "--end", "2024-01-01"),
        ("backfill", "--account", "default", "--start", "2024-01-01", "--end", "2024-01-02",
         "--window", "0s"),
        ("backfill", "--account", "default", "--start", "2024-01-01", "--end", "2099-01-02"),
        ("simulate", "--timezone", "Mars/Olympus_Mons"),
        ("--log-level", "loud", "status"),
        ("sync", "--no-such-option"),
        ("no-such-command",),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Bad usage exits 2 with click's usage message, never a stack trace (and before any
    database is touched: none is reachable here)."""
    result = run(
        *args, tmp_path=tmp_path, CDR_ETL_USERNAME="8569841", CDR_ETL_PASSWORD="1",
        CDR_ETL_DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/db",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Error: " in result.stderr.splitlines()[-1]


def test_a_backfill_may_end_up_to_a_day_ahead_not_further(tmp_path: Path) -> None:
    """An --end a century ahead is a typo, refused with the account's clock named; the end
    of today is a range like any other (it fails here on the database, not on --end)."""
    env = {"CDR_ETL_USERNAME": "8569841", "CDR_ETL_PASSWORD": "1", "CDR_ETL_TIMEZONE": "Asia/Tokyo",
           "CDR_ETL_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/db"}  # fmt: skip
    far = run("backfill", "--account", "default", "--start", "2024-01-01 00:00:00",
              "--end", "2099-01-01 00:00:00", tmp_path=tmp_path, **env)  # fmt: skip
    assert far.returncode == 2
    last = far.stderr.splitlines()[-1]
    assert "'--end': 2099-01-01 00:00:00 is more than a day after now" in last
    assert "in Asia/Tokyo" in last
    today = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    near = run("backfill", "--account", "default", "--start", f"{today} 00:00:00",
               "--end", f"{today} 23:59:59", tmp_path=tmp_path, **env)  # fmt: skip
    assert near.returncode == 1
    assert one_error_line(near).startswith("cdr-etl: error: database: ")


def test_database_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """An unreachable database fails the run (exit 1) with one line, no password."""
    result = run(
        "status", tmp_path=tmp_path,
        CDR_ETL_DATABASE_URL="postgresql+psycopg://u:dbsecret99@127.0.0.1:1/db",
    )  # fmt: skip
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("cdr-etl: error: database: ")
    assert "dbsecret99" not in result.stderr + result.stdout


@pytest.mark.parametrize("args", [("--help",), ("sync", "--help"), ("simulate", "--help")])
def test_help_pays_for_no_heavy_import(args: tuple[str, ...]) -> None:
    """`--help` loads click alone: not SQLAlchemy, pydantic, rich, httpx or Alembic (each
    command imports what it needs, so an operator's `--help` answers at once)."""
    probe = (
        "import sys\n"
        "from etl.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sqlalchemy', 'pydantic', 'rich', 'httpx', 'alembic', 'psycopg', 'orjson')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_no_command_imports_the_orm() -> None:
    """The models are Core tables: the sync, backfill, daemon and live paths never load
    SQLAlchemy's ORM (about 0.1 s of every start)."""
    probe = (
        "import sys\n"
        "import etl.backfill, etl.daemon, etl.live, etl.sync, etl.verify, etl.db.rollup\n"
        "print(sorted(m for m in sys.modules if m.startswith('sqlalchemy.orm')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_installed_command_runs_from_any_folder(tmp_path: Path) -> None:
    """The console script of the install (not `python -m` from the checkout) finds the
    package from an unrelated folder: the install is whole."""
    script = Path(sys.executable).parent / "cdr-etl"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: cdr-etl" in result.stdout
