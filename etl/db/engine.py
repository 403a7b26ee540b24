"""Engines: the configured database URL, or the embedded PostgreSQL server (pgserver)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from etl.config import Settings
from etl.db.url import database_password, embedded_url, stop_embedded
from etl.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "database_url",
    "embedded_url",
    "engine_from_settings",
    "make_engine",
    "stop_embedded",
]


def database_url(settings: Settings) -> str:
    """The configured URL (with the password from database_password_file, if given), or
    the embedded server's."""
    if not settings.database_url:
        return embedded_url(settings.home)
    password = database_password(settings)
    if password is None:
        return settings.database_url
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
        dbapi_connection.add_notice_handler(_log_server_warning)

    return engine


def _log_server_warning(diagnostic: Any) -> None:
    """A WARNING the server sends (the kept data's functions say so when kept rows no
    longer match their calls) goes to our log; lesser notices do not."""
    if diagnostic.severity_nonlocalized == "WARNING":
        log.warning("database: %s", diagnostic.message_primary)


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    return make_engine(database_url(settings), **kwargs)
