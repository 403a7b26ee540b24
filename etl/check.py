"""`cdr-etl check`: is the set-up sound, before the first sync finds out the hard way?

One finding per line, each `ok`, `warn` or `FAIL`:

- settings: read and valid (bad settings never get here: they exit 2 with one line);
- database: reachable, and at the newest Alembic revision;
- api: the URL is HTTPS (plain HTTP only to loopback, or where `api.allow_http` says so);
- per account, credentials: one cheap request (a by-date query of the last hour, `cant=1`)
  is answered, not refused;
- per account, clock: the provider's times, read on the configured zone, are plausible.
  `recent=1` answers the completed CDRs of the provider's last 24 hours; read on a wrong
  zone they land hours off: in the future (the zone is behind the provider's clock) or
  starting more than 24 hours ago (it is ahead). The finding names the whole hours and
  the zones that would fit.

The password is never printed: every message comes from our own errors, built without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from etl.api.client import CdrApiClient, Credentials, RetryPolicy
from etl.config import AccountConfig, Settings
from etl.errors import AuthError, EtlError
from etl.normalize import normalize_page
from etl.windows import wall_clock

__all__ = ["Finding", "check_accounts", "check_api", "check_database", "plausible_clock"]

SLACK = timedelta(minutes=15)  # what clocks and late CDRs may explain
HOUR = timedelta(hours=1)
CLOCKS = timedelta(minutes=10)  # how far the provider's clock may run ahead of ours
CHEAP = RetryPolicy(max_attempts=2, base=0.5, cap=2.0, max_total=20.0)


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | FAIL
    subject: str
    text: str

    def __str__(self) -> str:
        return f"{self.level:<4}  {self.subject}: {self.text}"


def check_database(settings: Settings) -> Iterator[Finding]:
    """Reachable, and at the newest revision."""
    from sqlalchemy import make_url

    from etl.db.engine import engine_from_settings
    from etl.db.migrate import current_revision, head_revision

    engine = engine_from_settings(settings, pool_size=1)
    where = make_url(engine.url).render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except Exception as exc:
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"])[0]
        yield Finding("FAIL", "database", f"cannot reach {where}: {first}")
        return
    finally:
        engine.dispose()
    head = head_revision()
    if current == head:
        yield Finding("ok", "database", f"{where}, schema at the newest revision ({head})")
        yield _kept_definitions(settings)
    else:
        yield Finding(
            "FAIL", "database",
            f"{where}: schema at revision {current or 'empty'}, the newest is {head}; "
            "run `cdr-etl migrate`",
        )  # fmt: skip


def _kept_definitions(settings: Settings) -> Finding:
    """The kept BI data is computed with the configured service-level threshold."""
    from etl.db.engine import engine_from_settings
    from etl.db.rollup import kept_service_level

    engine = engine_from_settings(settings, pool_size=1)
    try:
        with engine.connect() as conn:
            kept = kept_service_level(conn)
    finally:
        engine.dispose()
    wanted = settings.bi.service_level_seconds
    if kept == wanted:
        return Finding("ok", "bi", f"kept data computed with service_level_seconds = {kept}")
    return Finding(
        "FAIL", "bi",
        f"bi.service_level_seconds is {wanted} but the kept data uses {kept}; "
        "run `cdr-etl rollup --rebuild`",
    )  # fmt: skip


def check_api(settings: Settings) -> Finding:
    url = settings.api.url
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.scheme == "https":
        return Finding("ok", "api", f"{shown} over HTTPS")
    if parts.hostname in ("localhost", "127.0.0.1", "::1") or (parts.hostname or "").startswith(
        "127."
    ):
        return Finding("ok", "api", f"{shown}: plain HTTP, to loopback only")
    if settings.api.allow_http:
        return Finding("warn", "api", f"{shown}: plain HTTP allowed by api.allow_http")
    return Finding("FAIL", "api", f"{shown}: not HTTPS; credentials are only sent over HTTPS")


def check_accounts(settings: Settings, accounts: list[AccountConfig]) -> Iterator[Finding]:
    """Credentials and clock of each account (one cheap request, then `recent=1`)."""
    from etl.wiring import api_client

    with api_client(settings.api, retry=CHEAP) as client:
        for account in accounts:
            yield from _account(client, account, datetime.now(UTC))


def _account(client: CdrApiClient, account: AccountConfig, now: datetime) -> Iterator[Finding]:
    subject = f"account {account.name}"
    creds = Credentials(account.username, account.password())
    local_now = wall_clock(now, account.tz)
    try:
        client.fetch_page(creds, local_now - timedelta(hours=1), local_now, 0, 1)
    except AuthError as exc:
        yield Finding("FAIL", subject, f"credentials refused ({exc})")
        return
    except EtlError as exc:
        yield Finding("FAIL", subject, f"API not usable: {exc}")
        return
    yield Finding("ok", subject, f"credentials of endpoint {account.username} accepted")
    try:
        records = client.fetch_recent(creds)
    except EtlError as exc:
        yield Finding("warn", subject, f"clock not checked: recent=1 failed ({exc})")
        return
    times = [leg.detect_time for leg in normalize_page(records, account.tz).legs]
    yield plausible_clock(subject, account.timezone, [t for t in times if t], now)


def plausible_clock(subject: str, zone: str, times: list[datetime], now: datetime) -> Finding:
    """Do the provider's last 24 hours, read on `zone`, fall within the last 24 hours?"""
    if not times:
        return Finding("warn", subject, "clock not checked: no CDR in the last 24 hours")
    ahead = max(times) - now  # > 0: CDRs from the future
    behind = (now - timedelta(hours=24)) - min(times)  # > 0: older than the last 24 h
    shift = ahead if ahead > SLACK else -behind if behind > SLACK else None
    if shift is None:
        newest = f"{max(times).astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M}"
        return Finding("ok", subject, f"clock {zone} plausible (newest CDR {newest})")
    hours = _whole_hours(times, now, shift)
    way = "in the future" if hours > 0 else "older than 24 hours"
    return Finding(
        "FAIL", subject,
        f"CDRs read on {zone} land {abs(hours)} h {way}{_doubt(times, now)}: the "
        f"provider's clock is not {zone}; {_zones_that_fit(zone, hours, now)}",
    )  # fmt: skip


def _doubt(times: list[datetime], now: datetime) -> str:
    """When the CDRs allow more than one whole number of hours (quiet hours at both ends of
    the provider's last 24 hours, a night or a weekend), say which: the estimate is their
    middle, not a certainty."""
    low, high = _feasible(times, now)
    first, last = math.ceil(low / HOUR), math.floor(high / HOUR)
    if last <= first:
        return ""
    ends = sorted((abs(first), abs(last)))
    return f" (or anywhere from {ends[0]} to {ends[1]} h: few calls at both ends of the 24 hours)"


def _feasible(times: list[datetime], now: datetime) -> tuple[timedelta, timedelta]:
    """The provider's last 24 hours shifted by s hold the CDRs: s is at least the newest
    one's lead on now and at most the oldest one's lead on 24 hours ago."""
    return max(times) - now, min(times) + 24 * HOUR - now


def _whole_hours(times: list[datetime], now: datetime, shift: timedelta) -> int:
    """How many whole hours the zone is off. The provider's last 24 hours shifted by s hold
    the CDRs: s is at least the newest one's lead on now and at most the oldest one's lead on
    24 hours ago (give or take clocks). On a quiet night both ends of those 24 hours (the
    same hour of the night) are often sparse alike, so the middle of that range is the
    estimate, kept inside it: the newest CDR alone, 50 minutes old, would say an hour too
    few. When the range holds more than one whole hour, `_doubt` says so."""
    low, high = _feasible(times, now)
    hours = round((low + high) / 2 / HOUR)
    hours = min(max(hours, math.ceil((low - CLOCKS) / HOUR)), math.floor((high + CLOCKS) / HOUR))
    return max(hours, 1) if shift > timedelta(0) else min(hours, -1)


def _zones_that_fit(zone: str, hours: int, now: datetime) -> str:
    """The UTC offset that would fit, and a few zones that have it now."""
    offset = now.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    wanted = offset + timedelta(hours=hours)  # read on a later clock, times look earlier
    fits = sorted(
        name for name in available_timezones()
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "posix/", "right/"))
        and now.astimezone(ZoneInfo(name)).utcoffset() == wanted
    )  # fmt: skip
    preferred = [name for name in fits if name == "America/Costa_Rica"] + fits
    sign = "-" if wanted < timedelta(0) else "+"
    minutes = int(abs(wanted).total_seconds()) // 60
    names = ", ".join(dict.fromkeys(preferred[:4])) or "none known"
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d} would fit (e.g. {names})"
