"""A bundled, deterministic, misbehaving stand-in for CallMyWay's `getCdrs.php`.

    sim = Simulator([SimAccount()], faults=Faults.parse("error_5xx=0.1,page_cap=300"))
    with SimulatorServer(sim) as server:
        ...  # GET server.url?username=8569841&password=01234567891&dateStart=...

- `data`: realistic CDRs generated lazily per (seed, account, UTC hour), rendered on the
  account's local wall clock (`localtime`), for the account's endpoints (`profile`);
- `faults`: what can go wrong, by rate, reproducibly from a seed;
- `store`: caches, and what is served at a sim-clock instant (completed, late, changed);
- `render`: the json, csv and html answers;
- `app`: the request handler (`Simulator.handle`) and the ground truth for tests;
- `server`: the HTTP edge; `serve()` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType

from .app import SimAccount, SimResponse, SimStats, Simulator
from .faults import Faults
from .render import Envelope
from .server import SimulatorServer
from .store import Order

__all__ = [
    "Faults",
    "SimAccount",
    "SimResponse",
    "SimStats",
    "Simulator",
    "SimulatorServer",
    "serve",
]

logger = logging.getLogger(__name__)


def serve(
    port: int = 8080,
    seed: int = 1,
    host: str = "127.0.0.1",
    faults: Faults | str | None = None,
    accounts: Sequence[SimAccount] | None = None,
    *,
    days: float = 30.0,
    calls_per_hour: float = 60.0,
    envelope: Envelope = "bare",
    order: Order = "sorted",
    on_ready: Callable[[SimulatorServer], None] | None = None,
) -> None:
    """Serve the simulator until SIGINT or SIGTERM (blocks).

    Default: the demo account of the manual (username 8569841, password 01234567891,
    America/Costa_Rica) with `calls_per_hour` calls, seeded by `seed`; calls from `days`
    before now, and new calls keep happening as real time passes. `faults` is a `Faults`
    or its `parse` syntax; `envelope` wraps json answers (see `Simulator`); `order` orders
    by-date answers (see `SimAccount.order`). `on_ready` is called with the running
    server (its `.url`); without it, the URL is logged. Call it from the main thread:
    signal handlers can only be installed there."""
    if isinstance(faults, str):
        faults = Faults.parse(faults)
    if accounts is None:
        accounts = [SimAccount(seed=seed, calls_per_hour=calls_per_hour, order=order)]
    start = datetime.now(UTC) - timedelta(days=days)
    sim = Simulator(accounts, faults=faults, seed=seed, start=start, envelope=envelope)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if in_main
        else {}
    )
    try:
        with SimulatorServer(sim, host=host, port=port) as server:
            if on_ready is not None:
                on_ready(server)
            else:
                logger.info("CDR simulator serving on %s", server.url)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
