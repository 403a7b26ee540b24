"""A simulated provider on loopback with a clock the test moves, and helpers that compare
the database with the simulator's ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from etl import wiring
from etl.api.client import CdrApiClient, RetryPolicy
from etl.config import AccountConfig, ApiSettings, SyncSettings
from etl.db.accounts import upsert_accounts
from etl.db.models import cdrs
from etl.normalize import content_hash
from etl.pipeline import Source
from etl.simulator import Faults, SimAccount, Simulator, SimulatorServer
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
    _client: CdrApiClient | None = None

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
        return sync_account(
            self.engine, self.source(password), self.account, self.sync, self.clock(), run_id
        )

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
) -> Iterator[World]:
    clock = Clock(now)
    account = SimAccount(
        username=USERNAME, password=PASSWORD, timezone=timezone, seed=seed,
        calls_per_hour=calls_per_hour, order=order,
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


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
