"""Fixtures: one migrated database per test session on a real PostgreSQL, emptied before
each test that uses it; migration tests make their own empty databases."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from etl.db.engine import make_engine
from etl.db.migrate import upgrade
from tests.dbutil import create_database, drop_database, truncate_all


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head with Alembic."""
    url = create_database()
    engine = make_engine(url, pool_size=1)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_database(url)


@pytest.fixture
def db_url(database_url: str) -> str:
    """The session database, emptied for this test."""
    truncate_all(database_url)
    return database_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the emptied session database; fails the test if it leaks connections."""
    engine = make_engine(db_url, pool_size=4)
    yield engine
    leaked = engine.pool.checkedout()  # type: ignore[attr-defined]
    engine.dispose()
    assert leaked == 0, f"{leaked} connection(s) still checked out at teardown"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """No CDR_ETL_* or DATABASE_URL variables from the machine leak into a test."""
    for name in list(os.environ):
        if name.startswith("CDR_ETL_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
