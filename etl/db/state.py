"""What the sync remembers: watermarks, run history, backfill progress, advisory locks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert

from etl.db.models import backfill_windows, backfills, runs, watermarks

if TYPE_CHECKING:
    from etl.api.client import RequestStats
    from etl.db.load import LoadCounts

# The first key of every advisory lock cdr-etl takes; the second is the account id.
LOCK_KEYS = {"sync": 7_000_001, "backfill": 7_000_002, "live": 7_000_003, "verify": 7_000_004}


@contextmanager
def account_lock(
    engine: Engine, account_id: int, job: str, *, wait: bool = False
) -> Iterator[Connection | None]:
    """Hold the advisory lock of (job, account) on a connection of its own for the block.

    Yields that connection, or None at once when another process holds the lock (unless
    `wait`). The lock goes with the session: a crashed or killed holder releases it. A
    writer that does its transactions on the yielded connection can never write without
    the lock: if the session dies, its lock and its next transaction fail together.
    """
    with engine.connect() as conn:
        key = (LOCK_KEYS[job], account_id)
        if wait:
            conn.execute(select(func.pg_advisory_lock(*key)))
            got = True
        else:
            got = bool(conn.execute(select(func.pg_try_advisory_lock(*key))).scalar())
        conn.commit()
        try:
            yield conn if got else None
        finally:
            if got and not conn.invalidated:
                try:
                    conn.execute(select(func.pg_advisory_unlock(*key)))
                    conn.commit()
                except Exception:  # the session is gone, and its lock with it
                    conn.invalidate()


def read_watermarks(conn: Connection, account_id: int) -> dict[str, datetime]:
    rows = conn.execute(
        select(watermarks.c.pass_name, watermarks.c.position).where(
            watermarks.c.account_id == account_id
        )
    )
    return {name: position for name, position in rows}


def advance_watermark(
    conn: Connection, account_id: int, pass_name: str, position: datetime
) -> None:
    """Move a pass's watermark forward to `position`; never backwards."""
    statement = insert(watermarks).values(
        account_id=account_id, pass_name=pass_name, position=position
    )
    statement = statement.on_conflict_do_update(
        index_elements=[watermarks.c.account_id, watermarks.c.pass_name],
        set_={
            "position": func.greatest(watermarks.c.position, statement.excluded.position),
            "updated_at": func.now(),
        },
    )
    conn.execute(statement)


class Completion(Protocol):
    """What completes a window, applied in the transaction of its last page."""

    def apply(self, conn: Connection, fetched: int) -> None: ...


@dataclass(frozen=True)
class AdvanceWatermark:
    """A sync pass's window is complete: its pass's watermark moves to the window's end."""

    account_id: int
    pass_name: str
    end: datetime

    def apply(self, conn: Connection, fetched: int) -> None:
        advance_watermark(conn, self.account_id, self.pass_name, self.end)


@dataclass(frozen=True)
class MarkWindowDone:
    """A backfill's window is complete: it is marked done (a re-run skips it)."""

    backfill_id: int
    start: datetime
    end: datetime

    def apply(self, conn: Connection, fetched: int) -> None:
        mark_window_done(conn, self.backfill_id, self.start, self.end, fetched)


@dataclass
class RunFigures:
    """What one account run did; the run history row and the summary line show these."""

    windows: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    disturbed: int = 0  # windows whose walk met a callid on two pages
    reread_requests: int = 0  # requests of the order-proof re-reads of those windows
    errors: Counter[str] = field(default_factory=Counter)  # failed attempts by kind

    def add(self, other: RunFigures) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def add_requests(self, stats: RequestStats) -> None:
        """What a window's requests cost (the client's counters)."""
        self.requests += stats.requests
        self.retries += stats.retries
        self.disturbed += stats.disturbed
        self.reread_requests += stats.reread_requests
        self.errors.update(stats.errors)

    def add_counts(self, counts: LoadCounts) -> None:
        """What the load did with a page."""
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged
        self.rejected += counts.rejected

    def counts(self) -> dict[str, int]:
        """The figures the run history keeps."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "errors"}


ABANDONED = "did not finish: its process ended before recording the end (killed?)"


def start_run(
    engine: Engine,
    run_id: str,
    account_id: int,
    kind: str,
    range_start: datetime | None = None,
    range_end: datetime | None = None,
) -> int:
    with engine.begin() as conn:
        # The caller holds this account's lock of this kind of run, so an earlier run of
        # the kind still marked running is no longer running: its process died (kill -9)
        # before it could record its end. It is marked failed, finished when found.
        # Only the latest can be: the run after a dead one marks it (one index probe).
        latest = (
            select(runs.c.id)
            .where(runs.c.account_id == account_id, runs.c.kind == kind)
            .order_by(runs.c.started_at.desc())
            .limit(1)
            .scalar_subquery()
        )
        conn.execute(
            update(runs)
            .where(runs.c.id == latest, runs.c.status == "running")
            .values(status="failed", error=ABANDONED, finished_at=func.now())
        )
        row_id: int = conn.execute(
            insert(runs)
            .values(
                run_id=run_id,
                account_id=account_id,
                kind=kind,
                range_start=range_start,
                range_end=range_end,
            )
            .returning(runs.c.id)
        ).scalar_one()
    return row_id


def finish_run(
    engine: Engine,
    row_id: int,
    figures: RunFigures,
    status: str,
    error: str | None = None,
    range_start: datetime | None = None,
    range_end: datetime | None = None,
) -> None:
    values: dict[str, object] = {**figures.counts(), "status": status, "error": error}
    if range_start is not None:
        values["range_start"] = range_start
    if range_end is not None:
        values["range_end"] = range_end
    with engine.begin() as conn:
        conn.execute(
            update(runs).where(runs.c.id == row_id).values(**values, finished_at=func.now())
        )


def open_backfill(
    engine: Engine, account_id: int, start: datetime, end: datetime, window_seconds: int
) -> tuple[int, set[datetime]]:
    """The unfinished backfill of exactly this range (resumed), else a new one.

    Returns its id and the starts of the windows already stored. A finished backfill of
    the same range is not resumed: asking again means reading again.
    """
    with engine.begin() as conn:
        found = conn.execute(
            select(backfills.c.id)
            .where(
                backfills.c.account_id == account_id,
                backfills.c.range_start == start,
                backfills.c.range_end == end,
                backfills.c.window_seconds == window_seconds,
                backfills.c.status == "running",
            )
            .order_by(backfills.c.id.desc())
            .limit(1)
        ).scalar()
        if found is None:
            found = conn.execute(
                insert(backfills)
                .values(
                    account_id=account_id,
                    range_start=start,
                    range_end=end,
                    window_seconds=window_seconds,
                )
                .returning(backfills.c.id)
            ).scalar_one()
            return found, set()
        done = conn.execute(
            select(backfill_windows.c.window_start).where(backfill_windows.c.backfill_id == found)
        ).scalars()
        return found, set(done)


def mark_window_done(
    conn: Connection, backfill_id: int, start: datetime, end: datetime, fetched: int
) -> None:
    statement = insert(backfill_windows).values(
        backfill_id=backfill_id, window_start=start, window_end=end, fetched=fetched
    )
    conn.execute(statement.on_conflict_do_nothing())


def finish_backfill(engine: Engine, backfill_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(backfills)
            .where(backfills.c.id == backfill_id)
            .values(status="done", finished_at=func.now())
        )
