"""The exception tree of cdr-etl, grouped by what the caller does next.

    EtlError
    ├── ConfigError              bad settings or arguments: exit 2, never retried
    ├── SourceError              the CallMyWay API
    │   ├── TransientSourceError     timeout, reset, 5xx, 429 (.retry_after), truncated body
    │   └── FatalSourceError         everything that a retry will not fix
    │       └── AuthError            wrong credentials, in whatever form they come
    ├── RejectedRecord           one record that cannot be normalized: stored in rejects
    ├── LoadError                the database refused; raised from the driver error
    └── BackfillBusy             another backfill of the account is running: exit 1

    Stopped (not an EtlError)    the run was asked to stop; it ends cleanly

Messages are built from fields kept on the exception, never from a URL: every request
URL carries the account password in its query string.
"""

from __future__ import annotations


class EtlError(Exception):
    """Base of every error cdr-etl raises on purpose."""


class ConfigError(EtlError):
    """A setting or argument is invalid. The message names the setting."""


class SourceError(EtlError):
    """The API did not give a usable answer."""

    kind = "source"


class TransientSourceError(SourceError):
    """A failure that a later attempt may not repeat."""

    kind = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalSourceError(SourceError):
    """A failure that a retry will not fix (bad request, an error message, a broken server)."""

    kind = "fatal"


class AuthError(FatalSourceError):
    """The provider refused the credentials."""

    kind = "auth"


class RejectedRecord(EtlError):
    """One record cannot be normalized; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoadError(EtlError):
    """The database refused a load."""

    kind = "database"


class BackfillBusy(EtlError):
    """Another backfill of the same account is running."""

    kind = "busy"


class Stopped(Exception):
    """The run was asked to stop (SIGTERM, Ctrl-C in the daemon): what was in hand is
    stored, the window in progress is not complete. Not an error: the run ends cleanly."""


def error_kind(exc: BaseException) -> str:
    """The kind of a failure, for the run history and the metrics: the `kind` an EtlError
    carries, `database` for a driver error no loader translated, else `internal` (a bug)."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):
        return kind
    if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
        return "database"
    return "internal"
