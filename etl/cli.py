"""The command line: parse, wire real collaborators from Settings, print, set the exit code.

Exit codes: 0 success, 1 a run failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from etl.errors import ConfigError, EtlError

# Only click is imported up front: each command imports what it needs, so `--help` and
# the light commands do not pay for SQLAlchemy, pydantic, rich or httpx.
if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy import Engine

    from etl.api.client import CdrApiClient
    from etl.backfill import Progress
    from etl.config import AccountConfig, Settings
    from etl.db.state import RunFigures
    from etl.pipeline import Source
    from etl.run import AccountResult

log = logging.getLogger("etl")
F = TypeVar("F", bound=Callable[..., Any])
_consoles: dict[bool, Console] = {}


def _console(stderr: bool = False) -> Console:
    """The rich console of stdout (or stderr), made on first use."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr)
    return _consoles[stderr]


@dataclass
class App:
    """What every command needs, built once from the settings, which are read when a
    command first needs them (so `--help` works whatever the configuration)."""

    env: dict[str, str] = field(repr=False)
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from etl.config import load_settings
            from etl.logs import setup_logging

            self._settings = load_settings(self.env, **self.overrides)
            setup_logging(self._settings.log_level, self._settings.log_format)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from etl.db.engine import engine_from_settings

            self._engine = engine_from_settings(self.settings)
        return self._engine

    def sync_accounts(self) -> dict[str, int]:
        """Upsert the configured accounts (by name) and remember their ids."""
        from etl.db.accounts import upsert_accounts

        return upsert_accounts(self.engine, self.settings.accounts)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._settings is not None and not self._settings.database_url:
            from etl.db.url import stop_embedded  # our handle on the embedded server

            stop_embedded(self._settings.home)


pass_app = click.make_pass_decorator(App)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    envvar="CDR_ETL_CONFIG",
    help="TOML settings file [env CDR_ETL_CONFIG; default ./cdr-etl.toml if present].",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    help="Log level [env CDR_ETL_LOG_LEVEL; default INFO].",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="Log format: text for a terminal, json for containers [env CDR_ETL_LOG_FORMAT].",
)
@click.version_option(package_name="cdr-etl")
@click.pass_context
def cli(
    ctx: click.Context, config_file: Path | None, log_level: str | None, log_format: str | None
) -> None:
    """Keep PostgreSQL in step with the call detail records of CallMyWay accounts.

    Settings come from a TOML file and CDR_ETL_* environment variables (environment wins).
    Without CDR_ETL_DATABASE_URL the commands use an embedded PostgreSQL server kept in
    CDR_ETL_HOME. Run `cdr-etl demo` for a tour that needs no credentials.
    """
    import os

    env = dict(os.environ)
    if config_file is not None:
        env["CDR_ETL_CONFIG"] = str(config_file)
    app = App(env, {"log_level": log_level, "log_format": log_format})
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.command()
@pass_app
def migrate(app: App) -> None:
    """Bring the database schema to the newest revision (safe to run again)."""
    from etl.db.migrate import current_revision, head_revision, upgrade
    from etl.db.roles import ensure_reader_role

    before = current_revision(app.engine)
    upgrade(app.engine)
    head = head_revision()
    app.sync_accounts()
    if not ensure_reader_role(app.engine):
        click.echo(
            "note: the read-only role cdr_reader could not be set up by this database user; "
            "see README (A read-only role for BI) for the SQL to run by hand",
            err=True,
        )
    if before == head:
        _console().print(f"schema already at revision {head}")
    else:
        _console().print(f"schema migrated from {before or 'empty'} to revision {head}")


@cli.command()
@pass_app
def status(app: App) -> None:
    """Show each account: watermarks and lag per pass, last run, rows stored, rejects."""
    from etl.db.accounts import upsert_accounts_on
    from etl.db.migrate import current_revision_on
    from etl.db.url import connect
    from etl.status import account_status, render_status

    with connect(app.settings) as conn:  # psycopg alone: no SQLAlchemy import
        _require_revision(current_revision_on(conn))
        upsert_accounts_on(conn, app.settings.accounts)
        statuses = account_status(conn, app.settings)
    render_status(_console(), statuses)


@cli.command()
@click.option(
    "--account", "names", multiple=True, metavar="NAME",
    help="Account to check (repeatable). Default: every configured account.",
)  # fmt: skip
@pass_app
def check(app: App, names: tuple[str, ...]) -> int:
    """Is the set-up sound? One line per finding: ok, warn or FAIL.

    Settings valid; the database reachable and at the newest revision; the API over
    HTTPS; for each account its credentials accepted (one cheap request) and its clock
    plausible (the provider's last 24 hours, read on the configured zone, must fall in
    the last 24 hours; whole hours off name the zones that would fit). Exit 0 when all is
    well, 1 when a check failed, 2 on bad configuration. The password is never printed.
    """
    from etl.check import Finding, check_accounts, check_api, check_database
    from etl.config import config_path

    settings = app.settings
    accounts = settings.select_accounts(names)
    for account in accounts:
        account.password()  # a missing secret is bad configuration: exit 2
    where = config_path(app.env) or "no file: environment only"
    failed = False

    def report(finding: Finding) -> None:
        nonlocal failed
        failed = failed or finding.level == "FAIL"
        click.echo(str(finding))

    report(Finding("ok", "settings", f"valid ({len(accounts)} account(s); {where})"))
    for finding in check_database(settings):
        report(finding)
    report(check_api(settings))
    for finding in check_accounts(settings, accounts):
        report(finding)
    return 1 if failed else 0


@cli.command()
@click.option("--rebuild", is_flag=True, required=True, help="Recompute from cdrs (required).")
@click.option(
    "--account", "names", multiple=True, metavar="NAME",
    help="Account to rebuild (repeatable). Default: every configured account.",
)  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@pass_app
def rollup(app: App, rebuild: bool, names: tuple[str, ...], no_progress: bool) -> int:
    """Recompute the kept BI data (call_legs, rollups) of accounts from cdrs.

    After a timezone fix or a change of definition. One UTC day per transaction, its
    position stored: a killed rebuild resumes where it stopped when run again. Dashboards
    stay readable meanwhile (each day's figures change at once, at its commit).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from etl.db.rollup import RebuildProgress, kept_service_level, set_service_level
    from etl.db.rollup import rebuild as rebuild_account

    _require_schema(app)
    ids = app.sync_accounts()
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise ConfigError(f"--account: no configured account named {unknown[0]!r}")
    wanted = app.settings.bi.service_level_seconds
    with app.engine.begin() as conn:
        kept = kept_service_level(conn)
        if kept != wanted and names:
            raise ConfigError(
                f"bi.service_level_seconds: {wanted} s, the kept data uses {kept} s: rebuild "
                "every account (cdr-etl rollup --rebuild without --account)"
            )
        set_service_level(conn, wanted)
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("days"), console=_console(stderr=True),
        disable=no_progress or not _console(stderr=True).is_terminal,
    )  # fmt: skip
    with bar:
        for name in names or tuple(ids):
            task = bar.add_task(name, total=None)

            def show(p: RebuildProgress, task: Any = task) -> None:
                bar.update(task, completed=p.done, total=p.total)

            days = rebuild_account(app.engine, ids[name], name, show)
            _console().print(f"{name}: kept data rebuilt from cdrs ({days} days)")
    return 0


def _require_schema(app: App) -> None:
    from etl.db.migrate import current_revision

    _require_revision(current_revision(app.engine))


def _require_revision(current: str | None) -> None:
    from etl.db.migrate import head_revision

    if current != head_revision():
        raise ConfigError(
            f"database: schema is at revision {current or 'empty'}, not "
            f"{head_revision()}; run `cdr-etl migrate` first"
        )


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        _die(2, str(exc))
    except EtlError as exc:
        _die(1, str(exc))
    except (KeyboardInterrupt, click.exceptions.Abort):
        _die(1, "aborted")
    except Exception as exc:
        database = sys.modules.get("sqlalchemy.exc")  # loaded by whatever raised it
        if database is not None and isinstance(exc, database.OperationalError):
            _die(1, f"database: {_first_line(exc.orig or exc)}")
        driver = sys.modules.get("psycopg")
        if driver is not None and isinstance(exc, driver.OperationalError):
            _die(1, f"database: {_first_line(exc)}")
        from etl.redact import RedactingFilter, redact

        # a bug: still one line, still no secret, exit 1

        logging.getLogger("etl").debug("unexpected error", exc_info=True)
        _die(1, redact(f"{type(exc).__name__}: {_first_line(exc)}", RedactingFilter.secrets()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _die(code: int, message: str) -> NoReturn:
    click.echo(f"cdr-etl: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    with _errors():
        try:
            code = cli.main(args=argv, prog_name="cdr-etl", standalone_mode=False)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


# --- wiring of the sync commands -------------------------------------------------------------


def _client(app: App, sleep: Callable[[float], object] | None = None) -> CdrApiClient:
    from etl.wiring import api_client

    return api_client(app.settings.api, sleep=sleep)


def _sources(
    app: App, client: CdrApiClient, names: tuple[str, ...]
) -> list[tuple[AccountConfig, Source]]:
    from etl.wiring import sources

    chosen = app.settings.select_accounts(names)
    for account in chosen:
        account.password()  # a missing secret fails before the database is touched
    _require_schema(app)
    return sources(client, chosen, app.sync_accounts(), app.settings.api.page_size)


def _print_summaries_here(app: App) -> None:
    """This command prints each run's summary line: the text log leaves them out."""
    from etl.logs import summaries_printed_elsewhere

    app.settings  # noqa: B018 (reading the settings sets up the log handlers first)
    summaries_printed_elsewhere()


def _run_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def _print_results(results: list[AccountResult]) -> None:
    """One summary line per account run; failures also on stderr."""

    for result in results:
        click.echo(result.summary(), err=result.status == "failed")


@cli.command()
@click.option(
    "--account", "names", multiple=True, metavar="NAME",
    help="Account to sync (repeatable). Default: every configured account.",
)  # fmt: skip
@pass_app
def sync(app: App, names: tuple[str, ...]) -> int:
    """One incremental run: read every due window of every pass for the accounts.

    Each pass (sync.passes, default 2m, 1h, 24h) keeps its own watermark on the provider's
    wall clock and reads each window once, so late CDRs are caught a known number of
    times. Accounts run concurrently (sync.concurrency). An account another process is
    syncing right now is skipped with a message. Exit 1 if any account failed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from etl.db.engine import engine_from_settings
    from etl.sync import sync_account
    from etl.windows import utc_now

    _print_summaries_here(app)
    # a lock and a load connection per account in flight (as the daemon's pool): a smaller
    # pool would leave every worker holding its lock and waiting for a second connection
    chosen = app.settings.select_accounts(names)  # an unknown name fails before any start
    workers = max(1, min(app.settings.sync.concurrency, len(chosen)))
    if app._engine is None:
        app._engine = engine_from_settings(app.settings, pool_size=2 * workers + 1)
    with _client(app) as client:
        sources = _sources(app, client, names)
        run_id, now = _run_id(), utc_now()
        with ThreadPoolExecutor(max(1, min(workers, len(sources)))) as pool:
            results = list(
                pool.map(
                    lambda pair: sync_account(
                        app.engine, pair[1], pair[0], app.settings.sync, now, run_id
                    ),
                    sources,
                )
            )
    _print_results(results)
    return 0 if all(r.ok for r in results) else 1


def _wall_clock(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    from datetime import datetime

    if value is None:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(value.strip(), fmt)  # noqa: DTZ007 - provider wall clock
        except ValueError:
            continue
    raise click.BadParameter(f"expected 'YYYY-MM-DD HH:MM:SS' (provider local time), got {value!r}")


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError):  # not found (a KeyError), a bad key, unreadable
        raise click.BadParameter(f"unknown time zone {value!r} (an IANA name)") from None
    return value


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    from etl.config import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--account", "name", required=True, metavar="NAME", help="The account to read.")
@click.option(
    "--start", required=True, callback=_wall_clock, metavar="'YYYY-MM-DD HH:MM:SS'",
    help="Start of the range, on the provider's clock (the account's time zone).",
)  # fmt: skip
@click.option(
    "--end", required=True, callback=_wall_clock, metavar="'YYYY-MM-DD HH:MM:SS'",
    help="End of the range, on the provider's clock.",
)  # fmt: skip
@click.option(
    "--window", callback=_duration, metavar="DURATION",
    help="Size of one by-date query (default: sync.window, 1h).",
)  # fmt: skip
@click.option(
    "--concurrency", type=click.IntRange(1, 32), metavar="N",
    help="Windows read at once (default: sync.backfill_concurrency, 3).",
)  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@pass_app
def backfill(
    app: App,
    name: str,
    start: datetime,
    end: datetime,
    window: timedelta | None,
    concurrency: int | None,
    no_progress: bool,
) -> int:
    """Read a date range of one account once, in windows, with a progress bar.

    Resumable: after a crash, the same command skips the windows already stored. Once a
    range is complete, asking for it again reads it again (for a day that needs a
    re-read). The incremental watermarks are left alone, so a backfill may run beside
    the daemon.
    """
    from etl.backfill import backfill_account

    _print_summaries_here(app)
    if end <= start:
        raise click.BadParameter("must be after --start", param_hint="'--end'")
    if window is not None and window <= timedelta(0):
        raise click.BadParameter("must be longer than 0s", param_hint="'--window'")
    size = window or app.settings.sync.window
    _not_far_ahead(end, app.settings.account(name))
    with _client(app) as client, _progress(no_progress) as progress:
        ((account, source),) = _sources(app, client, (name,))
        result = backfill_account(
            app.engine, source, account.name, start, end, size, _run_id(),
            concurrency=concurrency or app.settings.sync.backfill_concurrency,
            progress=progress,
        )  # fmt: skip
    _print_results([result])
    return 0 if result.ok else 1


def _not_far_ahead(end: datetime, account: AccountConfig) -> None:
    """An --end more than a day ahead of the account's clock is a typo (2099 for 2019), not
    a range: its windows hold nothing yet, and a century of them is a million requests."""
    from zoneinfo import ZoneInfo

    from etl.windows import utc_now, wall_clock

    now = wall_clock(utc_now(), ZoneInfo(account.timezone))
    if end > now + timedelta(days=1):
        raise click.BadParameter(
            f"{end:%Y-%m-%d %H:%M:%S} is more than a day after now on the account's clock "
            f"({now:%Y-%m-%d %H:%M:%S} in {account.timezone}): no CDR is there yet",
            param_hint="'--end'",
        )


@contextmanager
def _progress(disabled: bool) -> Iterator[Progress | None]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if disabled or not _console(stderr=True).is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("windows"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} CDRs"), TextColumn("{task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console(stderr=True),
    )  # fmt: skip
    task = bar.add_task("backfill", total=None, rows=0, rate=0.0)
    began = time.monotonic()
    rows = 0

    def update(done: int, total: int, delta: RunFigures) -> None:
        nonlocal rows
        rows += delta.fetched
        rate = rows / max(time.monotonic() - began, 1e-6)
        bar.update(task, completed=done, total=total, rows=rows, rate=rate)

    with bar:
        yield update


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; loopback unless told otherwise.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the data.")
@click.option(
    "--faults", default="", metavar="SPEC",
    help="Misbehaviour by rate, e.g. 'error_5xx=0.1,rate_429=0.05,page_cap=300,late_rate=0.1'.",
)  # fmt: skip
@click.option("--days", type=float, default=30.0, show_default=True,
              help="Days of history before now.")  # fmt: skip
@click.option("--calls-per-hour", type=float, default=60.0, show_default=True)
@click.option("--timezone", default="America/Costa_Rica", show_default=True, callback=_zone,
              help="The simulated provider's clock (an IANA zone).")  # fmt: skip
@click.option(
    "--order", type=click.Choice(["sorted", "shuffled_ties", "unordered"]), default="sorted",
    show_default=True,
    help="Order of by-date rows: sorted; rows sharing a second reshuffled on every request; "
    "or every request in a fresh random order (no ORDER BY).",
)  # fmt: skip
@click.option(
    "--bounds", type=click.Choice(["inclusive", "exclusive", "start_inclusive", "end_inclusive"]),
    default="inclusive", show_default=True,
    help="Which ends of a by-date range the server includes: both, neither, or one.",
)  # fmt: skip
@click.option("--envelope", type=click.Choice(["bare", "cdrs", "data"]), default="bare",
              show_default=True, help="JSON answers: a bare array, or under that key.")  # fmt: skip
def simulate(**options: Any) -> None:
    """Serve the bundled simulator of getCdrs.php until Ctrl-C or SIGTERM.

    It serves every mode (by date, live=1, recent=1) and format (json, csv, html) of the
    API for the demo account: username 8569841, password 01234567891, zone
    America/Costa_Rica (or --timezone), with realistic generated CDRs that keep coming as
    time passes. (`python -m etl.simulator` is the same command.)
    """
    from etl.simulator import Faults, SimAccount, SimulatorServer, serve

    try:
        faults = Faults.parse(options["faults"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--faults'") from None
    account = SimAccount(
        seed=options["seed"], calls_per_hour=options["calls_per_hour"],
        timezone=options["timezone"], order=options["order"], bounds=options["bounds"],
    )  # fmt: skip

    def ready(server: SimulatorServer) -> None:
        click.echo(  # the URL last: scripts take the line's last word
            f"simulator (username {account.username}, password {account.password}, timezone "
            f"{account.timezone}, faults {faults.describe()}) serving {server.url}"
        )

    serve(
        options["port"], options["seed"], options["host"], faults, [account],
        days=options["days"], envelope=options["envelope"], on_ready=ready,
    )  # fmt: skip


@cli.command()
@pass_app
def daemon(app: App) -> int:
    """Run the schedule until SIGTERM or SIGINT: sync every account each sync.interval,
    snapshot live calls each sync.live_interval (accounts with live = true), and serve
    /healthz and /metrics on daemon.host:daemon.port (127.0.0.1:9108).

    It catches up after downtime from the watermarks by itself. On SIGTERM it stops
    taking work, stores the page in hand, commits and exits 0.
    """
    import threading

    from etl.daemon import Daemon, pool_size
    from etl.db.engine import engine_from_settings
    from etl.pipeline import stoppable_sleep

    stop = threading.Event()
    app._engine = engine_from_settings(app.settings, pool_size=pool_size(app.settings))
    with _client(app, sleep=stoppable_sleep(stop)) as client:
        sources = _sources(app, client, ())
        return Daemon(app.settings, app.engine, sources, stop=stop).run()


@cli.command()
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@pass_app
def demo(app: App, no_progress: bool) -> int:
    """The tour that needs no credentials: an embedded PostgreSQL (unless a database is
    configured), the bundled simulator on a free loopback port, migrate, a backfill of the
    last 7 days, an incremental sync and a live snapshot; then the figures of the week,
    the psql command to open the database, and example queries. Safe to run again.
    """
    from etl.db.engine import database_url, embedded_url, make_engine
    from etl.demo import DEMO, run_demo, summary_lines

    _print_summaries_here(app)
    if any(account.name == DEMO.name for account in app.settings.accounts):
        raise ConfigError(
            f"accounts: an account named {DEMO.name!r} is configured; the demo would write "
            "simulated CDRs into it (rename it, or run the demo on another database)"
        )
    if app.settings.database_url:
        url = database_url(app.settings)
    else:  # the embedded server says where it starts (a log line)
        url = embedded_url(app.settings.home, keep_running=True)
        app._engine = make_engine(url)
    _console().print("simulator up; migrating, then backfilling 7 days of the demo account")
    with _progress(no_progress) as progress:
        report = run_demo(app.settings, app.engine, progress=progress)
    _print_results([report.backfill, report.sync])
    for line in summary_lines(report, url):
        _console().print(line, markup=False, highlight=False, soft_wrap=True)
    ok = report.backfill.ok and report.sync.ok and report.live.ok
    return 0 if ok else 1


@cli.command()
@click.option(
    "--account", "names", multiple=True, metavar="NAME",
    help="Account to snapshot (repeatable). Default: every configured account.",
)  # fmt: skip
@pass_app
def live(app: App, names: tuple[str, ...]) -> int:
    """One snapshot of the calls in progress (live=1&fullAccount=1) into the database.

    The account's rows in live_calls are replaced at once (calls that ended disappear) and
    one row (active, ringing, talking) is added to live_samples. Legs that just ended are
    not counted. Exit 1 if any account failed.
    """
    from etl.live import snapshot_live
    from etl.windows import utc_now

    _print_summaries_here(app)
    with _client(app) as client:
        results = [
            snapshot_live(app.engine, source, account.name, utc_now(), _run_id())
            for account, source in _sources(app, client, names)
        ]
    for result in results:
        click.echo(result.summary(), err=result.status == "failed")
    return 0 if all(r.status != "failed" for r in results) else 1


@cli.command()
@click.option("--account", "name", required=True, metavar="NAME", help="The account to check.")
@click.option("--repair", is_flag=True, help="Store what is missing or stale.")
@pass_app
def verify(app: App, name: str, repair: bool) -> int:
    """Compare the last 24 hours as the API serves them (recent=1) with the database.

    Reports CDRs missing from the database, stored with other content, and stored but no
    longer served (never deleted). Exit 1 when they differ (or the check failed); with
    --repair the missing and stale ones are stored, and the exit code says whether the
    database differed before the repair.
    """
    from etl.verify import verify_account
    from etl.windows import utc_now

    _print_summaries_here(app)
    with _client(app) as client:
        ((account, source),) = _sources(app, client, (name,))
        result = verify_account(
            app.engine, source, account.name, utc_now(), _run_id(), repair=repair,
            healthy_lag=app.settings.sync.healthy_lag,
        )  # fmt: skip
    click.echo(result.summary(), err=result.status == "failed")
    for label, callids in (("missing", result.missing), ("different", result.different),
                           ("extra", result.extra)):  # fmt: skip
        if callids:
            shown = ", ".join(callids[:10]) + (" ..." if len(callids) > 10 else "")
            click.echo(f"  {label} ({len(callids)}): {shown}")
    return 0 if result.status in ("ok", "skipped") else 1
