"""Where the database is, without SQLAlchemy: the embedded PostgreSQL server (pgserver),
the password from `database_password_file`, and a plain psycopg connection for the commands
that only read a little (`status`), so that they answer without SQLAlchemy's import."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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


_LISTS = ("host", "hostaddr", "port")  # libpq takes several, comma-separated


def connect_args(url: str) -> dict[str, Any]:
    """libpq's keywords for a postgresql+psycopg:// URL, as SQLAlchemy's psycopg dialect
    makes them: host, port, user, password, dbname from the URL (percent-decoded, an invalid
    escape kept as written) and every query parameter (host=/socket/dir for a socket). The
    URL itself never reaches libpq, whose URI parser refuses what SQLAlchemy accepts (an
    empty host, a literal % in a password)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("database_url: not a valid URL (is the port a number?)") from None
    found = {
        "host": unquote(parts.hostname or ""),
        "port": port,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")),
    }
    args: dict[str, Any] = {key: value for key, value in found.items() if value}
    for key, value in parse_qsl(parts.query):
        args[key] = f"{args[key]},{value}" if key in args and key in _LISTS else value
    return args


def connect(settings: Settings) -> psycopg.Connection[DictRow]:
    """A psycopg connection (autocommit, rows as dicts, session zone UTC, as the engines'
    connections) to the configured database or the embedded server."""
    import psycopg
    from psycopg.rows import dict_row

    args = connect_args(settings.database_url or embedded_url(settings.home))
    password = database_password(settings)
    if password is not None:
        args["password"] = password
    args.update(application_name="cdr-etl", connect_timeout=10)
    try:
        conn = psycopg.connect(autocommit=True, row_factory=dict_row, **args)
    except psycopg.ProgrammingError as exc:  # an option libpq does not know: bad settings
        raise ConfigError(f"database_url: {str(exc).strip().splitlines()[0]}") from None
    conn.execute("SET TIME ZONE 'UTC'")
    return conn
