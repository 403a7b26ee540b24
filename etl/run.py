"""The run envelope: what every job (sync, backfill, verify, live) does around its own work.

    with AccountRun(engine, result, account_id, run_id, lock="sync") as run:
        if run.busy:
            return result           # another process holds the lock: status "skipped"
        ...                         # the job's own work, writing on run.conn if it wishes
    return result

The envelope takes the advisory lock of (job, account) (only tried: a busy account is
skipped, or `busy_error` is raised), opens the run's `runs` row, and on the way out
records how the run ended whatever happened: `Stopped` is a clean stop, any other error
a failed run with a one-line, secret-free message and its kind; the run history row is
finished in a guarded block (a database that is gone does not hide the outcome); one
summary line is logged with the same structured fields for every job. KeyboardInterrupt
is recorded as a failed run ("interrupted") and raised again.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Protocol

from sqlalchemy import Connection, Engine

from etl.db.state import RunFigures, account_lock, finish_run, start_run
from etl.errors import EtlError, Stopped, StoppedRetrying, error_kind
from etl.logs import log_context
from etl.redact import RedactingFilter, redact

log = logging.getLogger(__name__)

__all__ = ["AccountResult", "AccountRun", "JobResult", "describe", "error_kind"]


class JobResult(Protocol):
    """What the envelope needs of a job's result."""

    account: str
    status: str
    error: str | None
    error_kind: str | None
    seconds: float
    figures: RunFigures

    @property
    def kind(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    def summary(self) -> str: ...

    def details(self) -> dict[str, int]: ...


@dataclass
class AccountResult:
    """The outcome of one account's sync or backfill, as the summary shows it."""

    account: str
    kind: str
    status: str  # ok | failed | skipped | stopped
    figures: RunFigures = field(default_factory=RunFigures)
    error: str | None = None
    error_kind: str | None = None  # auth | transient | fatal | database | internal
    seconds: float = 0.0
    OK: ClassVar[tuple[str, ...]] = ("ok", "skipped", "stopped")

    @property
    def ok(self) -> bool:
        return self.status in self.OK

    def summary(self) -> str:
        f = self.figures
        line = (
            f"{self.kind} {self.account}: {self.status} in {self.seconds:.1f}s, "
            f"{f.windows} windows, {f.pages} pages, {f.requests} requests, "
            f"{f.retries} retries, fetched {f.fetched}, inserted {f.inserted}, "
            f"updated {f.updated}, unchanged {f.unchanged}, rejected {f.rejected}"
        )
        if f.disturbed:
            line += (
                f"; {f.disturbed} windows re-read in an order-proof way "
                f"({f.reread_requests} extra requests: the server's order moved between pages)"
            )
        return f"{line}; error: {self.error}" if self.error else line

    def details(self) -> dict[str, int]:
        return {}


def describe(exc: BaseException) -> str:
    """One line for the run history and the terminal, free of any secret."""
    from etl.errors import AuthError, LoadError

    if isinstance(exc, LoadError):
        text = f"database: {exc}"
    elif isinstance(exc, AuthError):
        text = f"authentication failed (check the username and password): {exc}"
    elif isinstance(exc, EtlError):
        text = str(exc)
    else:
        database = _database_error(exc)
        text = f"database: {database}" if database else f"{type(exc).__name__}: {exc}"
    first = text.splitlines()[0] if text.strip() else type(exc).__name__
    return redact(first, RedactingFilter.secrets())


def _database_error(exc: BaseException) -> str | None:
    """The driver's first line for a database error that no loader translated."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    lines = str(exc.orig).strip().splitlines() if exc.orig else []
    return lines[0] if lines else type(exc).__name__


class AccountRun:
    """The envelope of one job on one account: lock, run history, outcome, summary."""

    def __init__(
        self,
        engine: Engine,
        result: JobResult,
        account_id: int,
        run_id: str,
        *,
        lock: str,
        history: bool = True,
        range_start: datetime | None = None,
        range_end: datetime | None = None,
        busy_message: str = "another process is running this job on this account",
        busy_error: type[Exception] | None = None,
    ) -> None:
        self.engine, self.result, self.account_id, self.run_id = engine, result, account_id, run_id
        self.lock, self.history = lock, history
        if history and lock != result.kind:  # start_run relies on it (one run of a kind)
            raise ValueError(f"a {result.kind} run must hold the {result.kind!r} lock")
        self.range_start, self.range_end = range_start, range_end
        self.busy_message, self.busy_error = busy_message, busy_error
        self.conn: Connection | None = None
        self.busy = False
        self._row: int | None = None
        self._stack = ExitStack()
        self._began = 0.0

    def __enter__(self) -> AccountRun:
        self._began = time.monotonic()
        with ExitStack() as stack:
            stack.enter_context(log_context(account=self.result.account, run_id=self.run_id))
            self.conn = stack.enter_context(account_lock(self.engine, self.account_id, self.lock))
            if self.conn is None:
                if self.busy_error is not None:
                    raise self.busy_error(self.busy_message)
                self.busy = True
                self.result.status, self.result.error = "skipped", self.busy_message
            elif self.history:
                self._row = start_run(
                    self.engine, self.run_id, self.account_id, self.result.kind,
                    self.range_start, self.range_end,
                )  # fmt: skip
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            suppress = self._outcome(exc)
            self.result.seconds = time.monotonic() - self._began
            self._finish()
            self._log_summary()
        finally:
            self._stack.close()
        return suppress

    def _outcome(self, exc: BaseException | None) -> bool:
        """Record how the run ended; True when the exception is handled here."""
        result = self.result
        if exc is None:
            return False
        if isinstance(exc, StoppedRetrying):  # stopped in an outage: no success to record
            result.status, result.error, result.error_kind = "failed", str(exc), exc.kind
            return True
        if isinstance(exc, Stopped):
            result.status, result.error = "stopped", str(exc)
            return True
        if isinstance(exc, KeyboardInterrupt):
            result.status = "failed"
            result.error = "interrupted (run the same command to resume)"
            return False
        if isinstance(exc, Exception):
            result.status, result.error, result.error_kind = (
                "failed",
                describe(exc),
                error_kind(exc),
            )
            log.debug("%s %s failed", result.kind, result.account, exc_info=exc)
            return True
        return False

    def _finish(self) -> None:
        if self._row is None:
            return
        status = "failed" if self.result.status == "failed" else "ok"
        try:
            finish_run(
                self.engine, self._row, self.result.figures, status, self.result.error,
                self.range_start, self.range_end,
            )  # fmt: skip
        except Exception as exc:  # the database is gone: the summary still tells
            log.warning(
                "%s %s: run history not recorded: %s",
                self.result.kind, self.result.account, describe(exc),
            )  # fmt: skip

    def _log_summary(self) -> None:
        result = self.result
        fields = {
            "event_kind": "run_summary",
            "job": result.kind,
            "status": result.status,
            "error_kind": result.error_kind,
            "seconds": round(result.seconds, 3),
            **result.figures.counts(),
            **result.details(),
        }
        log.log(logging.INFO if result.ok else logging.ERROR, result.summary(), extra=fields)
