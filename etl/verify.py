"""`cdr-etl verify`: compare the provider's last 24 hours with the database, and repair.

One request (`recent=1`: one unpaged answer, which the client gives its own, longer
timeout), normalized and deduplicated by `callid` (of differing records, the one that
reads as the later is compared, the others kept as rejects), compared with the account's
rows of `cdrs`:

    missing    served, not stored (of the CDRs up to the sync's newest watermark: newer
               ones are counted as `pending`, not yet due; but a watermark that trails
               now by more than `healthy_lag` is a stuck sync, and every CDR older than
               that lag is due)
    different  stored with another content hash than the one served (stale content)
    extra      stored, not served, with a `detect_time` within [min, max] of the served
               records' `detect_time` (the range the answer is known to cover), and not
               in the first hour of the 24 (the provider may count them on another
               time: a short call ended before them is not served, rightly)

`served` counts the records of the answer as it came (duplicates and rejects included,
as `fetched` does everywhere); `stored` counts the account's rows in scope: those whose
callid was served, plus the extra ones. The status is "differs" when any of the three
lists is non-empty (it tells what was found, also when the repair then fixed it), "ok"
otherwise, "failed" on an API or database error, "skipped" when another process is
verifying the account (the advisory lock "verify" is only tried, as the sync does).

With `repair=True` the missing and different CDRs are stored with `load_page` in one
transaction (the upsert rewrites a row only when its hash differs, so a row the sync
fixed meanwhile is counted unchanged), together with the records that did not normalize
(into `rejects`, as every run keeps them). Extra rows are reported, never deleted: a
provider that stops serving a CDR is no proof that the call did not happen.

Each verify that takes the lock records a `runs` row of kind "verify", repair or not: the
run history is the audit trail of repairs. Its figures: pages 1, fetched = served,
inserted / updated from the repair, unchanged = served CDRs found stored as served,
rejected; its range is the 24 hours before `now` on the provider's wall clock; its status
"ok" (whatever the differences) or "failed" with the error.

`verify_account` never raises for an API or database error: it returns status "failed"
with a one-line, secret-free error (`etl.run.describe`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from sqlalchemy import Engine, Text, and_, any_, bindparam, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from etl.api.client import RequestStats
from etl.db.load import load_page
from etl.db.models import cdrs
from etl.db.state import RunFigures, read_watermarks
from etl.normalize import Cdr, normalize_page, to_utc
from etl.pipeline import Source
from etl.run import AccountRun
from etl.windows import wall_clock

log = logging.getLogger(__name__)

RECENT_SPAN = timedelta(hours=24)
EDGE = timedelta(hours=1)  # a stored row in the first hour of the 24 is not called extra

_IN_SCOPE = (
    select(cdrs.c.callid, cdrs.c.content_hash)
    .where(
        cdrs.c.account_id == bindparam("account_id"),
        or_(
            cdrs.c.callid == any_(bindparam("callids", type_=ARRAY(Text))),
            and_(
                cdrs.c.detect_time >= bindparam("first", type_=cdrs.c.detect_time.type),
                cdrs.c.detect_time <= bindparam("last", type_=cdrs.c.detect_time.type),
            ),
        ),
    )
    .order_by(cdrs.c.callid)
)


@dataclass
class VerifyResult:
    """The outcome of one account's verify, as the summary shows it."""

    account: str
    status: str  # ok | differs | failed | skipped
    served: int = 0
    stored: int = 0
    missing: list[str] = field(default_factory=list)  # callids, sorted
    different: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    repaired: int = 0  # rows the repair inserted or rewrote
    rejected: int = 0  # served records that did not normalize, or lost to a twin callid
    pending: int = 0  # served CDRs newer than the sync's newest watermark: not due yet
    requests: int = 0
    retries: int = 0
    error: str | None = None
    error_kind: str | None = None  # auth | transient | fatal | database | internal
    seconds: float = 0.0
    figures: RunFigures = field(default_factory=RunFigures)  # the run history's figures
    kind: ClassVar[str] = "verify"

    @property
    def ok(self) -> bool:
        """Nothing wrong: no difference found, or the account was busy."""
        return self.status in ("ok", "skipped")

    def summary(self) -> str:
        line = (
            f"verify {self.account}: {self.status} in {self.seconds:.1f}s, "
            f"served {self.served}, stored {self.stored}, missing {len(self.missing)}, "
            f"different {len(self.different)}, extra {len(self.extra)}, "
            f"repaired {self.repaired}, rejected {self.rejected}, "
            f"not yet due {self.pending}, "
            f"{self.requests} requests, {self.retries} retries"
        )
        return f"{line}; error: {self.error}" if self.error else line

    def details(self) -> dict[str, int]:
        return {
            "served": self.served,
            "stored": self.stored,
            "missing": len(self.missing),
            "different": len(self.different),
            "extra": len(self.extra),
            "repaired": self.repaired,
            "pending": self.pending,
        }


@dataclass
class Comparison:
    """The served records against the stored rows (pure result of `compare`)."""

    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    same: int = 0
    stored: int = 0


def compare(served: dict[str, Cdr], stored: list[tuple[str, str]]) -> Comparison:
    """Pure: `served` (callid -> leg) against the stored (callid, content_hash) in scope."""
    result = Comparison(stored=len(stored))
    seen: set[str] = set()
    for callid, stored_hash in stored:
        seen.add(callid)
        leg = served.get(callid)
        if leg is None:
            result.extra.append(callid)
        elif leg.content_hash != stored_hash:
            result.different.append(callid)
        else:
            result.same += 1
    result.missing = sorted(callid for callid in served if callid not in seen)
    result.different.sort()
    result.extra.sort()
    return result


def verify_account(
    engine: Engine,
    source: Source,
    account_name: str,
    now: datetime,
    run_id: str,
    *,
    repair: bool = False,
    healthy_lag: timedelta | None = None,
) -> VerifyResult:
    """Compare the last 24 hours the provider serves with `cdrs`; with `repair`, store
    what is missing or different. Records a `runs` row of kind "verify". A naive `now`
    is a programming error (ValueError), not a failed verify."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    result = VerifyResult(account_name, "ok")
    stats = RequestStats()
    local_now = wall_clock(now, source.tz)
    with AccountRun(
        engine, result, source.account_id, run_id, lock="verify",
        range_start=local_now - RECENT_SPAN, range_end=local_now,
        busy_message="another process is verifying this account",
    ) as run:  # fmt: skip
        if run.busy:
            return result
        try:
            since = now - RECENT_SPAN + EDGE
            due_by = now - healthy_lag if healthy_lag is not None else None
            _verify(engine, source, run_id, repair, since, due_by, result, stats)
        finally:
            result.requests, result.retries = stats.requests, stats.retries
            result.figures.add_requests(stats)
    return result


def _verify(
    engine: Engine,
    source: Source,
    run_id: str,
    repair: bool,
    since: datetime,
    due_by: datetime | None,
    result: VerifyResult,
    stats: RequestStats,
) -> None:
    """Fetch, compare, and repair if asked, filling `result` on the way."""
    figures = result.figures
    records = source.client.fetch_recent(source.creds, stats=stats)
    received = datetime.now(UTC)
    figures.pages = 1
    result.served = figures.fetched = len(records)
    page = normalize_page(records, source.tz)
    served = {leg.callid: leg for leg in page.legs}
    bad = page.rejects
    result.rejected = figures.rejected = len(bad)
    served, result.pending = _due(engine, source, served, due_by)
    stored = _stored_in_scope(engine, source.account_id, served, since)
    found = compare(served, stored)
    result.stored = found.stored
    result.missing, result.different, result.extra = found.missing, found.different, found.extra
    figures.unchanged = found.same
    if found.missing or found.different or found.extra:
        result.status = "differs"
    if not repair:
        return
    wanted = [served[callid] for callid in (*found.missing, *found.different)]
    if not wanted and not bad:
        return
    with engine.begin() as conn:
        counts = load_page(conn, source.account_id, wanted, bad, run_id, received)
    figures.inserted, figures.updated = counts.inserted, counts.updated
    figures.unchanged += counts.unchanged
    result.repaired = counts.inserted + counts.updated


def _due(
    engine: Engine, source: Source, served: dict[str, Cdr], due_by: datetime | None
) -> tuple[dict[str, Cdr], int]:
    """The served CDRs the sync should already hold: those up to the most advanced pass's
    watermark (a CDR of the last two minutes is not missing, just not due yet), and at
    least those detected by `due_by` (a sync further behind is stuck: they are missing).
    With no watermark (never synced), all of them."""
    with engine.connect() as conn:
        marks = read_watermarks(conn, source.account_id)
    if not marks:
        return served, 0
    cutoff = to_utc(max(marks.values()), source.tz)
    if due_by is not None:
        cutoff = max(cutoff, due_by)
    due = {
        callid: leg
        for callid, leg in served.items()
        if leg.detect_time is None or leg.detect_time <= cutoff
    }
    return due, len(served) - len(due)


def _stored_in_scope(
    engine: Engine, account_id: int, served: dict[str, Cdr], since: datetime
) -> list[tuple[str, str]]:
    """(callid, content_hash) of the account's rows whose callid was served or whose
    detect_time lies within the served records' detect_time range and after `since`.

    The provider's 24 hours may be counted on another time than detect_time (API.md: not
    stated): a call detected before them but ended inside is served, and moves the range's
    start back past short calls that ended before them, which are not served. Only a row
    detected after `since` (an hour into the 24 hours) is sure to be served if stored."""
    times = [leg.detect_time for leg in served.values() if leg.detect_time is not None]
    first, last = (max(min(times), since), max(times)) if times else (None, None)
    with engine.connect() as conn:
        rows = conn.execute(
            _IN_SCOPE,
            {"account_id": account_id, "callids": sorted(served), "first": first, "last": last},
        ).all()
    return [(callid, content_hash) for callid, content_hash in rows]
