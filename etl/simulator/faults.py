"""How the simulator misbehaves: fault rates, and the deterministic dice that apply them.

Two families:

- request faults (`error_5xx`, `rate_429`, `slow`, `drop`, `truncate`, `error_200_text`,
  `error_200_html`, `empty_200`): drawn per request from one `random.Random` seeded once
  and guarded by a lock, so the n-th request of a run always meets the same fate. At most
  one of the answer-replacing kinds hits a request (their rates are stacked in that
  order); `slow` is drawn on its own and delays whatever answer the request gets.
- record faults (`late_rate`, `change_rate`, `duplicate_rate`): properties of a CDR, drawn
  from the account's seed and the CDR's hour, so a CDR is late (or changes, or is
  duplicated) in every answer that holds it, whatever the order of requests.
  A duplicated CDR appears twice in a row in the ordered result of a by-date query, so
  `ini`/`cant` paging stays consistent (it is in one page, or straddles two).

`page_cap` is not random: every by-date page holds at most that many rows.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields
from typing import Any, Literal

RequestFaultKind = Literal[
    "error_5xx", "rate_429", "drop", "truncate", "error_200_text", "error_200_html", "empty_200"
]
REQUEST_FAULTS: tuple[RequestFaultKind, ...] = (
    "error_5xx",
    "rate_429",
    "drop",
    "truncate",
    "error_200_text",
    "error_200_html",
    "empty_200",
)
_RATES = (*REQUEST_FAULTS, "slow", "late_rate", "change_rate", "duplicate_rate")


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault rates (0..1, per request or per CDR) and their parameters."""

    error_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0
    """Seconds in the `Retry-After` header of a 429 (0 allowed)."""
    slow: float = 0.0
    slow_seconds: float = 2.0
    drop: float = 0.0
    """Close the connection without an answer."""
    truncate: float = 0.0
    """Promise a Content-Length, send half the body, close."""
    error_200_text: float = 0.0
    error_200_html: float = 0.0
    empty_200: float = 0.0
    """HTTP 200 with an empty body (API.md: seen in the wild; it is not "no data")."""
    page_cap: int | None = None
    """Silently return at most this many rows per by-date page, whatever `cant` is."""
    late_rate: float = 0.0
    late_seconds: float = 300.0
    """A late CDR is visible to by-date and recent answers this long after its call ended."""
    change_rate: float = 0.0
    change_after_seconds: float = 600.0
    """A changing CDR is served in an earlier version until this long after its call ended."""
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {name} must be a rate between 0 and 1, not {value}")
        for name in ("retry_after", "slow_seconds", "late_seconds", "change_after_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name} must not be negative")
        if self.page_cap is not None and self.page_cap < 1:
            raise ValueError("fault page_cap must be at least 1 (or none)")

    @classmethod
    def none(cls) -> Faults:
        """A well-behaved server."""
        return cls()

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Faults from `"error_5xx=0.1,page_cap=300,retry_after=0"` (empty: none).

        Raises ValueError naming the bad item."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, text = (part.strip() for part in item.partition("="))
            if not sep or name not in known:
                raise ValueError(
                    f"unknown fault setting {item!r}; known: {', '.join(sorted(known))}"
                )
            try:
                if name == "page_cap":
                    values[name] = None if text.lower() in ("", "none") else int(text)
                else:
                    values[name] = float(text)
            except ValueError:
                raise ValueError(f"fault setting {name} has a bad value {text!r}") from None
        return cls(**values)

    def describe(self) -> str:
        """The settings that differ from a well-behaved server, in `parse` syntax."""
        default = Faults()
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ",".join(changed) or "none"


@dataclass(frozen=True, slots=True)
class RequestFate:
    """What happens to one request: at most one answer-replacing fault, maybe slowness, and a
    number in [0, 1) to pick a variant (which 5xx status, which error text)."""

    kind: RequestFaultKind | None
    slow: bool
    pick: float


class FaultDice:
    """Draws request fates from one seeded generator, in request order, thread-safely."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()
        self.requests = 0

    def next(self) -> RequestFate:
        """The fate of the next request (always three draws, so rates never shift the dice)."""
        with self._lock:
            self.requests += 1
            draw, slow, pick = self._rng.random(), self._rng.random(), self._rng.random()
        kind: RequestFaultKind | None = None
        threshold = 0.0
        for name in REQUEST_FAULTS:
            threshold += getattr(self.faults, name)
            if draw < threshold:
                kind = name
                break
        return RequestFate(kind, slow < self.faults.slow, pick)
