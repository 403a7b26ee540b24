"""Where the database is, without SQLAlchemy: the embedded PostgreSQL server (pgserver),
the password from `database_password_file`, and a plain psycopg connection for the commands
that only read a little (`status`), so that they answer without SQLAlchemy's import."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from etl.config import Settings
from etl.errors import ConfigError

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow

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


def database_password(settings: Settings) -> str | None:
    """The password of `database_password_file` (None: not configured)."""
    path = settings.database_password_file
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"database_password_file: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"database_password_file: cannot read {path}: {exc.strerror}") from None


def connect(settings: Settings) -> psycopg.Connection[DictRow]:
    """A psycopg connection (autocommit, rows as dicts, session zone UTC, as the engines'
    connections) to the configured database or the embedded server."""
    import psycopg
    from psycopg.rows import dict_row

    url = settings.database_url or embedded_url(settings.home)
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - a malformed URL raises here, not at connect
    except ValueError:
        raise ConfigError("database_url: not a valid URL (is the port a number?)") from None
    options: dict[str, Any] = {}
    password = database_password(settings)
    if password is not None:
        options["password"] = password
    return psycopg.connect(
        urlunsplit(parts._replace(scheme="postgresql")),  # libpq's name, not SQLAlchemy's
        autocommit=True,
        row_factory=dict_row,
        application_name="cdr-etl",
        connect_timeout=10,
        options="-c TimeZone=UTC",
        **options,
    )
