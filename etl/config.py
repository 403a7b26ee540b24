"""Settings: the one reader of the environment and the TOML file.

Precedence: environment over the TOML file over defaults. Passwords come from the
environment or from files (Docker secrets), never from the TOML file, and never show in
`repr()`, logs or errors. Any invalid setting raises `ConfigError` with one line that names it.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from etl.errors import ConfigError

DEFAULT_API_URL = "https://callmyway.com/getCdrs.php"
DEFAULT_CONFIG_FILE = "cdr-etl.toml"
ENV_PREFIX = "CDR_ETL_"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """`30s`, `5m`, `1h`, `1d` (or a number of seconds, or a timedelta) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    raise ValueError(f"expected a duration such as 30s, 5m, 1h or 1d, got {value!r}")


def format_duration(value: timedelta) -> str:
    """The short form of a duration: 30s, 5m, 24h, 7d (days only from two days up)."""
    seconds = int(value.total_seconds())
    if seconds and seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    for unit in ("h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    url: str = DEFAULT_API_URL
    page_size: int = Field(1000, ge=1, le=10_000)
    format: Literal["json", "csv", "html"] = "json"
    timeout: Duration = timedelta(seconds=30)
    recent_timeout: Duration = timedelta(minutes=2)
    max_attempts: int = Field(6, ge=1, le=50)
    max_retry_time: Duration = timedelta(minutes=5)
    allow_http: bool = False  # plain http to a non-loopback host (never for real credentials)
    # An empty HTTP 200 body is an error (retried, then the run fails) unless the provider is
    # known to answer empty windows that way; an empty window normally answers [].
    empty_body_is_no_data: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s) URL such as https://callmyway.com/getCdrs.php")
        if parts.query or "password" in value.lower():
            raise ValueError("must not carry a query string (credentials come from secrets)")
        return value

    @field_validator("timeout", "recent_timeout", "max_retry_time")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        return _positive(value)


class SyncSettings(_Section):
    interval: Duration = timedelta(minutes=5)
    jitter: Duration = timedelta(seconds=30)
    window: Duration = timedelta(hours=1)
    min_window: Duration = timedelta(minutes=1)  # less than this due: wait for the next run
    passes: tuple[Duration, ...] = (timedelta(minutes=2), timedelta(hours=1), timedelta(hours=24))
    initial_lookback: Duration = timedelta(hours=24)
    concurrency: int = Field(4, ge=1, le=64)  # accounts synced at once
    backfill_concurrency: int = Field(3, ge=1, le=32)  # windows in flight in a backfill
    live_interval: Duration = timedelta(seconds=30)
    verify_interval: Duration | None = None  # daemon: run `verify --repair` this often

    @field_validator("interval", "window", "initial_lookback", "live_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        return _positive(value)

    @property
    def healthy_lag(self) -> timedelta:
        """How far a healthy sync's newest watermark may trail now: the shortest pass's
        delay, plus a run's interval and its jitter, plus one window. `verify` counts the
        CDRs older than that as due even when the watermark is further behind (a stuck
        sync is what verify is for)."""
        return self.passes[0] + self.interval + self.jitter + self.window

    @field_validator("passes")
    @classmethod
    def _passes(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if not value:
            raise ValueError("needs at least one delay")
        if any(delay < timedelta(0) for delay in value):
            raise ValueError("delays must not be negative")
        if len(set(value)) != len(value):
            raise ValueError("delays must be distinct")
        return tuple(sorted(value))


class DaemonSettings(_Section):
    host: str = "127.0.0.1"  # health and metrics listener; loopback unless told otherwise
    port: int = Field(9108, ge=0, le=65535)
    shutdown_timeout: Duration = timedelta(seconds=20)


class BiSettings(_Section):
    # an inbound call answered by a person within this many seconds of its start counts in
    # the service level; the kept data uses the value of the last `cdr-etl rollup --rebuild`
    service_level_seconds: int = Field(20, ge=1, le=3600)


class AccountConfig(_Section):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    username: str
    timezone: str = "America/Costa_Rica"
    live: bool = True
    password_env: str | None = None
    password_file: Path | None = None

    @field_validator("username", mode="before")
    @classmethod
    def _username(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a quoted string (leading zeros matter)")
        if not value.strip().isdigit():
            raise ValueError(f"expected the endpoint number (digits), got {value!r}")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def password(self) -> str:
        """The account's password, read now from its variable or file. ConfigError if absent."""
        where = f"accounts.{self.name}"
        if self.password_env:
            value = os.environ.get(self.password_env, "").strip()
            if not value:
                raise ConfigError(
                    f"{where}.password_env: environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                value = self.password_file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                raise ConfigError(
                    f"{where}.password_file: {self.password_file} is not UTF-8 text"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"{where}.password_file: cannot read {self.password_file}: {exc.strerror}"
                ) from None
            if not value:
                raise ConfigError(f"{where}.password_file: {self.password_file} is empty")
            return value
        raise ConfigError(f"{where}: no password_env or password_file given")


def validate_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("cdr-etl", appauthor=False))


class Settings(BaseSettings):
    """Everything cdr-etl can be told. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(default=None, repr=False)
    database_password_file: Path | None = None  # the database password, kept out of the URL
    home: Path = Field(default_factory=default_home)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    api: ApiSettings = ApiSettings()
    sync: SyncSettings = SyncSettings()
    daemon: DaemonSettings = DaemonSettings()
    bi: BiSettings = BiSettings()
    accounts: tuple[AccountConfig, ...] = ()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("expected a PostgreSQL URL such as postgresql+psycopg://user@host/db")
        return value

    @field_validator("accounts")
    @classmethod
    def _unique_accounts(cls, value: tuple[AccountConfig, ...]) -> tuple[AccountConfig, ...]:
        seen: set[str] = set()
        for account in value:
            if account.name in seen:
                raise ValueError(f"account name {account.name!r} is used twice")
            seen.add(account.name)
        return value

    def account(self, name: str) -> AccountConfig:
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none configured"
        raise ConfigError(f"--account: unknown account {name!r} (known: {known})")

    def select_accounts(self, names: tuple[str, ...] | list[str]) -> list[AccountConfig]:
        if names:  # each named account once, in the order first named
            return [self.account(name) for name in dict.fromkeys(names)]
        if not self.accounts:
            raise ConfigError(
                "accounts: none configured (set CDR_ETL_USERNAME/CDR_ETL_PASSWORD/"
                "CDR_ETL_TIMEZONE or add [[accounts]] to the TOML file)"
            )
        return list(self.accounts)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges the TOML file and the environment itself (see below), so
        # that one function owns the precedence and the error messages.
        return (init_settings,)


# Environment variables and the setting each one feeds (environment wins over the file).
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "CDR_ETL_DATABASE_URL": ("database_url",),
    "DATABASE_URL": ("database_url",),
    "CDR_ETL_DATABASE_PASSWORD_FILE": ("database_password_file",),
    "CDR_ETL_HOME": ("home",),
    "CDR_ETL_LOG_LEVEL": ("log_level",),
    "CDR_ETL_LOG_FORMAT": ("log_format",),
    "CDR_ETL_API_URL": ("api", "url"),
    "CDR_ETL_API_FORMAT": ("api", "format"),
    "CDR_ETL_API_PAGE_SIZE": ("api", "page_size"),
    "CDR_ETL_API_TIMEOUT": ("api", "timeout"),
    "CDR_ETL_API_MAX_ATTEMPTS": ("api", "max_attempts"),
    "CDR_ETL_API_ALLOW_HTTP": ("api", "allow_http"),
    "CDR_ETL_SYNC_INTERVAL": ("sync", "interval"),
    "CDR_ETL_SYNC_WINDOW": ("sync", "window"),
    "CDR_ETL_SYNC_PASSES": ("sync", "passes"),
    "CDR_ETL_SYNC_INITIAL_LOOKBACK": ("sync", "initial_lookback"),
    "CDR_ETL_SYNC_MIN_WINDOW": ("sync", "min_window"),
    "CDR_ETL_BI_SERVICE_LEVEL_SECONDS": ("bi", "service_level_seconds"),
    "CDR_ETL_DAEMON_HOST": ("daemon", "host"),
    "CDR_ETL_DAEMON_PORT": ("daemon", "port"),
}
# The single account named `default`, defined without a file.
SINGLE_ACCOUNT_ENV = (
    "CDR_ETL_USERNAME",
    "CDR_ETL_PASSWORD",
    "CDR_ETL_PASSWORD_FILE",
    "CDR_ETL_TIMEZONE",
    "CDR_ETL_LIVE",
)
KNOWN_ENV = ("CDR_ETL_CONFIG", *ENVIRONMENT, *SINGLE_ACCOUNT_ENV)


_CONFIG = "--config / CDR_ETL_CONFIG"  # how an error names the settings file


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{_CONFIG}: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{_CONFIG}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for index, account in enumerate(data.get("accounts", []) or []):
        if isinstance(account, dict) and "password" in account:
            name = account.get("name", index)
            raise ConfigError(
                f"accounts.{name}.password: passwords are never read from the TOML file; "
                "use password_env or password_file"
            )
    return data


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        section = target.get(key)
        if not isinstance(section, dict):
            section = target[key] = {}
        target = section
    target[path[-1]] = value


def _env_value(path: tuple[str, ...], raw: str) -> Any:
    if path == ("sync", "passes"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _single_account(env: dict[str, str]) -> dict[str, Any] | None:
    username = env.get("CDR_ETL_USERNAME")
    if not username:
        extra = [name for name in SINGLE_ACCOUNT_ENV[1:] if env.get(name)]
        if extra and extra != ["CDR_ETL_TIMEZONE"] and extra != ["CDR_ETL_LIVE"]:
            raise ConfigError(f"CDR_ETL_USERNAME: not set, but {extra[0]} is")
        return None
    account: dict[str, Any] = {"name": "default", "username": username}
    if env.get("CDR_ETL_TIMEZONE"):
        account["timezone"] = env["CDR_ETL_TIMEZONE"]
    if env.get("CDR_ETL_LIVE"):
        account["live"] = env["CDR_ETL_LIVE"]
    if env.get("CDR_ETL_PASSWORD_FILE"):
        account["password_file"] = env["CDR_ETL_PASSWORD_FILE"]
    else:
        account["password_env"] = "CDR_ETL_PASSWORD"
    return account


def config_path(env: dict[str, str]) -> Path | None:
    if env.get("CDR_ETL_CONFIG"):
        return Path(env["CDR_ETL_CONFIG"])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the TOML file and the environment; raise ConfigError naming a bad setting."""
    env = dict(os.environ if env is None else env)
    path = config_path(env)
    data: dict[str, Any] = _read_toml(path) if path else {}
    # CDR_ETL_DATABASE_URL beats DATABASE_URL: apply the weaker first.
    for name in sorted(ENVIRONMENT, key=lambda n: n == "CDR_ETL_DATABASE_URL"):
        if env.get(name, "").strip():
            target = ENVIRONMENT[name]
            _set(data, target, _env_value(target, env[name].strip()))
    single = _single_account(env)
    if single is not None:
        accounts = [
            a
            for a in data.get("accounts", []) or []
            if not isinstance(a, dict) or a.get("name") != "default"
        ]
        data["accounts"] = [*accounts, single]
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    try:
        return Settings(**data)
    except ValidationError as exc:
        single_at = len(data["accounts"]) - 1 if single is not None else None
        raise ConfigError(_one_line(exc, single_at)) from None


# The settings of the account that the environment gives alone, by the variable they came from.
_SINGLE_ACCOUNT_FIELDS = {
    "username": "CDR_ETL_USERNAME",
    "timezone": "CDR_ETL_TIMEZONE",
    "live": "CDR_ETL_LIVE",
    "password_file": "CDR_ETL_PASSWORD_FILE",
}


def _one_line(exc: ValidationError, single_at: int | None = None) -> str:
    """The first error, named by its setting (or by the environment variable that set it,
    for the account that CDR_ETL_USERNAME and its siblings give)."""
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    variable = None
    if len(location) >= 3 and location[0] == "accounts" and location[1] == str(single_at):
        variable = _SINGLE_ACCOUNT_FIELDS.get(location[2])
    if len(location) >= 2 and location[0] == "accounts" and location[1].isdigit():
        location[1] = f"[{location[1]}]"
    name = ".".join(location).replace(".[", "[") or "settings"
    if variable is not None:
        name = f"{variable} ({name})"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    elif error["type"] == "missing":
        message = "is required"
    return f"{name}: {message}"
