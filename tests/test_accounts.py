"""Configured accounts are upserted into `accounts` by name, without any password."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.models import accounts


def test_accounts_are_upserted_by_name(engine: Engine) -> None:
    """A second upsert updates username and zone in place, keeping the id."""
    first = upsert_accounts(
        engine,
        [
            AccountConfig(name="main", username="8569841", password_env="X"),
            AccountConfig(name="other", username="1000002", timezone="America/New_York"),
        ],
    )
    again = upsert_accounts(
        engine, [AccountConfig(name="main", username="0569841", timezone="UTC")]
    )
    assert again["main"] == first["main"]
    with engine.connect() as conn:
        rows = conn.execute(
            select(accounts.c.name, accounts.c.username, accounts.c.timezone).order_by("name")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("main", "0569841", "UTC"),
        ("other", "1000002", "America/New_York"),
    ]


def test_no_accounts_is_a_no_op(engine: Engine) -> None:
    """Upserting nothing touches nothing."""
    assert upsert_accounts(engine, []) == {}


@pytest.mark.parametrize("name", ["has space", "", "x" * 101])
def test_account_names_are_checked(name: str) -> None:
    """Account names are short identifiers."""
    with pytest.raises(ValueError, match="name"):
        AccountConfig(name=name, username="1")
