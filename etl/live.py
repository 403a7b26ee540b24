"""`cdr-etl live`: one snapshot of an account's calls in progress.

One request (`live=1&fullAccount=1`), then one transaction that replaces the account's rows
of `live_calls` whole (delete + insert: a call that ended since the last snapshot simply
disappears) and appends one row to `live_samples` (concurrent calls over time).

A live answer has no status field; each leg is classified by its times (callmyway/API.md):

    disconnect_time set   -> just ended: left out of the snapshot, counted in `ended`
    connect_time set      -> talking
    otherwise             -> ringing

Legs are deduplicated by `callid` (of differing records, the one that reads as the later
wins: `etl.normalize.normalize_page`) before they are classified,
so every count is of distinct legs. A record that does not normalize (no callid, a time
that does not parse...) is left out and counted in `rejected`, and not stored in the
rejects table: a live snapshot is a picture of the moment, not a record of calls; the
completed CDR comes through the sync, which keeps it as a reject if it is still bad.

No `runs` row is written: the daemon takes a snapshot every 30 s or so, which would flood
the run history; `live_samples` is the trace of the snapshots, and the summary log line
tells each one's outcome. The advisory lock ("live", per account) is only tried: when
another process is taking a snapshot of the account, this one is skipped.

`snapshot_live` never raises for an API or database error: it returns status "failed"
with a one-line, secret-free error (`etl.run.describe`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, insert

from etl.api.client import RequestStats
from etl.db.models import live_calls, live_samples
from etl.db.state import RunFigures
from etl.normalize import SAME_CALLID, Cdr, normalize_page
from etl.pipeline import Source
from etl.run import AccountRun

log = logging.getLogger(__name__)

RINGING = "ringing"
TALKING = "talking"


@dataclass
class LiveResult:
    """The outcome of one account's live snapshot, as the summary shows it."""

    account: str
    status: str  # ok | failed | skipped
    active: int = 0  # ringing + talking: the legs stored in live_calls
    ringing: int = 0
    talking: int = 0
    ended: int = 0  # legs served that had just ended: left out
    rejected: int = 0  # records that did not normalize: left out
    requests: int = 0
    retries: int = 0
    error: str | None = None
    error_kind: str | None = None  # auth | transient | fatal | database | internal
    seconds: float = 0.0
    figures: RunFigures = field(default_factory=RunFigures)  # requests, fetched, rejected
    kind: ClassVar[str] = "live"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")

    def summary(self) -> str:
        line = (
            f"live {self.account}: {self.status} in {self.seconds:.1f}s, "
            f"{self.active} active ({self.ringing} ringing, {self.talking} talking), "
            f"{self.ended} just ended, {self.rejected} rejected, "
            f"{self.requests} requests, {self.retries} retries"
        )
        return f"{line}; error: {self.error}" if self.error else line

    def details(self) -> dict[str, int]:
        return {
            "active": self.active,
            "ringing": self.ringing,
            "talking": self.talking,
            "ended": self.ended,
        }


@dataclass
class LiveSnapshot:
    """A live answer, classified: the legs in progress (by callid) and the counts."""

    calls: list[tuple[str, Cdr]] = field(default_factory=list)  # (state, leg), by callid
    ringing: int = 0
    talking: int = 0
    ended: int = 0
    rejected: int = 0

    @property
    def active(self) -> int:
        return self.ringing + self.talking


def classify(records: Iterable[Mapping[str, Any]], tz: ZoneInfo) -> LiveSnapshot:
    """Pure: normalize, dedup by callid (a leg listed twice in other states counts once,
    in the later one: ringing < talking < ended), and sort the legs into ringing, talking
    and just ended; records that do not normalize are counted in `rejected`."""
    page = normalize_page(records, tz)
    snapshot = LiveSnapshot(rejected=sum(r.reason != SAME_CALLID for r in page.rejects))
    for leg in page.legs:
        if leg.disconnect_time is not None:
            snapshot.ended += 1
        elif leg.connect_time is not None:
            snapshot.talking += 1
            snapshot.calls.append((TALKING, leg))
        else:
            snapshot.ringing += 1
            snapshot.calls.append((RINGING, leg))
    return snapshot


def snapshot_live(
    engine: Engine, source: Source, account_name: str, now: datetime, run_id: str
) -> LiveResult:
    """Take one snapshot of the account's calls in progress at `now` (aware): replace its
    `live_calls` rows and append a `live_samples` row, in one transaction. A naive `now`
    is a programming error (ValueError), not a failed snapshot."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    result = LiveResult(account_name, "ok")
    stats = RequestStats()
    busy = "another process is taking a live snapshot of this account"
    with AccountRun(
        engine, result, source.account_id, run_id, lock="live", history=False, busy_message=busy
    ) as run:
        if run.busy:
            return result
        try:
            records = source.client.fetch_live(source.creds, full_account=True, stats=stats)
            snapshot = classify(records, source.tz)
            _store(engine, source.account_id, snapshot, now)
        finally:
            result.requests, result.retries = stats.requests, stats.retries
            result.figures.add_requests(stats)
        result.ringing, result.talking = snapshot.ringing, snapshot.talking
        result.active, result.ended = snapshot.active, snapshot.ended
        result.rejected = result.figures.rejected = snapshot.rejected
        result.figures.fetched = len(records)
    return result


def _store(engine: Engine, account_id: int, snapshot: LiveSnapshot, now: datetime) -> None:
    """Replace the account's live calls and append its sample, in one transaction."""
    rows = [
        {
            "account_id": account_id,
            "callid": leg.callid,
            "state": state,
            "type": leg.type,
            "ani": leg.ani,
            "dnis": leg.dnis,
            "ani_user": leg.ani_user,
            "dnis_user": leg.dnis_user,
            "detect_time": leg.detect_time,
            "connect_time": leg.connect_time,
            "raw": leg.raw,
            "snapshot_at": now,
        }
        for state, leg in snapshot.calls
    ]
    with engine.begin() as conn:
        conn.execute(delete(live_calls).where(live_calls.c.account_id == account_id))
        if rows:
            conn.execute(insert(live_calls), rows)
        conn.execute(
            insert(live_samples).values(
                account_id=account_id,
                sampled_at=now,
                active=snapshot.active,
                ringing=snapshot.ringing,
                talking=snapshot.talking,
            )
        )
