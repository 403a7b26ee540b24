"""The README stays true: its example SQL runs on a migrated database, the commands it
names exist, and the environment variables it documents are the ones the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from etl.cli import cli
from etl.config import KNOWN_ENV
from etl.demo import EXAMPLES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def example_queries() -> list[str]:
    block = README.split("Example queries:", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return [s.strip() for s in block.split(";") if s.strip()]


@pytest.mark.parametrize("sql", [*example_queries(), *(sql for _, sql in EXAMPLES)])
def test_example_sql_runs(engine: Engine, sql: str) -> None:
    """Each example query of the README and of the demo runs on the migrated schema."""
    with engine.connect() as conn:
        conn.execute(text(sql.rstrip(";")))


def test_documented_commands_exist() -> None:
    """Every `cdr-etl <command>` in the README is a command of the CLI."""
    named = set(re.findall(r"`cdr-etl ([a-z-]+)", README))
    assert named
    assert named <= set(cli.commands)
    assert set(cli.commands) <= named  # and every command is documented


def test_documented_variables_are_read() -> None:
    """Every CDR_ETL_* variable in the README is one the settings read, and back."""
    documented = set(re.findall(r"CDR_ETL_[A-Z_]+[A-Z]", README))
    documented -= {"CDR_ETL_DB_PASSWORD_FILE"}  # a compose-file variable, not a setting
    assert documented <= set(KNOWN_ENV)
    assert {v for v in KNOWN_ENV if v.startswith("CDR_ETL_")} - documented == set()
    assert "`DATABASE_URL`" in README
