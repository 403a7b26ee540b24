"""`python -m etl.simulator [--port N] [--seed S] [--faults SPEC]`: serve the simulator."""

from __future__ import annotations

import argparse
import sys

from . import SimAccount, SimulatorServer, serve
from .faults import Faults
from .render import ENVELOPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etl.simulator",
        description="Serve a simulated CallMyWay getCdrs.php until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and the faults")
    parser.add_argument(
        "--faults",
        default="",
        help='fault rates, e.g. "error_5xx=0.1,page_cap=300" (default: none)',
    )
    parser.add_argument("--days", type=float, default=30.0, help="days of history before now")
    parser.add_argument("--calls-per-hour", type=float, default=60.0, help="mean call rate")
    parser.add_argument("--timezone", default="America/Costa_Rica", help="the account's zone")
    parser.add_argument(
        "--envelope",
        choices=ENVELOPES,
        default="bare",
        help='json answers: a bare array (default), or under a "cdrs" or "data" key',
    )
    args = parser.parse_args(argv)
    try:
        faults = Faults.parse(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    account = SimAccount(seed=args.seed, calls_per_hour=args.calls_per_hour, timezone=args.timezone)

    def ready(server: SimulatorServer) -> None:
        sys.stdout.write(
            f"CDR simulator on {server.url}\n"
            f"  account: username={account.username} password={account.password} "
            f"timezone={account.timezone}\n"
            f"  faults: {faults.describe()}\n  Ctrl-C to stop\n"
        )
        sys.stdout.flush()

    serve(
        args.port,
        args.seed,
        args.host,
        faults,
        [account],
        days=args.days,
        envelope=args.envelope,
        on_ready=ready,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
