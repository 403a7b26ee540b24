"""The exception tree of cdr-etl, grouped by what the caller does next.

    EtlError
    ├── ConfigError              bad settings or arguments: exit 2, never retried
    ├── SourceError              the CallMyWay API; `.kind` says how (KINDS)
    │   ├── TransientSourceError     timeout, reset, 5xx, 429 (.retry_after), truncated body
    │   │   ├── TruncatedBody            the body stops before its data does
    │   │   ├── UndecodableBody          neither data nor a recognisable message
    │   │   └── PassingTrouble           a 200 that says the server is busy, an error page
    │   └── FatalSourceError         everything that a retry will not fix
    │       ├── ErrorMessage             a 200 whose body is an error message
    │       └── AuthError            wrong credentials, in whatever form they come
    │           └── CredentialsMessage   a 200 whose body refuses the credentials
    ├── RejectedRecord           one record that cannot be normalized: stored in rejects
    ├── LoadError                the database refused; raised from the driver error
    └── BackfillBusy             another backfill of the account is running: exit 1

    Stopped (not an EtlError)    the run was asked to stop; it ends cleanly
    └── StoppedRetrying          ... while a failed request waited: recorded as failed

Messages are built from fields kept on the exception, never from a URL: every request
URL carries the account password in its query string. Third-party errors are translated
once, at their boundary: httpx's in the client, the driver's in the loader.

KINDS, the one vocabulary of failures (request stats, `runs`, metrics `kind` label):

    transient   timeout, connect, disconnect, network, protocol, truncated, undecodable,
                empty (an empty 200), 5xx, 429, error_200 (a 200 saying the server is busy)
    fatal       4xx, redirect, request, unexpected, error_200 (an error message in a 200),
                fatal (the server's order or paging cannot be trusted)
    auth        the credentials were refused
    database    the database refused or went away (LoadError, or a driver error)
    busy        another backfill of the account runs
    internal    a bug
"""

from __future__ import annotations


class EtlError(Exception):
    """Base of every error cdr-etl raises on purpose."""


class ConfigError(EtlError):
    """A setting or argument is invalid. The message names the setting."""


class SourceError(EtlError):
    """The API did not give a usable answer. `kind` says how, in the one vocabulary that
    the request stats, the run history and the metrics share (see KINDS)."""

    kind = "source"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class TransientSourceError(SourceError):
    """A failure that a later attempt may not repeat."""

    kind = "transient"

    def __init__(
        self, message: str, *, kind: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class FatalSourceError(SourceError):
    """A failure that a retry will not fix (bad request, an error message, a broken server)."""

    kind = "fatal"


class AuthError(FatalSourceError):
    """The provider refused the credentials."""

    kind = "auth"


# What a 200 body that is not data stands for (raised by etl.api.decode).


class TruncatedBody(TransientSourceError):
    """The body stops before its data does (cut JSON, a short last CSV row, an open table)."""

    kind = "truncated"


class UndecodableBody(TransientSourceError):
    """The body is neither data nor a recognisable message."""

    kind = "undecodable"


class PassingTrouble(TransientSourceError):
    """A 200 whose body says the server is busy, or an HTML error page."""

    kind = "error_200"


class ErrorMessage(FatalSourceError):
    """A 200 whose body is an error message that a retry will not change."""

    kind = "error_200"


class CredentialsMessage(AuthError):
    """A 200 whose body refuses the credentials."""

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


class StoppedRetrying(Stopped):
    """Asked to stop while a failed request waited to be retried: stopped as cleanly, but
    the run did not succeed (its request was failing), so it is recorded as failed."""

    kind = "transient"


def error_kind(exc: BaseException) -> str:
    """The kind of a failure, for the run history and the metrics: the `kind` an EtlError
    carries, `database` for a driver error no loader translated, else `internal` (a bug)."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):
        return kind
    if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
        return "database"
    return "internal"
