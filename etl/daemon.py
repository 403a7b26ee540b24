"""`cdr-etl daemon`: the APScheduler wiring, signals, and the health/metrics listener.

Per account a sync job (sync.interval plus jitter) and, where `live = true`, a live job
(sync.live_interval); optionally a daily-or-so `verify --repair` (sync.verify_interval).
Every job is spelt out: `max_instances=1` (one run of a job at a time), `coalesce=True`
(runs missed while busy or down collapse into one) and `misfire_grace_time=None` (a late
run is never dropped: APScheduler's default of one second would silently skip it). The
first sync of each account runs at start, so the daemon catches up after downtime from
the watermarks by itself.

On SIGTERM or SIGINT it stops taking work; a sync in flight stores the page in hand,
commits, and returns; then the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from etl.config import AccountConfig, Settings
from etl.errors import ConfigError
from etl.logs import log_context
from etl.metrics import Metrics
from etl.pipeline import Source
from etl.run import AccountResult, describe, error_kind
from etl.sync import sync_account
from etl.windows import utc_now

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
LIVE_WORKERS = 2


def pool_size(settings: Settings) -> int:
    """Database connections the daemon may use at once: a lock and a load connection per
    sync in flight, one per live snapshot, and one for health checks and metrics."""
    return 2 * settings.sync.concurrency + LIVE_WORKERS + 1


def _job_failed(job: str, account: str, exc: Exception, run_id: str) -> str:
    """Log a job that failed before its run could record it (the database refused even
    the lock); return its one-line error."""
    error = describe(exc)
    with log_context(account=account, run_id=run_id):
        log.error("%s %s: failed: %s", job, account, error)
    return error


def _run_id() -> str:
    return uuid.uuid4().hex[:12]


class Daemon:
    """The schedule of every account's jobs, and what the health endpoint reports."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sources: list[tuple[AccountConfig, Source]],
        *,
        clock: Clock = utc_now,
        metrics: Metrics | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sources = sources
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._seeded = False  # the last successes read from the database
        self.stop = stop or threading.Event()
        # Syncs and verifies share `sync.concurrency` workers; live snapshots (quick) have
        # their own few, so a long catch-up never starves them.
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers=settings.sync.concurrency),
                "live": ThreadPoolExecutor(max_workers=LIVE_WORKERS),
            },
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone="UTC",
        )
        self._add_jobs()

    def _add_jobs(self) -> None:
        sync = self.settings.sync
        now = self.clock()
        for account, source in self.sources:
            self._add(
                f"sync:{account.name}", self.sync_job, (account, source),
                sync.interval, sync.jitter, first=now,
            )  # fmt: skip
            if account.live:
                self._add(
                    f"live:{account.name}", self.live_job, (account, source),
                    sync.live_interval, timedelta(0), first=now, executor="live",
                )  # fmt: skip
            if sync.verify_interval is not None:
                self._add(
                    f"verify:{account.name}", self.verify_job, (account, source),
                    sync.verify_interval, sync.jitter, first=now + sync.verify_interval,
                )  # fmt: skip

    def _add(
        self,
        job_id: str,
        func: Callable[..., None],
        args: tuple[Any, ...],
        every: timedelta,
        jitter: timedelta,
        *,
        first: datetime,
        executor: str = "default",
    ) -> None:
        self.scheduler.add_job(
            func,
            IntervalTrigger(seconds=every.total_seconds(), jitter=jitter.total_seconds() or None),
            args=args,
            id=job_id,
            name=job_id,
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            executor=executor,
        )

    # -- jobs: none of them raises; one account's failure never touches another --------------

    def sync_job(self, account: AccountConfig, source: Source) -> None:
        if self.stop.is_set():
            return
        now, run_id = self.clock(), _run_id()
        try:
            result = sync_account(
                self.engine, source, account, self.settings.sync, now, run_id, stop=self.stop
            )
        except Exception as exc:  # the database refused even the lock: count it, go on
            error = _job_failed("sync", account.name, exc, run_id)
            result = AccountResult(account.name, "sync", "failed", error=error)
            result.error_kind = error_kind(exc)
        if not self._seeded:  # the database was down at start: the next run tries again
            self._seed_metrics()
        self.metrics.record_run(result, now)
        try:
            self.metrics.update_lag(self.engine, self.clock())
        except Exception as exc:
            log.warning("watermark lag not updated: %s", describe(exc))

    def live_job(self, account: AccountConfig, source: Source) -> None:
        from etl.live import LiveResult, snapshot_live

        if self.stop.is_set():
            return
        now, run_id = self.clock(), _run_id()
        try:
            result = snapshot_live(self.engine, source, account.name, now, run_id)
        except Exception as exc:  # the database refused even the lock: count it, go on
            error = _job_failed("live", account.name, exc, run_id)
            result = LiveResult(account.name, "failed", error=error)
        self.metrics.record_live(result, now)

    def verify_job(self, account: AccountConfig, source: Source) -> None:
        from etl.verify import VerifyResult, verify_account

        if self.stop.is_set():
            return
        now, run_id = self.clock(), _run_id()
        try:
            result = verify_account(
                self.engine, source, account.name, now, run_id, repair=True,
                healthy_lag=self.settings.sync.healthy_lag,
            )  # fmt: skip
        except Exception as exc:  # the database refused even the lock: count it, go on
            error = _job_failed("verify", account.name, exc, run_id)
            result = VerifyResult(account.name, "failed", error=error)
        self.metrics.record_verify(result, now)

    # -- health -------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """The scheduler runs and the database answers."""
        if not self.scheduler.running or self.stop.is_set():
            return False
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def serve_health(self) -> ThreadingHTTPServer:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok = daemon.healthy()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
                elif path == "/metrics":
                    self._send(200, generate_latest(daemon.metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # no access log

        host, port = self.settings.daemon.host, self.settings.daemon.port
        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"daemon.host / daemon.port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
        bound = server.server_address
        log.info("health and metrics on http://%s:%s/healthz and /metrics", bound[0], bound[1])
        return server

    # -- the process ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s received: finishing the work in hand", signal.Signals(signum).name)
            self.stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        server = self.serve_health()
        try:
            self._seed_metrics()
            self.scheduler.start()
            names = ", ".join(account.name for account, _ in self.sources)
            log.info("daemon started: %d account(s): %s", len(self.sources), names)
            self.stop.wait()
            return self.shutdown()
        finally:
            server.shutdown()
            server.server_close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _seed_metrics(self) -> None:
        """The last successes the database remembers, read at start (or, if the database
        was down then, after the next run)."""
        try:
            self.metrics.seed_last_success(self.engine, [a.name for a, _ in self.sources])
        except DBAPIError as exc:
            log.warning("last successes not read: %s", type(exc.orig).__name__)
        else:
            self._seeded = True

    def shutdown(self) -> int:
        self.stop.set()
        done = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True})
        done.start()
        done.join(self.settings.daemon.shutdown_timeout.total_seconds())
        if done.is_alive():  # a request hangs: leave; the open transaction rolls back
            log.error("jobs still running after the shutdown timeout; exiting anyway")
            logging.shutdown()
            os._exit(1)
        log.info("daemon stopped cleanly")
        return 0
