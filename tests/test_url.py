"""The database URL as psycopg alone reads it (`status`): what SQLAlchemy accepts works
here too, and a bad URL is one line and exit 2, never with its password."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import make_url

from etl.db.url import connect_args
from etl.errors import ConfigError
from tests.test_cli import one_error_line, run


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:p@db.example:6432/cdr",
         {"host": "db.example", "port": 6432, "user": "u", "password": "p", "dbname": "cdr"}),
        # a socket directory in the query, no host before the path (SQLAlchemy's form)
        ("postgresql+psycopg://postgres@/cdr_etl?host=%2Ftmp%2Fpg%20dir&port=5433",
         {"host": "/tmp/pg dir", "port": "5433", "user": "postgres", "dbname": "cdr_etl"}),
        ("postgresql+psycopg:///cdr?host=/var/run/postgresql",
         {"host": "/var/run/postgresql", "dbname": "cdr"}),
        # percent-encoded characters decoded; a literal % kept as written (as SQLAlchemy does)
        ("postgresql+psycopg://me:p%40ss%2Fw@h/d", {"password": "p@ss/w"}),
        ("postgresql+psycopg://me:50%off@h/d", {"password": "50%off"}),
        ("postgresql+psycopg://u@h/d?sslmode=require&options=-c%20search_path%3Dx",
         {"sslmode": "require", "options": "-c search_path=x"}),
        ("postgresql+psycopg://u@/d?host=a&host=b", {"host": "a,b"}),
    ],
)  # fmt: skip
def test_connect_args_read_what_sqlalchemy_reads(url: str, expected: dict[str, object]) -> None:
    args = connect_args(url)
    assert {key: args.get(key) for key in expected} == expected


def test_a_bad_port_is_configuration() -> None:
    with pytest.raises(ConfigError, match="database_url: not a valid URL"):
        connect_args("postgresql+psycopg://u:secret@h:port/d")


def test_status_on_a_socket_style_url_with_a_percent_in_the_password(
    db_url: str, tmp_path: Path
) -> None:
    """No host before the path, the host in the query, a literal % in the password: the
    form SQLAlchemy (every other command) accepts; `status` answers and prints no secret."""
    url = make_url(db_url)
    host = url.host or str(url.query["host"])
    odd = (
        f"postgresql+psycopg://{url.username}:50%off@/{url.database}"
        f"?host={quote(host, safe='')}&port={url.port or url.query.get('port') or 5432}"
    )
    result = run("status", tmp_path=tmp_path, CDR_ETL_DATABASE_URL=odd)
    assert result.returncode == 0, result.stderr
    assert "50%off" not in result.stdout + result.stderr
    assert "no accounts" in result.stdout


def test_status_with_an_unknown_connection_option_is_exit_2(tmp_path: Path) -> None:
    result = run(
        "status", tmp_path=tmp_path,
        CDR_ETL_DATABASE_URL="postgresql+psycopg://u:dbsecret55@127.0.0.1:1/db?colour=blue",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert line.startswith("cdr-etl: error: database_url: ")
    assert "dbsecret55" not in result.stderr + result.stdout
