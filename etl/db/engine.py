"""Engines: the configured database URL, or the embedded PostgreSQL server (pgserver)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from etl.config import Settings
from etl.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "cdr_etl"
_servers: dict[Path, Any] = {}


def embedded_url(
    home: Path, database: str = EMBEDDED_DATABASE, *, keep_running: bool = False
) -> str:
    """Start (or reuse) the embedded PostgreSQL server in `home`/pgdata; return its URL.

    The server is started by the first process that needs it and stopped when the last
    process using it exits (pgserver keeps the list of handles in the data folder), unless
    that process asked to `keep_running` (the demo, so that psql can connect after it).
    """
    pgdata = (home / "pgdata").resolve()
    server = _servers.get(pgdata)
    if server is None:
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError:
            raise ConfigError(
                "CDR_ETL_DATABASE_URL: not set and the embedded server is not installed; "
                "install it with `pip install 'cdr-etl[embedded]'` (Python 3.10-3.12) or set "
                "CDR_ETL_DATABASE_URL=postgresql+psycopg://user@host/db"
            ) from None
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting the embedded PostgreSQL server in %s", pgdata)
        server = pgserver.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode=None if keep_running else "stop"
        )
        _servers[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "1 row" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    info = server.get_postmaster_info()
    if info.socket_dir is not None:
        host = quote(str(info.socket_dir))
        return f"postgresql+psycopg://postgres@/{database}?host={host}&port={info.port}"
    return f"postgresql+psycopg://postgres@{info.hostname}:{info.port}/{database}"


def stop_embedded(home: Path | None = None) -> None:
    """Release this process's handle on the embedded server of `home` (default: all of
    them); a server is stopped when its last handle goes."""
    chosen = [(home / "pgdata").resolve()] if home is not None else list(_servers)
    for pgdata in chosen:
        server = _servers.pop(pgdata, None)
        if server is not None:
            server.cleanup()


def database_url(settings: Settings) -> str:
    """The configured URL (with the password from database_password_file, if given), or
    the embedded server's."""
    if not settings.database_url:
        return embedded_url(settings.home)
    if settings.database_password_file is None:
        return settings.database_url
    path = settings.database_password_file
    try:
        password = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"database_password_file: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"database_password_file: cannot read {path}: {exc.strerror}") from None
    url = make_url(settings.database_url).set(password=password)
    return url.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 8, application_name: str = "cdr-etl") -> Engine:
    try:
        make_url(url).port  # noqa: B018 - a malformed URL raises here, not at first use
    except (ValueError, ArgumentError):
        raise ConfigError("database_url: not a valid URL (is the port a number?)") from None
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"application_name": application_name, "connect_timeout": 10},
    )

    @event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return engine


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    return make_engine(database_url(settings), **kwargs)
