"""End-to-end promises a silent data loss would break: a late page failing, a held lock,
a resumed backfill, each against the simulator over real HTTP on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from etl.api.client import CdrApiClient, RetryPolicy
from etl.backfill import backfill_account
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.models import backfill_windows, cdrs, rejects, runs
from etl.db.state import account_lock
from etl.simulator import Faults
from etl.simulator.data import MAX_CALL_SPAN
from tests.simworld import USERNAME, World, local, utc, world
from tests.test_processes import backfill_args, cli_env

START = utc(2024, 6, 3, 12, 0, 0)
TZ = "America/Costa_Rica"


class FailingPages(httpx.BaseTransport):
    """Passes requests to the simulator, except those `fails(request)` picks: a 503."""

    def __init__(self, fails: object) -> None:
        self._inner = httpx.HTTPTransport()
        self._fails = fails
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if callable(self._fails) and self._fails(request):
            self.failed += 1
            return httpx.Response(503, text="Service Unavailable")
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def failing_client(w: World, transport: FailingPages) -> CdrApiClient:
    return CdrApiClient(
        w.server.url,
        timeout=5,
        retry=RetryPolicy(max_attempts=2, base=0.001, cap=0.01, max_total=5),
        sleep=lambda _: None,
        transport=transport,
    )


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table)) or 0  # type: ignore[arg-type]


def assert_all_exact(w: World) -> None:
    """Everything up to the 1h pass's watermark, less the longest call, is stored as served
    now; nothing is stored that the provider does not serve."""
    first = local(START, TZ) - w.sync.initial_lookback
    truth = w.truth(first, w.watermarks()["1h"] - timedelta(seconds=MAX_CALL_SPAN))
    stored = w.stored()
    assert truth
    assert {k: stored.get(k) for k in truth} == truth
    assert set(stored) <= set(w.sim.truth(USERNAME))


def test_a_later_page_failing_after_its_last_retry_moves_no_watermark(engine: Engine) -> None:
    """Page 3 of a window fails after the last retry (pages 1 and 2 answered, one of them
    stored, as a page is fetched ahead): the run fails, every watermark stays where it was,
    and the next run (server well again) is exact."""
    with world(engine, now=START, calls_per_hour=120) as w:
        w.page_size = 20  # every hour-long window has several pages
        assert w.run().status == "ok"
        before = w.watermarks()
        w.clock.advance(hours=1)
        transport = FailingPages(lambda r: int(r.url.params.get("ini", "0")) >= 2 * w.page_size)
        good, w._client = w._client, failing_client(w, transport)
        try:
            result = w.run()
        finally:
            w.client().close()
            w._client = good
        assert result.status == "failed"
        assert transport.failed >= 2  # the last retry of a later page failed too
        assert w.watermarks() == before
        assert w.run().status == "ok"
        assert w.watermarks()["2m"] > before["2m"]
        assert_all_exact(w)


def test_sync_skips_and_writes_nothing_while_another_holds_its_lock(engine: Engine) -> None:
    """The account's sync lock held elsewhere: the run is skipped, asks the provider
    nothing and writes no row, no run, no watermark; once released the run is exact."""
    with world(engine, now=START) as w:
        with account_lock(engine, w.account_id, "sync") as held:
            assert held is not None
            result = w.run()
        assert result.status == "skipped"
        assert w.sim.stats.requests == 0
        assert (count(engine, cdrs), count(engine, runs), w.watermarks()) == (0, 0, {})
        assert w.run().status == "ok"
        assert_all_exact(w)


def test_backfill_exits_1_with_a_message_while_another_holds_its_lock(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """`cdr-etl backfill` with the account's backfill lock held elsewhere: exit 1, one line
    saying another backfill runs, no request to the provider, no row."""
    with world(engine, now=START) as w:
        config = AccountConfig(name="default", username=USERNAME, timezone=TZ)
        account_id = upsert_accounts(engine, [config])["default"]
        env = cli_env(db_url, w.server, tmp_path)
        end = local(START, TZ).replace(minute=0, second=0) - timedelta(hours=2)
        with account_lock(engine, account_id, "backfill") as held:
            assert held is not None
            done = subprocess.run(
                [sys.executable, "-m", "etl", *backfill_args(end - timedelta(hours=3), end)],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "another backfill" in done.stderr + done.stdout
        assert w.sim.stats.requests == 0
        assert count(engine, cdrs) == 0


def test_a_resumed_backfill_asks_only_for_the_windows_not_done(engine: Engine) -> None:
    """A backfill that dies part way (a window fails for good) keeps the windows it
    finished; the re-run requests only the others (counted by the simulator) and is exact."""
    with world(engine, now=START, calls_per_hour=30) as w:
        end = local(START, TZ).replace(minute=0, second=0) - timedelta(hours=2)
        start = end - timedelta(hours=8)
        hour = timedelta(hours=1)
        seen: list[str] = []

        def fails(request: httpx.Request) -> bool:
            seen.append(request.url.params["dateStart"])
            return len(set(seen)) > 3  # three windows answer, then the provider is gone

        transport = FailingPages(fails)
        good, w._client = w._client, failing_client(w, transport)
        try:
            first = backfill_account(engine, w.source(), "main", start, end, hour, "first",
                                     concurrency=1)  # fmt: skip
        finally:
            w.client().close()
            w._client = good
        assert first.status == "failed"
        done = count(engine, backfill_windows)
        assert 0 < done < 8
        with engine.connect() as conn:
            stored_windows = {
                f"{s:%Y-%m-%d %H:%M:%S}"
                for s in conn.execute(select(backfill_windows.c.window_start)).scalars()
            }
        asked: list[str] = []
        before = w.sim.stats.requests

        def record(request: httpx.Request) -> bool:
            asked.append(request.url.params["dateStart"])
            return False

        recorder = FailingPages(record)
        good, w._client = w._client, failing_client(w, recorder)
        try:
            again = backfill_account(engine, w.source(), "main", start, end, hour, "again",
                                     concurrency=1)  # fmt: skip
        finally:
            w.client().close()
            w._client = good
        assert again.status == "ok", again.error
        assert w.sim.stats.requests - before == len(asked)  # the simulator agrees
        assert len(set(asked)) == 8 - done
        assert not set(asked) & stored_windows  # no window marked done is asked again
        truth = w.truth(start, end)
        stored = w.stored()
        assert truth
        assert stored == truth


class SpoilRecords(httpx.BaseTransport):
    """Passes requests to the simulator and spoils, in every answer, the records `spoiled`
    picks by callid (a connect_time that is no time): the page keeps its length."""

    def __init__(self, spoiled: Callable[[str], bool]) -> None:
        self._inner = httpx.HTTPTransport()
        self._spoiled = spoiled
        self.spoilt = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        body = response.read()
        response.close()
        try:
            records = json.loads(body)
        except ValueError:
            records = None
        if isinstance(records, list):
            for record in records:
                if isinstance(record, dict) and self._spoiled(str(record.get("callid"))):
                    record["connect_time"] = "not a time"
                    self.spoilt += 1
            body = json.dumps(records).encode()
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body)

    def close(self) -> None:
        self._inner.close()


def test_malformed_and_duplicated_records_end_to_end(engine: Engine) -> None:
    """The provider serves spoilt records and duplicated rows: the spoilt ones land in
    rejects and runs.rejected, every run is ok, the watermarks move, and everything else is
    stored exactly once as served."""
    with world(engine, now=START, faults=Faults(duplicate_rate=0.1), calls_per_hour=90) as w:
        w.page_size = 100
        w.spoiled = lambda callid: int(callid) % 17 == 0
        transport = SpoilRecords(w.spoiled)
        w._client = CdrApiClient(w.server.url, timeout=5, transport=transport,
                                 sleep=lambda _: None)  # fmt: skip
        results = [w.run()]
        w.clock.advance(hours=2)
        results.append(w.run())
        assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
        assert w.watermarks()["1h"] > local(START, TZ) - timedelta(hours=1, minutes=1)
        assert transport.spoilt > 0
        with engine.connect() as conn:
            rejected = conn.scalar(select(func.sum(runs.c.rejected)))
            reject_ids = set(conn.execute(select(rejects.c.callid)).scalars())
        first = local(START, TZ) - w.sync.initial_lookback
        truth = w.truth(first, w.watermarks()["1h"] - timedelta(seconds=MAX_CALL_SPAN))
        spoilt = {k for k in truth if w.spoiled(k)}
        assert spoilt
        assert spoilt <= reject_ids
        assert rejected is not None
        assert rejected >= len(spoilt)
        stored = w.stored()
        assert not set(stored) & reject_ids
        assert {k: stored.get(k) for k in truth if k not in spoilt} == {
            k: v for k, v in truth.items() if k not in spoilt
        }
        assert count(engine, cdrs) == len(stored)
        assert w.sim.stats.rows > 0
