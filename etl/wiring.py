"""Wiring: the one place that builds the real collaborators from settings (the API client,
each account's source) for the command line, the daemon, the demo and the tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from etl.api.client import CdrApiClient, Credentials, RetryPolicy
from etl.config import AccountConfig, ApiSettings
from etl.pipeline import Source

__all__ = ["api_client", "source", "sources"]


def api_client(
    api: ApiSettings,
    *,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], object] | None = None,
) -> CdrApiClient:
    """The API client `api` describes; `retry` and `sleep` override the policy's settings
    and the real sleep (the daemon's stoppable wait, a test's no-wait)."""
    extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return CdrApiClient(
        api.url,
        timeout=api.timeout.total_seconds(),
        fmt=api.format,
        retry=retry
        or RetryPolicy(max_attempts=api.max_attempts, max_total=api.max_retry_time.total_seconds()),
        allow_http=api.allow_http,
        recent_timeout=api.recent_timeout.total_seconds(),
        empty_body_is_no_rows=api.empty_body_is_no_data,
        **extra,
    )


def source(
    client: CdrApiClient, account: AccountConfig, account_id: int, password: str, page_size: int
) -> Source:
    """Where one account's CDRs come from."""
    return Source(
        client, Credentials(account.username, password), account_id, account.tz, page_size
    )


def sources(
    client: CdrApiClient,
    accounts: Iterable[AccountConfig],
    ids: Mapping[str, int],
    page_size: int,
) -> list[tuple[AccountConfig, Source]]:
    """Each account with its source; every password is read first, so a missing secret
    fails before any work."""
    chosen = list(accounts)
    passwords = {account.name: account.password() for account in chosen}
    return [
        (account, source(client, account, ids[account.name], passwords[account.name], page_size))
        for account in chosen
    ]
