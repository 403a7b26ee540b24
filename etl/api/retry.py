"""Pure retry strategies for the API client: how long to wait, when to stop.

Only `TransientSourceError` is retried. The wait before retry n (n = 1, 2, ...) is

    step = min(cap, base * 2 ** (n - 1))
    wait = uniform(0, step)            full jitter (or `step` with jitter off)
    wait = max(retry_after, step)      when the server sent Retry-After: never less than it
                                       asked, and never less than the un-jittered step, so
                                       `Retry-After: 0` still backs off

Retrying stops after `max_attempts` attempts, or before a wait that would end later than
`max_total` seconds after the first attempt began (a Retry-After beyond the budget ends
the retries at once). The caller then raises the last TransientSourceError.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from etl.errors import ConfigError

__all__ = ["RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request is retried (see the module doc)."""

    max_attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_total: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("api.max_attempts must be at least 1")
        if self.base < 0 or self.cap < 0 or self.max_total < 0:
            raise ConfigError("retry base, cap and max_total must not be negative")

    def step(self, retry_number: int) -> float:
        """The un-jittered backoff before retry `retry_number` (1 = the first retry)."""
        exponent = min(max(retry_number - 1, 0), 62)
        return float(min(self.cap, self.base * 2.0**exponent))

    def wait(
        self,
        retry_number: int,
        retry_after: float | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait before retry `retry_number`, honouring a Retry-After."""
        step = self.step(retry_number)
        if retry_after is not None:
            return max(retry_after, step)
        return uniform(0.0, step) if self.jitter else step

    def should_stop(self, attempts: int, elapsed: float, upcoming_wait: float) -> bool:
        """True when no further attempt may be made."""
        return attempts >= self.max_attempts or elapsed + upcoming_wait > self.max_total


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad.

    A date in the past gives 0. `now` must be aware.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
