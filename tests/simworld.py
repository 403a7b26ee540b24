"""A simulated provider on loopback with a clock the test moves, and helpers that compare
the database with the simulator's ground truth."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Text, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from etl import wiring
from etl.api.client import CdrApiClient, RetryPolicy
from etl.config import AccountConfig, ApiSettings, SyncSettings, format_duration
from etl.db.accounts import upsert_accounts
from etl.db.models import cdrs, watermarks
from etl.normalize import content_hash
from etl.pipeline import Source
from etl.simulator import Faults, SimAccount, Simulator, SimulatorServer
from etl.simulator.app import Bounds
from etl.simulator.store import Order
from etl.sync import AccountResult, sync_account

PASSWORD = "98765432109"
USERNAME = "8569841"


@dataclass
class Clock:
    """The simulated provider's clock and the sync's `now`, moved by the test."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class World:
    sim: Simulator
    server: SimulatorServer
    clock: Clock
    engine: Engine
    account: AccountConfig
    account_id: int
    page_size: int = 1000
    sync: SyncSettings = field(default_factory=SyncSettings)
    spoiled: Callable[[str], bool] = lambda callid: False
    """CDRs the test spoils on the wire: they belong in rejects, not in cdrs."""
    _client: CdrApiClient | None = None
    _snapshot: str | None = None
    """pg_current_snapshot() as the last check of the stored rows' hashes began."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.account.timezone)

    def client(self) -> CdrApiClient:
        if self._client is None:
            self._client = wiring.api_client(
                ApiSettings(url=self.server.url, timeout=timedelta(seconds=5)),
                retry=RetryPolicy(max_attempts=8, base=0.001, cap=0.01, max_total=60),
                sleep=lambda _: None,
            )
        return self._client

    def source(self, password: str = PASSWORD) -> Source:
        return wiring.source(self.client(), self.account, self.account_id, password, self.page_size)

    def run(self, password: str = PASSWORD, run_id: str = "test") -> AccountResult:
        """One sync run, then the per-pass check of whatever its watermarks newly cover."""
        before = self.watermarks()
        result = sync_account(
            self.engine, self.source(password), self.account, self.sync, self.clock(), run_id
        )
        self.assert_passes_exact(before)
        return result

    def watermarks(self) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(watermarks.c.pass_name, watermarks.c.position).where(
                    watermarks.c.account_id == self.account_id
                )
            ).all()
        return {name: position for name, position in rows}

    def assert_passes_exact(self, before: dict[str, datetime]) -> None:
        """Each pass on its own: every CDR the provider already served when the pass could
        first read it (at the end of its range plus the pass's delay) is stored, over what the
        pass's watermark newly covers, so a pass's loss cannot hide behind a later pass.

        The oracle is the simulator's ground truth at a past instant, in hour chunks (a chunk
        inside a window is served no later than the window), never the window planner."""
        after = self.watermarks()
        self.check_new_hashes()
        delays = {format_duration(d): d for d in self.sync.passes}
        for name, mark in after.items():
            start = local(self.clock.now, self.account.timezone) - self.sync.initial_lookback
            lo = before.get(name, start)
            while lo < mark:
                hi = min(lo + timedelta(hours=1), mark)
                served_at = _earliest_instant(hi, self.tz) + delays[name]
                truth = self._truth_at(served_at, lo, hi - timedelta(seconds=1))
                missing = {k for k in self.not_stored(truth) if not self.spoiled(k)}
                assert not missing, (
                    f"pass {name} moved its watermark to {mark} but lost {len(missing)} CDRs "
                    f"of [{lo}, {hi}), e.g. {sorted(missing)[:3]}"
                )
                lo = hi

    def _truth_at(self, at: datetime, start: datetime, end: datetime) -> dict[str, Any]:
        saved = self.clock.now
        self.clock.now = max(min(at, saved), self.sim.start)
        try:
            return self.truth(start, end)
        finally:
            self.clock.now = saved

    def check_new_hashes(self) -> None:
        """Check each row's hash as `stored` does, but only the row versions written since
        the last check (all rows the first time): those whose writing transaction (xmin)
        had not committed in the snapshot taken, in SQL, before the last check's read."""
        query = select(cdrs.c.callid, cdrs.c.raw, cdrs.c.content_hash).where(
            cdrs.c.account_id == self.account_id
        )
        if self._snapshot is not None:
            unseen = "NOT pg_visible_in_snapshot(xmin::text::xid8, CAST(:snap AS pg_snapshot))"
            query = query.where(text(unseen).bindparams(snap=self._snapshot))
        with self.engine.connect() as conn:
            snapshot = conn.scalar(text("SELECT pg_current_snapshot()::text"))
            rows = conn.execute(query).all()
        assert snapshot is not None
        # xmin is a 32-bit xid, read as an xid8 of epoch 0: true while the server is young
        assert int(snapshot.split(":")[1]) < 2**32, f"xid epoch > 0 ({snapshot})"
        for row in rows:
            assert row.content_hash == content_hash(row.raw), row.callid
        self._snapshot = snapshot

    def not_stored(self, callids: Iterable[str]) -> set[str]:
        """Those of the callids that have no row (a lookup in SQL, not a read of them all)."""
        wanted = set(callids)
        ids = bindparam("ids", list(wanted), type_=ARRAY(Text))
        with self.engine.connect() as conn:
            found = conn.execute(
                select(cdrs.c.callid).where(
                    cdrs.c.account_id == self.account_id, cdrs.c.callid == any_(ids)
                )
            ).scalars()
            return wanted - set(found)

    def stored(self) -> dict[str, dict[str, Any]]:
        """callid -> the raw record stored, checking each row's hash on the way."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(cdrs.c.callid, cdrs.c.raw, cdrs.c.content_hash).where(
                    cdrs.c.account_id == self.account_id
                )
            ).all()
        for row in rows:
            assert row.content_hash == content_hash(row.raw), row.callid
        return {row.callid: row.raw for row in rows}

    def truth(self, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
        """What the provider serves now for that wall-clock range, read whole."""
        return self.sim.truth_between(USERNAME, start, end)


@contextmanager
def world(
    engine: Engine,
    *,
    now: datetime,
    faults: Faults | None = None,
    timezone: str = "America/Costa_Rica",
    days: float = 2,
    calls_per_hour: float = 60,
    seed: int = 7,
    order: Order = "sorted",
    bounds: Bounds = "inclusive",
) -> Iterator[World]:
    clock = Clock(now)
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone=timezone, seed=seed,
        calls_per_hour=calls_per_hour, order=order, bounds=bounds,
    )  # fmt: skip
    sim = Simulator([account], start=now - timedelta(days=days), faults=faults, clock=clock)
    config = AccountConfig(name="main", username=USERNAME, timezone=timezone)
    account_id = upsert_accounts(engine, [config])["main"]
    with SimulatorServer(sim) as server:
        w = World(sim, server, clock, engine, config, account_id)
        try:
            yield w
        finally:
            w.client().close()


def _earliest_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The earliest UTC instant a naive wall-clock time can mean (the first of a repeated
    hour; a skipped time maps forward)."""
    return min(wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
