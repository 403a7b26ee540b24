"""Deterministic generation of realistic CallMyWay CDRs (pure: no I/O, no clock).

Calls are generated per UTC hour bucket, from a `random.Random` seeded by
(seed, account, hour), so any hour of any account can be produced alone, lazily, in any
order, and always the same. A call belongs to the bucket of its first instant; every leg
of it starts and ends within `MAX_CALL_SPAN` seconds of that instant.

Instants are integer UTC epoch seconds; records carry them as naive local wall-clock
strings `YYYY-MM-DD HH:MM:SS` in the account's IANA zone (see `LocalClock`), so a DST zone
shows its repeated hour twice and its missing hour never.

What makes the data awkward on purpose (see callmyway/API.md):

- inbound calls: a trunk leg into the IVR (the account's main endpoint) with
  `ref_callid` = X (its own callid), plus one leg per agent rung with `original_callid` = X;
  at most one of them answered (`duration > 0`), the others NO_ANSWER / CANCELLED with no
  `connect_time`;
- outbound calls: one `outgoing` leg with a `route_name`; internal calls and feature codes
  (`*34`...) with `type` often null;
- callids are numbers (UTC hour x 10^7 + an account code x 10^5 + a sequence), unique per
  account; a leg's own `original_callid` is `""` or its callid;
- the call rate follows `calls_per_hour` shaped by local hour (busy mornings and
  afternoons, quiet nights) and weekday (quiet weekends), Poisson per hour;
- unset times spelled `""`, null or `0000-00-00 00:00:00`; a negative `ring_time` now and
  then; numbers and callids as ints in some records and strings in others; `route_name`
  absent from some records; extra fields (`codec`, `hangup_side`) in some.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .localtime import LocalClock
from .profile import Endpoint, build_profile

Record = dict[str, Any]
_T = TypeVar("_T")

MAX_CALL_SPAN = 3 * 3600
"""Every leg of a call starts and ends within this many seconds of the call's first instant."""

FIELDS = (
    "callid",
    "original_callid",
    "ref_callid",
    "type",
    "ani",
    "dnis",
    "ani_user",
    "dnis_user",
    "name_endpoint_ani",
    "name_endpoint_dnis",
    "detect_time",
    "connect_time",
    "disconnect_time",
    "duration",
    "ring_time",
    "end_reason",
    "route_name",
)
"""The fields public clients read, in the order the simulator emits them."""

_MAX_TALK = 7000
_FEATURE_CODES = ("*34", "*97", "*72", "*73", "*60")
_CODECS = ("PCMU", "PCMA", "G729", "opus")
_REJECTS = ("DECLINE", "SERVICE_UNAVAILABLE", "TEMPORARILY_UNAVAILABLE", "NOT_FOUND")
# relative call volume per local hour of day, normalised to a mean of 1 below
_DAY_SHAPE_RAW = (
    0.1, 0.08, 0.06, 0.06, 0.08, 0.15, 0.35, 0.7, 1.5, 1.9, 2.0, 1.8,
    1.3, 1.4, 1.8, 1.9, 1.7, 1.3, 0.8, 0.5, 0.35, 0.25, 0.18, 0.12,
)  # fmt: skip
_DAY_SHAPE = tuple(w * 24 / sum(_DAY_SHAPE_RAW) for w in _DAY_SHAPE_RAW)
_WEEKDAY_FACTOR = (1.24, 1.24, 1.24, 1.24, 1.24, 0.4, 0.4)  # Mon..Sun, mean 1


@dataclass(slots=True)
class Leg:
    """One call leg: its instants (UTC epoch seconds) and its final record."""

    callid: str
    start: int
    connect: int | None
    end: int
    record: Record

    @property
    def users(self) -> tuple[str, str]:
        """The originating and receiving endpoint ids, as strings."""
        return str(self.record["ani_user"]), str(self.record["dnis_user"])


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, count, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class CallGenerator:
    """Generates the legs of one account, one UTC hour bucket at a time."""

    def __init__(
        self,
        username: str,
        seed: int,
        timezone: str = "America/Costa_Rica",
        calls_per_hour: float = 60.0,
        agents: int = 6,
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        """`start`/`end` (UTC epoch seconds, end exclusive) bound the calls' first instants;
        a call outside them is still drawn (so the dice stay the same) but dropped."""
        self.username = username
        self.start, self.end = start, end
        self.seed = seed
        self.calls_per_hour = calls_per_hour
        self.clock = LocalClock(timezone)
        self.profile = build_profile(username, seed, agents)
        self._account_code = zlib.crc32(username.encode()) % 100

    def calls_in_hour(self, hour: int, rng: random.Random) -> int:
        """How many calls start in this UTC hour: the rate shaped by local hour and weekday."""
        local = self.clock.local_struct(hour * 3600 + 1800)
        shape = _DAY_SHAPE[local.tm_hour] * _WEEKDAY_FACTOR[local.tm_wday]
        return poisson(rng, self.calls_per_hour * shape)

    def hour(self, hour: int) -> list[Leg]:
        """Every leg of the calls starting in UTC hour `hour` (epoch seconds // 3600)."""
        rng = random.Random(f"calls:{self.seed}:{self.username}:{hour}")
        starts = sorted(
            hour * 3600 + rng.randrange(3600) for _ in range(self.calls_in_hour(hour, rng))
        )
        build = _LegBuilder(self, rng, hour * 10_000_000 + self._account_code * 100_000)
        for t0 in starts:
            first = len(build.legs)
            kind = rng.random()
            if kind < 0.55:
                build.inbound(t0)
            elif kind < 0.88:
                build.outbound(t0)
            elif kind < 0.96:
                build.internal(t0)
            else:
                build.feature_code(t0)
            if (self.start is not None and t0 < self.start) or (
                self.end is not None and t0 >= self.end
            ):
                del build.legs[first:]
        return build.legs


class _LegBuilder:
    """Accumulates the legs of one hour bucket; each method adds one call."""

    def __init__(self, gen: CallGenerator, rng: random.Random, callid_base: int) -> None:
        self.gen, self.rng, self.profile = gen, rng, gen.profile
        self.render: Callable[[int], str] = gen.clock.render
        self.next_callid = callid_base
        self.legs: list[Leg] = []
        self.random = rng.random

    def between(self, lo: int, hi: int) -> int:
        """A uniform integer in [lo, hi] (randint, without its cost)."""
        return lo + int(self.random() * (hi - lo + 1))

    def pick(self, items: Sequence[_T]) -> _T:
        """A uniform element (choice, without its cost)."""
        return items[int(self.random() * len(items))]

    def some(self, items: Sequence[_T], k: int) -> list[_T]:
        """Up to k distinct elements in random order (sample, without its cost)."""
        pool = list(items)
        for i in range(min(k, len(pool))):
            j = i + int(self.random() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def talk(self) -> int:
        return min(_MAX_TALK, int(self.rng.expovariate(1 / 170)) + 3)

    def inbound(self, t0: int) -> None:
        rng, p = self.rng, self.profile
        caller, did = self.pick(p.customers), self.pick(p.dids)
        trunk = self.add(t0, p.trunk, p.main, caller, did, "incoming")
        trunk.record["ref_callid"] = trunk.callid
        if rng.random() < 0.05:  # refused before the IVR answered
            self.finish(trunk, None, t0 + self.between(0, 3), self.pick(_REJECTS))
            return
        answer = t0 + self.between(0, 1)
        t = answer + self.between(4, 45)  # the caller walks through the IVR menu
        if rng.random() < 0.07:  # hung up in the IVR
            self.finish(trunk, answer, t, "OK")
            return
        agents = self.some(p.agents, self.between(1, 4))
        ring = self.ring_all if rng.random() < 0.4 else self.ring_in_turn
        ring_end, answered = ring(t, agents, caller, trunk.callid)
        end = answered.end if answered else ring_end + self.pick((0, 0, 20, 40))  # voicemail
        self.finish(trunk, answer, end + self.between(0, 1), "OK")

    def agent_leg(self, start: int, agent: Endpoint, caller: str, x: str) -> Leg:
        leg = self.add(start, self.profile.main, agent, caller, agent.extension, "incoming")
        leg.record["original_callid"] = x
        return leg

    def ring_in_turn(
        self, t: int, agents: list[Endpoint], caller: str, x: str
    ) -> tuple[int, Leg | None]:
        """Agents rung one after the other until one answers or the caller gives up."""
        rng = self.rng
        for agent in agents:
            leg = self.agent_leg(t, agent, caller, x)
            if rng.random() < 0.55:
                connect = t + self.between(2, 18)
                self.finish(leg, connect, connect + self.talk(), "OK")
                return connect, leg
            if rng.random() < 0.1:
                self.finish(leg, None, t + self.between(3, 15), "CANCELLED")
                return leg.end, None
            self.finish(leg, None, t + self.between(15, 20), "NO_ANSWER")
            t = leg.end + 1
        return t, None

    def ring_all(
        self, t: int, agents: list[Endpoint], caller: str, x: str
    ) -> tuple[int, Leg | None]:
        """Agents rung all at once: the first to answer cancels the others."""
        rng = self.rng
        legs = [self.agent_leg(t, agent, caller, x) for agent in agents]
        if rng.random() < 0.7:
            answered, connect = self.pick(legs), t + self.between(2, 18)
            self.finish(answered, connect, connect + self.talk(), "OK")
            for leg in legs:
                if leg is not answered:
                    self.finish(leg, None, connect, "CANCELLED")
            return connect, answered
        ring_end = t + self.between(5, 25)
        reason = "CANCELLED" if rng.random() < 0.5 else "NO_ANSWER"
        for leg in legs:
            self.finish(leg, None, ring_end, reason)
        return ring_end, None

    def outbound(self, t0: int) -> None:
        rng, p = self.rng, self.profile
        agent, number = self.pick(p.agents), self.pick(p.customers)
        ani = self.pick(p.dids) if rng.random() < 0.7 else agent.extension
        leg = self.add(t0, agent, p.trunk, ani, number, "outgoing", _route_for(number))
        outcome = rng.random()
        if outcome < 0.65:
            connect = t0 + self.between(3, 25)
            self.finish(leg, connect, connect + self.talk(), "OK")
        elif outcome < 0.8:
            self.finish(leg, None, t0 + self.between(30, 45), "NO_ANSWER")
        elif outcome < 0.86:
            self.finish(leg, None, t0 + self.between(2, 20), "CANCELLED")
        else:
            reason = self.pick((*_REJECTS, "BUSY", "BUSY", ""))
            self.finish(leg, None, t0 + self.between(0, 4), reason)

    def internal(self, t0: int) -> None:
        rng = self.rng
        a, b = self.some(self.profile.agents, 2)
        kind = None if rng.random() < 0.6 else "outgoing"
        leg = self.add(t0, a, b, a.extension, b.extension, kind)
        if rng.random() < 0.75:
            connect = t0 + self.between(1, 12)
            self.finish(leg, connect, connect + self.talk() // 3 + 1, "OK")
        else:
            self.finish(leg, None, t0 + self.between(5, 20), self.pick(("NO_ANSWER", "CANCELLED")))

    def feature_code(self, t0: int) -> None:
        rng, p = self.rng, self.profile
        agent = self.pick(p.agents)
        kind = None if rng.random() < 0.5 else "outgoing"
        code = self.pick(_FEATURE_CODES)
        leg = self.add(t0, agent, p.main, agent.extension, code, kind)
        self.finish(leg, t0, t0 + self.between(2, 40), "OK")

    def add(
        self,
        start: int,
        src: Endpoint,
        dst: Endpoint,
        ani: str,
        dnis: str,
        kind: str | None,
        route: str | None = None,
    ) -> Leg:
        """A new leg with its identity filled in; `finish` sets its outcome."""
        rng = self.rng
        callid = self.next_callid
        self.next_callid += 1
        as_text = rng.random() < 0.5
        record: Record = {
            "callid": str(callid) if as_text else callid,
            "original_callid": "" if rng.random() < 0.5 else str(callid),
            "ref_callid": "0" if as_text else 0,
            "type": None if rng.random() < 0.04 else kind,
            "ani": int(ani) if rng.random() < 0.1 and ani.isdigit() and ani[0] != "0" else ani,
            "dnis": dnis,
            "ani_user": src.id if as_text else src.number,
            "dnis_user": dst.id if as_text else dst.number,
            "name_endpoint_ani": src.name,
            "name_endpoint_dnis": dst.name,
            "detect_time": self.render(start),
            "connect_time": "",
            "disconnect_time": "",
            "duration": 0,
            "ring_time": 0,
            "end_reason": "",
        }
        if route is not None:
            record["route_name"] = route
        else:  # absent from some records, null in others
            draw = rng.random()
            if draw < 0.8:
                record["route_name"] = "" if draw < 0.7 else None
        if rng.random() < 0.25:
            record["codec"] = self.pick(_CODECS)
        if rng.random() < 0.1:
            record["hangup_side"] = self.pick(("caller", "callee"))
        leg = Leg(str(callid), start, None, start, record)
        self.legs.append(leg)
        return leg

    def finish(self, leg: Leg, connect: int | None, end: int, reason: str) -> None:
        """Set the leg's outcome: times, duration, ring time, end reason."""
        rng, record = self.rng, leg.record
        leg.connect, leg.end = connect, end
        draw = rng.random()
        unset = "" if draw < 0.8 else None if draw < 0.92 else "0000-00-00 00:00:00"
        duration = end - connect if connect is not None else 0
        ring = (connect if connect is not None else end) - leg.start
        if connect is not None and rng.random() < 0.04:
            ring = -self.between(1, 3)  # the provider's clocks disagree now and then
        as_text = isinstance(record["callid"], str)
        record["connect_time"] = self.render(connect) if connect is not None else unset
        record["disconnect_time"] = self.render(end)
        record["duration"] = str(duration) if as_text else duration
        record["ring_time"] = str(ring) if as_text else ring
        record["end_reason"] = reason


def _route_for(number: str) -> str:
    local = number[3:] if number.startswith("506") else number
    if len(local) > 8:
        return "Internacional USA"
    return "Local Fijo" if local.startswith("2") else "Local Celular"


def same_type(old: Any, value: int) -> Any:
    """`value` spelled like `old` (int or numeric string)."""
    return str(value) if isinstance(old, str) else value


def earlier_version(leg: Leg, rng: random.Random, clock: LocalClock) -> Record:
    """The record as first written, before the provider corrected it: no end reason yet
    (or a wrong one), and when possible a few seconds shorter."""
    record = dict(leg.record)
    record["end_reason"] = "" if record["end_reason"] else "UNKNOWN"
    duration = int(record["duration"])
    room = duration - 1 if duration > 0 else leg.end - leg.start
    shift = min(rng.randint(1, 5), room)
    if shift > 0:
        if duration > 0:
            record["duration"] = same_type(record["duration"], duration - shift)
        record["disconnect_time"] = clock.render(leg.end - shift)
    return record


def live_version(leg: Leg, now: int, clock: LocalClock) -> Record:
    """The leg as a live answer shows it at `now`: ringing (no connect time) or talking
    (connect time set), never a disconnect time; a leg that has ended shows its final record."""
    if now >= leg.end:
        return leg.record
    record = dict(leg.record)
    connect = leg.connect if leg.connect is not None and leg.connect <= now else None
    record["connect_time"] = clock.render(connect) if connect is not None else ""
    record["disconnect_time"] = ""
    record["duration"] = same_type(record["duration"], now - connect if connect else 0)
    record["ring_time"] = same_type(record["ring_time"], (connect or now) - leg.start)
    record["end_reason"] = ""
    return record
