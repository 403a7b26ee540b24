"""Benchmark: backfill N simulated CDRs into a fresh database, against the bare COPY ceiling.

    .venv/bin/python bench/backfill.py --cdrs 100000 [--page-size 1000] [--concurrency K]
    .venv/bin/python bench/backfill.py --cdrs 100000 --no-kept-data   # the kept data's cost

1. starts the simulator in its own process (bench/simserver.py), warmed over a fixed range
   holding about N legs, so its generation is not measured and its serving is not ours;
2. creates a fresh database on TEST_DATABASE_URL's server (else the local one at
   postgresql+psycopg://postgres@127.0.0.1:5432) and migrates it;
3. runs the real `python -m etl backfill ... --no-progress` as a child and measures its
   wall time and peak RSS (`os.wait4` rusage of that child);
4. measures the ceiling in the same run: the stored rows, already typed, copied out
   (binary COPY into a temp file), then a bare binary `COPY ... FROM STDIN` of them into
   `cdrs_ceiling (LIKE cdrs INCLUDING ALL)`; only the COPY in is timed;
5. runs `python -m etl sync` twice and reports the second (nothing new) run's own
   seconds and requests, from its summary line;
6. drops the database and stops the simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SUMMARY = re.compile(
    r"(?P<kind>sync|backfill) (?P<account>\S+): (?P<status>\w+) in (?P<seconds>[0-9.]+)s, "
    r"(?P<windows>\d+) windows, (?P<pages>\d+) pages, (?P<requests>\d+) requests"
)
NO_KEPT_DATA = (
    "CREATE OR REPLACE FUNCTION cdr_rollup_refresh(p_account integer, p_callids text[], "
    "p_recompute boolean DEFAULT false) RETURNS void LANGUAGE sql AS 'SELECT'"
)
PYCACHE = os.path.join(tempfile.gettempdir(), "cdr-etl-bench-pycache")
COLUMNS = (
    "account_id, callid, original_callid, ref_callid, type, ani, dnis, ani_user, dnis_user, "
    "name_endpoint_ani, name_endpoint_dnis, route_name, end_reason, duration, ring_time, "
    "detect_time, connect_time, disconnect_time, raw, content_hash, first_seen_at, updated_at"
)


@dataclass
class Child:
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    output: str
    returncode: int


def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_SERVER
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def database_url(name: str) -> str:
    return make_url(server_url()).set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def admin(sql: str) -> None:
    engine = create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


REREAD = re.compile(r"; (?P<disturbed>\d+) windows re-read .*?\((?P<extra>\d+) extra requests")


def start_simulator(
    cdrs: int, legs_per_hour: int, order: str = "sorted"
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "simserver.py"),
            *("--cdrs", str(cdrs), "--legs-per-hour", str(legs_per_hour), "--order", order),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise SystemExit(f"the simulator did not start (exit {process.returncode})")
    return process, json.loads(line)


def run_child(args: list[str], env: dict[str, str]) -> Child:
    """Run `python -m etl ARGS`; its wall time and peak RSS from the kernel's rusage."""
    with tempfile.TemporaryFile("w+") as out:
        began = time.perf_counter()
        env = {**env, "PYTHONPYCACHEPREFIX": PYCACHE}  # start-up as with an installed .pyc
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        wrap = os.environ.get("BENCH_WRAP", "").split()  # e.g. "py-spy record -o x --"
        process = subprocess.Popen(
            [*wrap, sys.executable, "-m", "etl", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    cpu = usage.ru_utime + usage.ru_stime
    return Child(seconds, usage.ru_maxrss / 1024, cpu, output, process.returncode)


def etl_env(sim: dict[str, Any], url: str, page_size: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
    env.pop("DATABASE_URL", None)
    env.update(
        CDR_ETL_DATABASE_URL=url,
        CDR_ETL_API_URL=sim["url"],
        CDR_ETL_USERNAME=sim["username"],
        CDR_ETL_PASSWORD=sim["password"],
        CDR_ETL_TIMEZONE=sim["timezone"],
        CDR_ETL_API_PAGE_SIZE=str(page_size),
        CDR_ETL_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    return env


def summary_of(child: Child, kind: str) -> dict[str, str]:
    for match in SUMMARY.finditer(child.output):
        if match["kind"] == kind:
            line = child.output[match.start() :].splitlines()[0]
            reread = REREAD.search(line)
            extra = reread.groupdict() if reread else {"disturbed": "0", "extra": "0"}
            return {**match.groupdict(), **extra}
    raise SystemExit(f"no {kind} summary line in:\n{child.output[-3000:]}")


def ceiling(url: str) -> tuple[int, float, float]:
    """A bare binary COPY of the stored rows into an identical table: (rows, seconds,
    the server backend's CPU seconds)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn, tempfile.TemporaryFile() as f:
        conn.execute("DROP TABLE IF EXISTS cdrs_ceiling")
        # An identical copy: LIKE ... INCLUDING ALL brings the columns, defaults, keys and
        # indexes, not the foreign key to accounts, which cdrs has (it costs a lookup a row).
        conn.execute("CREATE TABLE cdrs_ceiling (LIKE cdrs INCLUDING ALL)")
        conn.execute(
            "ALTER TABLE cdrs_ceiling ADD FOREIGN KEY (account_id) REFERENCES accounts (id)"
        )
        with conn.cursor().copy(
            f"COPY (SELECT {COLUMNS} FROM cdrs) TO STDOUT (FORMAT BINARY)"
        ) as copy:
            for block in copy:
                f.write(block)
        conn.execute("CHECKPOINT")
        f.seek(0)
        rows = conn.execute("SELECT count(*) FROM cdrs").fetchone()
        assert rows is not None
        backend = conn.info.backend_pid
        began, cpu = time.perf_counter(), on_cpu(backend)
        copy_in = f"COPY cdrs_ceiling ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
        with conn.transaction(), conn.cursor().copy(copy_in) as copy:
            while block := f.read(1 << 20):
                copy.write(block)
        seconds, cpu = time.perf_counter() - began, on_cpu(backend) - cpu
        conn.execute("DROP TABLE cdrs_ceiling")
    return int(rows[0]), seconds, cpu


def on_cpu(pid: int) -> float:
    """Seconds a process (a local server backend) has run on a CPU, from /proc; 0 if gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class BackendWatch:
    """Samples the CPU time of the server backends serving one database (a local server),
    every `interval` seconds, in a thread: their total, short of the last interval."""

    def __init__(self, url: str, database: str, interval: float = 0.25) -> None:
        import threading

        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._url, self._database, self._interval = url, database, interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _run(self) -> None:
        with psycopg.connect(libpq_url(self._url), autocommit=True) as conn:
            while not self._stop.wait(self._interval):
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (self._database,),
                ).fetchall()
                for (pid,) in rows:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), on_cpu(pid))


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_cdrs(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT count(*) FROM cdrs").fetchone()
    assert row is not None
    return int(row[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Backfill N simulated CDRs; compare to COPY.")
    parser.add_argument("--cdrs", type=int, required=True, help="about this many CDR legs")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=None, help="windows in flight")
    parser.add_argument("--window", default=None, help="backfill window (default: 1h)")
    parser.add_argument("--legs-per-hour", type=int, default=5000, help="simulated call rate")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    parser.add_argument("--no-sync", action="store_true", help="skip the incremental runs")
    parser.add_argument(
        "--no-kept-data", action="store_true",
        help="make cdr_rollup_refresh a no-op: what the load costs without the kept BI data",
    )  # fmt: skip
    parser.add_argument(
        "--order", choices=["sorted", "shuffled_ties", "unordered"], default="sorted",
        help="the simulator's order of by-date rows (its order quirk)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    log: IO[str] = sys.stderr
    began = time.perf_counter()
    sim_process, sim = start_simulator(args.cdrs, args.legs_per_hour, args.order)
    print(
        f"simulator ready in {time.perf_counter() - began:.1f}s: {sim['legs']} legs over "
        f"{sim['hours']} h ({sim['start']} .. {sim['end']})",
        file=log,
    )
    name = f"cdr_bench_{uuid.uuid4().hex[:10]}"
    url = database_url(name)
    admin(f'CREATE DATABASE "{name}"')
    try:
        from etl.db.engine import make_engine
        from etl.db.migrate import upgrade

        engine = make_engine(url, pool_size=1)
        upgrade(engine)
        if args.no_kept_data:
            with engine.begin() as conn:
                conn.execute(text(NO_KEPT_DATA))
        engine.dispose()
        env = etl_env(sim, url, args.page_size)
        backfill_args = ["backfill", "--account", "default", "--start", sim["start"]]
        backfill_args += ["--end", sim["end"], "--no-progress"]
        if args.concurrency:
            backfill_args += ["--concurrency", str(args.concurrency)]
        if args.window:
            backfill_args += ["--window", args.window]
        run_child(["--help"], env)  # fills the bytecode cache: start-up as when installed
        sim_cpu = cpu_of(sim_process.pid)
        with BackendWatch(database_url("postgres"), name) as server:
            ours = run_child(backfill_args, env)
        sim_cpu = cpu_of(sim_process.pid) - sim_cpu
        os.environ.pop("BENCH_WRAP", None)  # profile the backfill only
        if ours.returncode != 0:
            raise SystemExit(f"backfill failed ({ours.returncode}):\n{ours.output[-3000:]}")
        figures = summary_of(ours, "backfill")
        stored = count_cdrs(url)
        rows, copy_seconds, copy_cpu = ceiling(url)
        sync_line = ""
        if not args.no_sync:
            run_child(["sync"], env)
            second = run_child(["sync"], env)
            s = summary_of(second, "sync")
            sync_line = (
                f"  incremental sync (nothing new): {s['seconds']} s in process "
                f"({second.seconds:.2f} s wall with start-up), {s['windows']} windows, "
                f"{s['requests']} requests, peak RSS {second.peak_rss_mib:.0f} MiB\n"
            )
    finally:
        if sim_process.stdin is not None:
            sim_process.stdin.close()
        sim_process.terminate()
        sim_process.wait(timeout=30)
        if args.keep:
            print(f"kept database: {url}", file=log)
            if args.no_kept_data:
                print("  (its cdr_rollup_refresh does nothing: not for dashboards)", file=log)
        else:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ours_rate = stored / ours.seconds
    ceiling_rate = rows / copy_seconds
    concurrency = args.concurrency or "default"
    sys.stdout.write(
        f"cdr-etl backfill benchmark: {args.cdrs} CDRs asked, page size {args.page_size}, "
        f"concurrency {concurrency}, server order {args.order}"
        f"{', kept BI data OFF' if args.no_kept_data else ''}\n"
        f"  CDRs stored:        {stored} (served in the range {sim['served']}, "
        f"{sim['around']} with the second beside each end, asked too: "
        f"{'exact' if sim['served'] <= stored <= sim['around'] else 'DIFFERENT'}; fetched "
        f"{figures['pages']} pages in {figures['windows']} windows)\n"
        f"  seconds:            {ours.seconds:.2f} (wall, process start to exit)\n"
        f"  CDRs/s:             {ours_rate:,.0f}\n"
        f"  requests:           {figures['requests']} ({figures['disturbed']} windows "
        f"disturbed by the order, {figures['extra']} requests re-reading them)\n"
        f"  peak RSS:           {ours.peak_rss_mib:.1f} MiB\n"
        f"  CPU:                ours {ours.cpu_seconds:.1f} s, server {server.seconds:.1f} s, "
        f"simulator {sim_cpu:.1f} s (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)\n"
        f"  CPU per CDR:        ours {ours.cpu_seconds / stored * 1e6:.1f} us, server "
        f"{server.seconds / stored * 1e6:.1f} us; ceiling server {copy_cpu / rows * 1e6:.1f} us\n"
        f"  ceiling (bare COPY):{rows / copy_seconds:>10,.0f} rows/s ({rows} rows in "
        f"{copy_seconds:.2f} s)\n"
        f"  ratio ours/ceiling: {ours_rate / ceiling_rate:.1%}\n" + sync_line
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
