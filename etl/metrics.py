"""Prometheus metrics of the daemon, on a registry of its own. Labels carry our account
names (never a username or a password)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Engine, func, select

from etl.db.models import accounts, runs, watermarks
from etl.run import AccountResult, JobResult
from etl.windows import wall_clock

if TYPE_CHECKING:
    from etl.db.state import RunFigures
    from etl.live import LiveResult
    from etl.verify import VerifyResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cdr_etl_requests", "Requests sent to the API", ["account"], registry=r
        )
        self.retries = Counter(
            "cdr_etl_retries", "Requests retried after a transient error", ["account"], registry=r
        )
        self.disturbed = Counter(
            "cdr_etl_disturbed_windows",
            "Windows whose paged read met a callid twice (the server's order moved) and were "
            "re-read in an order-proof way",
            ["account"],
            registry=r,
        )
        self.reread_requests = Counter(
            "cdr_etl_reread_requests",
            "Extra requests spent re-reading disturbed windows",
            ["account"],
            registry=r,
        )
        self.pages = Counter("cdr_etl_pages", "Non-empty pages read", ["account"], registry=r)
        self.rows = Counter(
            "cdr_etl_rows", "CDRs by what the load did with them", ["account", "outcome"],
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "cdr_etl_errors", "Failed attempts and failed runs by kind", ["account", "kind"],
            registry=r,
        )  # fmt: skip
        self.runs = Counter(
            "cdr_etl_runs", "Runs by kind and outcome", ["account", "kind", "status"], registry=r
        )
        self.lag = Gauge(
            "cdr_etl_watermark_lag_seconds",
            "Provider wall clock now minus each pass's watermark",
            ["account", "pass_name"],
            registry=r,
        )
        self.last_success = Gauge(
            "cdr_etl_last_success_timestamp_seconds",
            "When a run of this kind last succeeded (Unix time)",
            ["account", "kind"],
            registry=r,
        )
        self.live = Gauge(
            "cdr_etl_live_calls", "Calls in progress at the last snapshot", ["account", "state"],
            registry=r,
        )  # fmt: skip

    def record_run(self, result: AccountResult, now: datetime) -> None:
        """A sync: what it asked, read and stored, and its outcome."""
        account, f = result.account, result.figures
        self._requests(account, f)
        self.pages.labels(account).inc(f.pages)
        self.disturbed.labels(account).inc(f.disturbed)
        self.reread_requests.labels(account).inc(f.reread_requests)
        for outcome in ("inserted", "updated", "unchanged", "rejected"):
            self.rows.labels(account, outcome).inc(getattr(f, outcome))
        if result.status == "failed":
            self.errors.labels(account, f"run_{result.error_kind or 'internal'}").inc()
        self._outcome(result, now)

    def record_verify(self, result: VerifyResult, now: datetime) -> None:
        """A verify: its request, the rows its repair stored (not the day it compared),
        and its outcome; a failed one is a `verify` error."""
        account, f = result.account, result.figures
        self._requests(account, f)
        for outcome in ("inserted", "updated"):
            self.rows.labels(account, outcome).inc(getattr(f, outcome))
        if result.status == "failed":
            self.errors.labels(account, "verify").inc()
        self._outcome(result, now)

    def record_live(self, result: LiveResult, now: datetime) -> None:
        """A live snapshot: its request, the calls it found in progress, and its outcome;
        a failed one is a `live` error."""
        account = result.account
        self._requests(account, result.figures)
        if result.status == "ok":
            self.live.labels(account, "ringing").set(result.ringing)
            self.live.labels(account, "talking").set(result.talking)
        elif result.status == "failed":
            self.errors.labels(account, "live").inc()
        self._outcome(result, now)

    def _requests(self, account: str, f: RunFigures) -> None:
        self.requests.labels(account).inc(f.requests)
        self.retries.labels(account).inc(f.retries)
        for kind, count in f.errors.items():  # failed attempts by kind
            self.errors.labels(account, kind).inc(count)

    def _outcome(self, result: JobResult, now: datetime) -> None:
        self.runs.labels(result.account, result.kind, result.status).inc()
        if result.status == "ok":
            self.last_success.labels(result.account, result.kind).set(now.timestamp())

    def seed_last_success(self, engine: Engine, names: list[str]) -> None:
        """Each account's last successful run of each kind, as the runs table says, so that
        a restarted daemon does not forget how long an account has gone without one."""
        last = func.max(runs.c.finished_at)
        with engine.connect() as conn:
            rows = conn.execute(
                select(accounts.c.name, runs.c.kind, last)
                .join(runs, runs.c.account_id == accounts.c.id)
                .where(accounts.c.name.in_(names), runs.c.status == "ok")
                .group_by(accounts.c.name, runs.c.kind)
            ).all()
        for name, kind, finished in rows:
            if finished is not None:
                self.last_success.labels(name, kind).set(finished.timestamp())

    def update_lag(self, engine: Engine, now: datetime) -> None:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    accounts.c.name, accounts.c.timezone, watermarks.c.pass_name,
                    watermarks.c.position,
                ).join(watermarks, watermarks.c.account_id == accounts.c.id)
            ).all()  # fmt: skip
        for name, zone, pass_name, position in rows:
            lag = wall_clock(now, ZoneInfo(zone)) - position
            self.lag.labels(name, pass_name).set(lag.total_seconds())
