"""The benchmark's simulator, in its own process (so its CPU is not counted as ours).

    python bench/simserver.py --cdrs 100000 [--legs-per-hour 5000] [--seed 1]

Builds a `Simulator` over a fixed range of whole hours holding about N CDR legs, warms
the whole range (generation is slower than serving), then serves it on a free loopback
port and prints one JSON line (url, account, range on the provider's clock, legs) when
ready. Serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from etl.simulator import SimAccount, Simulator, SimulatorServer

START = datetime(2024, 1, 1, 6, 0, tzinfo=UTC)  # midnight on the demo account's clock
LEGS_PER_CALL = 2.19  # measured mean over the simulator's day shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, required=True, help="about this many legs")
    parser.add_argument("--legs-per-hour", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--order", choices=["sorted", "shuffled_ties", "unordered"], default="sorted",
        help="order of by-date rows (the simulator's order quirk)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    estimate = max(1, math.ceil(args.cdrs / args.legs_per_hour))
    account = SimAccount(
        seed=args.seed, calls_per_hour=args.legs_per_hour / LEGS_PER_CALL, order=args.order
    )
    sim = Simulator(
        [account],
        start=START,
        end=START + timedelta(hours=2 * estimate + 24),
        seed=args.seed,
        max_cached_legs=4 * args.cdrs + 100_000,
    )
    store = sim._store(account.username)  # generate (warm) hour by hour, counting legs
    first_hour = int(START.timestamp()) // 3600
    hours = legs = 0
    while legs < args.cdrs:  # whole hours, until they hold about N legs
        legs += len(store.bucket(first_hour + hours))
        hours += 1
    end = START + timedelta(hours=hours)
    sim.warm(account.username, START, end)  # and whatever the queries of the range touch
    tz = ZoneInfo(account.timezone)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    with SimulatorServer(sim) as server:
        ready: dict[str, Any] = {
            "url": server.url,
            "username": account.username,
            "password": account.password,
            "timezone": account.timezone,
            "start": f"{START.astimezone(tz):%Y-%m-%d %H:%M:%S}",
            "end": f"{end.astimezone(tz) - timedelta(seconds=1):%Y-%m-%d %H:%M:%S}",
            "hours": hours,
            "legs": legs,
        }
        # what a whole read of the range holds (distinct callids), and with the second next
        # to each end (every request asks for it too): "exact" means a count between the two
        ready["served"] = len(sim.truth_between(account.username, ready["start"], ready["end"]))
        second = timedelta(seconds=1)
        ready["around"] = len(
            sim.truth_between(
                account.username,
                f"{START.astimezone(tz) - second:%Y-%m-%d %H:%M:%S}",
                f"{end.astimezone(tz):%Y-%m-%d %H:%M:%S}",
            )
        )
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
