"""Settings: TOML plus environment, durations, accounts, and one clear line per bad setting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from etl.config import load_settings, parse_duration
from etl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("clean_env")

SECRET = "98765432109"


def write(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "cdr-etl.toml"
    path.write_text(text)
    return {"CDR_ETL_CONFIG": str(path)}


def test_defaults_are_safe_without_any_setting() -> None:
    """With nothing set, every setting has its documented default and no account exists."""
    settings = load_settings({})
    assert settings.api.url == "https://callmyway.com/getCdrs.php"
    assert settings.api.page_size == 1000
    assert settings.api.format == "json"
    assert settings.api.timeout == timedelta(seconds=30)
    assert settings.api.max_attempts == 6
    assert settings.sync.interval == timedelta(minutes=5)
    assert settings.sync.window == timedelta(hours=1)
    assert settings.sync.passes == (timedelta(minutes=2), timedelta(hours=1), timedelta(days=1))
    assert settings.sync.initial_lookback == timedelta(hours=24)
    assert settings.database_url is None
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.accounts == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), (" 2m ", 120), (45, 45)],
)
def test_durations_parse(text: object, expected: int) -> None:
    """Durations accept 30s, 5m, 1h, 1d."""
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "1w", "-1h", "h", None, True])
def test_bad_durations_are_refused(text: object) -> None:
    """Anything else is not a duration."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    """Every TOML section is read, and an environment variable beats the file."""
    env = write(
        tmp_path,
        """
[api]
url = "https://www.callmyway.com/getCdrs.php"
page_size = 500
format = "csv"
timeout = "20s"
max_attempts = 3
[sync]
interval = "10m"
window = "30m"
passes = ["24h", "2m"]
initial_lookback = "2d"
[[accounts]]
name = "main"
username = "8569841"
password_env = "CMW_MAIN_PASSWORD"
timezone = "America/Costa_Rica"
live = false
""",
    )
    env |= {"CDR_ETL_API_URL": "https://callmyway.com/getCdrs.php", "CMW_MAIN_PASSWORD": SECRET}
    settings = load_settings(env)
    assert settings.api.url == "https://callmyway.com/getCdrs.php"
    assert settings.api.page_size == 500
    assert settings.api.format == "csv"
    assert settings.sync.window == timedelta(minutes=30)
    assert settings.sync.passes == (timedelta(minutes=2), timedelta(hours=24))
    assert settings.sync.initial_lookback == timedelta(days=2)
    (account,) = settings.accounts
    assert (account.name, account.username, account.live) == ("main", "8569841", False)


def test_password_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords come from a named variable or a file (Docker secret), read when needed."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    env = write(
        tmp_path,
        f"""
[[accounts]]
name = "a"
username = "1000001"
password_env = "PW_A"
[[accounts]]
name = "b"
username = "1000002"
password_file = "{secret}"
""",
    )
    monkeypatch.setenv("PW_A", "01234567891")
    settings = load_settings(env)
    assert settings.account("a").password() == "01234567891"
    assert settings.account("b").password() == SECRET


def test_single_account_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CDR_ETL_USERNAME/PASSWORD/TIMEZONE define an account named `default` without a file."""
    monkeypatch.setenv("CDR_ETL_PASSWORD", SECRET)
    env = {
        "CDR_ETL_USERNAME": "0569841",
        "CDR_ETL_PASSWORD": SECRET,
        "CDR_ETL_TIMEZONE": "America/New_York",
    }
    (account,) = load_settings(env).accounts
    assert account.name == "default"
    assert account.username == "0569841"  # leading zero kept
    assert account.timezone == "America/New_York"
    assert account.password() == SECRET


def test_database_url_precedence() -> None:
    """CDR_ETL_DATABASE_URL beats DATABASE_URL; plain postgresql:// gets the psycopg driver."""
    settings = load_settings({"DATABASE_URL": "postgresql://u@h/a"})
    assert settings.database_url == "postgresql+psycopg://u@h/a"
    settings = load_settings(
        {"DATABASE_URL": "postgresql://u@h/a", "CDR_ETL_DATABASE_URL": "postgres://u@h/b"}
    )
    assert settings.database_url == "postgresql+psycopg://u@h/b"


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the password nor the database URL's password shows in repr or str."""
    monkeypatch.setenv("CDR_ETL_PASSWORD", SECRET)
    settings = load_settings(
        {
            "CDR_ETL_USERNAME": "8569841",
            "CDR_ETL_PASSWORD": SECRET,
            "CDR_ETL_DATABASE_URL": "postgresql://u:dbsecret77@h/db",
        }
    )
    text = repr(settings) + str(settings) + repr(settings.accounts[0])
    assert SECRET not in text
    assert "dbsecret77" not in text


@pytest.mark.parametrize(
    ("env", "toml", "message"),
    [
        ({"CDR_ETL_SYNC_WINDOW": "soon"}, "", r"^sync\.window: expected a duration"),
        ({"CDR_ETL_SYNC_INTERVAL": "0s"}, "", r"^sync\.interval: must be longer than 0s"),
        ({"CDR_ETL_SYNC_PASSES": ""}, "[sync]\npasses = []", r"^sync\.passes: needs at least"),
        ({}, '[sync]\npasses = ["1h", "1h"]', r"^sync\.passes: delays must be distinct"),
        ({"CDR_ETL_API_PAGE_SIZE": "0"}, "", r"^api\.page_size: "),
        ({"CDR_ETL_API_PAGE_SIZE": "many"}, "", r"^api\.page_size: "),
        ({"CDR_ETL_API_FORMAT": "xml"}, "", r"^api\.format: "),
        ({"CDR_ETL_API_URL": "ftp://x/getCdrs.php"}, "", r"^api\.url: expected an http"),
        ({"CDR_ETL_API_URL": "https://x/g.php?password=1"}, "", r"^api\.url: must not carry"),
        ({"CDR_ETL_LOG_LEVEL": "LOUD"}, "", r"^log_level: "),
        ({"CDR_ETL_LOG_FORMAT": "xml"}, "", r"^log_format: "),
        ({"CDR_ETL_DATABASE_URL": "mysql://x/y"}, "", r"^database_url: expected a PostgreSQL"),
        (
            {"CDR_ETL_USERNAME": "85x"},
            "",
            r"^CDR_ETL_USERNAME \(accounts\[0\]\.username\): expected the endpoint",
        ),
        (
            {"CDR_ETL_USERNAME": "8569841", "CDR_ETL_TIMEZONE": "Mars/Olympus"},
            "",
            r"^CDR_ETL_TIMEZONE \(accounts\[0\]\.timezone\): unknown IANA time zone 'Mars/Olympus'",
        ),
        ({"CDR_ETL_PASSWORD": "1"}, "", r"^CDR_ETL_USERNAME: not set, but CDR_ETL_PASSWORD is"),
        ({}, "[api]\nspeed = 3", r"^api\.speed: unknown setting"),
        ({}, "[sync\n", r"invalid TOML"),
        ({}, '[[accounts]]\nname = "a"\nusername = 8569841', r"must be a quoted string"),
        ({}, '[[accounts]]\nname = "a"', r"^accounts\[0\]\.username: is required"),
        (
            {},
            '[[accounts]]\nname = "a"\nusername = "1"\n[[accounts]]\nname = "a"\nusername = "2"',
            r"^accounts: .*account name 'a' is used twice",
        ),
        (
            {},
            '[[accounts]]\nname = "a"\nusername = "1"\npassword = "01234567891"',
            r"^accounts\.a\.password: passwords are never read from the TOML file",
        ),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(
    tmp_path: Path, env: dict[str, str], toml: str, message: str
) -> None:
    """Each invalid setting raises ConfigError: one line, naming the setting."""
    if toml:
        env = env | write(tmp_path, toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(env)
    assert "\n" not in str(info.value)
    assert "01234567891" not in str(info.value)


def test_missing_config_file_is_named() -> None:
    """CDR_ETL_CONFIG naming a missing file is a clear error."""
    with pytest.raises(
        ConfigError, match=r"^--config / CDR_ETL_CONFIG: file .*nope.toml does not exist"
    ):
        load_settings({"CDR_ETL_CONFIG": "/nope/nope.toml"})


def test_default_config_file_is_read_when_present(tmp_path: Path) -> None:
    """./cdr-etl.toml is read when CDR_ETL_CONFIG is not set."""
    (tmp_path / "cdr-etl.toml").write_text("[api]\npage_size = 250\n")
    assert load_settings({}).api.page_size == 250


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("env", r"^accounts\.a\.password_env: environment variable PW_MISSING is not set"),
        ("file", r"^accounts\.a\.password_file: cannot read .*missing"),
        ("empty", r"^accounts\.a\.password_file: .* is empty"),
        ("none", r"^accounts\.a: no password_env or password_file given"),
    ],
)
def test_missing_password_is_named(tmp_path: Path, setup: str, message: str) -> None:
    """An account whose password cannot be read names the account and the source."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    source = {
        "env": 'password_env = "PW_MISSING"',
        "file": f'password_file = "{tmp_path / "missing"}"',
        "empty": f'password_file = "{empty}"',
        "none": "",
    }[setup]
    env = write(tmp_path, f'[[accounts]]\nname = "a"\nusername = "1000001"\n{source}\n')
    with pytest.raises(ConfigError, match=message):
        load_settings(env).account("a").password()


def test_unknown_account_is_named() -> None:
    """Asking for an account that is not configured lists the known ones."""
    settings = load_settings({"CDR_ETL_USERNAME": "8569841"})
    with pytest.raises(ConfigError, match=r"unknown account 'x' \(known: default\)"):
        settings.account("x")
