"""Benchmark: how fast the command line answers, whole processes, and many accounts.

    .venv/bin/python bench/cli.py [--runs 7] [--accounts 500]

Times whole `python -m etl ...` processes (start-up, imports, work, exit), median of
`--runs`, next to a bare `python -c pass`:

- `--help`;
- `status` of one account on a migrated database;
- `sync` of one account with nothing new (after a first sync against the simulator);
- many accounts: `--accounts` simulated accounts in one TOML file, a first `sync` of all
  of them, then a `sync` with nothing new: wall time and peak RSS (the kernel's rusage);
- the daemon with the same accounts: time until every account has synced once, and its
  RSS then.

The simulator runs in this process (a thread), on loopback; the database is a fresh one
on TEST_DATABASE_URL's server (else the local one), dropped at the end. Bytecode: like an
installed package, the children read compiled bytecode (`make install` compiles it); the
script warms a private cache (PYTHONPYCACHEPREFIX) when none is there.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backfill import PYCACHE, Child, database_url
from etl.simulator import SimAccount, Simulator, SimulatorServer

ROOT = Path(__file__).resolve().parents[1]
TZ = "America/Costa_Rica"
# A small launcher times the command and samples its memory high-water mark (VmHWM) until
# it exits: the kernel's rusage of a child spawned from a large process counts that
# process's memory too.
LAUNCH = """
import os, sys, time
began = time.perf_counter()
pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "etl", *sys.argv[1:]], os.environ)
peak = 0
while True:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    peak = max(peak, int(line.split()[1]))
    except OSError:
        pass
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.003)
seconds = time.perf_counter() - began
with open(os.environ["BENCH_FIGURES"], "w") as f:
    f.write(f"{seconds} {peak / 1024} 0")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(args: list[str], env: dict[str, str]) -> Child:
    """Run `python -m etl ARGS`: its wall time, peak RSS and output."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures"
        env = {**env, "BENCH_FIGURES": str(figures)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH, *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seconds, rss, cpu = (float(x) for x in figures.read_text().split())
    return Child(seconds, rss, cpu, done.stdout, done.returncode)


def timed(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float, list[str]]:
    """Median wall seconds and the largest peak RSS (MiB) of `python -m etl ARGS`."""
    seconds, rss, outputs = [], [], []
    for _ in range(runs):
        child = run_child(args, env)
        if child.returncode != 0:
            raise SystemExit(f"`cdr-etl {' '.join(args)}` failed:\n{child.output[-2000:]}")
        seconds.append(child.seconds)
        rss.append(child.peak_rss_mib)
        outputs.append(child.output)
    return statistics.median(seconds), max(rss), outputs


def bare_python(runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def accounts_toml(path: Path, url: str, accounts: list[SimAccount], concurrency: int) -> None:
    lines = [
        "[api]",
        f'url = "{url}"',
        "page_size = 1000",
        "[sync]",
        'initial_lookback = "3h"',
        f"concurrency = {concurrency}",
        'interval = "1h"',
        "[daemon]",
        "port = 0",
    ]
    for account in accounts:
        lines += [
            "[[accounts]]",
            f'name = "a{account.username}"',
            f'username = "{account.username}"',
            f'password_env = "PW_{account.username}"',
            f'timezone = "{account.timezone}"',
            "live = false",
        ]
    path.write_text("\n".join(lines) + "\n")


def daemon_until_synced(env: dict[str, str], url: str, accounts: int) -> tuple[float, float]:
    """Start the daemon; seconds until every account has an ok sync run, and its RSS then."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE runs"))
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "etl", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        while True:
            with engine.connect() as conn:
                done = conn.scalar(
                    text("SELECT count(DISTINCT account_id) FROM runs WHERE kind = 'sync'")
                )
            if (done or 0) >= accounts or process.poll() is not None:
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - began
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        engine.dispose()
    return seconds, rss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4, help="sync.concurrency")
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    one = SimAccount(username="8569841", password="01234567891", timezone=TZ, seed=1)
    many = [
        SimAccount(
            username=f"{7000000 + i}",
            password=f"{10000000000 + i}",
            timezone=TZ,
            seed=i,
            calls_per_hour=2,
            agents=2,
        )  # fmt: skip
        for i in range(args.accounts)
    ]
    sim = Simulator([one, *many], start=now - timedelta(days=1), seed=1)
    name = f"cdr_bench_cli_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = database_url(name)
    out = sys.stdout
    try:
        with SimulatorServer(sim) as server, tempfile.TemporaryDirectory() as tmp:
            base = {k: v for k, v in os.environ.items() if not k.startswith("CDR_ETL_")}
            base.update(
                CDR_ETL_DATABASE_URL=url,
                CDR_ETL_HOME=tmp,
                PYTHONPATH=str(ROOT),
                PYTHONPYCACHEPREFIX=PYCACHE,
            )
            single = {
                **base,
                "CDR_ETL_API_URL": server.url,
                "CDR_ETL_USERNAME": one.username,
                "CDR_ETL_PASSWORD": one.password,
                "CDR_ETL_TIMEZONE": TZ,
                "CDR_ETL_SYNC_INITIAL_LOOKBACK": "3h",
            }
            run_child(["migrate"], single)
            run_child(["--help"], single)  # fills the bytecode cache if need be
            python = bare_python(args.runs)
            help_s, help_rss, _ = timed(["--help"], single, args.runs)
            status_s, status_rss, _ = timed(["status"], single, args.runs)
            run_child(["sync"], single)
            sync_s, sync_rss, _ = timed(["sync"], single, args.runs)
            out.write(
                f"cdr-etl command line, whole processes, median of {args.runs} "
                f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
                f"  python -c pass        {python:6.3f} s\n"
                f"  cdr-etl --help        {help_s:6.3f} s  peak RSS {help_rss:5.1f} MiB\n"
                f"  cdr-etl status        {status_s:6.3f} s  peak RSS {status_rss:5.1f} MiB\n"
                f"  cdr-etl sync (idle)   {sync_s:6.3f} s  peak RSS {sync_rss:5.1f} MiB\n"
            )
            out.flush()
            if args.accounts:
                toml = Path(tmp) / "many.toml"
                accounts_toml(toml, server.url, many, args.concurrency)
                env = {**base, "CDR_ETL_CONFIG": str(toml)}
                env.update({f"PW_{a.username}": a.password for a in many})
                first = run_child(["sync"], env)
                if first.returncode != 0:
                    raise SystemExit(f"sync of many accounts failed:\n{first.output[-2000:]}")
                idle_s, idle_rss, _ = timed(["sync"], env, max(3, args.runs // 2))
                daemon_s, daemon_rss = daemon_until_synced(env, url, args.accounts)
                out.write(
                    f"{args.accounts} accounts, sync.concurrency {args.concurrency}\n"
                    f"  first sync (3 h each) {first.seconds:6.2f} s  peak RSS "
                    f"{first.peak_rss_mib:5.1f} MiB\n"
                    f"  sync, nothing new     {idle_s:6.2f} s  peak RSS {idle_rss:5.1f} MiB\n"
                    f"  daemon, all synced    {daemon_s:6.2f} s  RSS high-water "
                    f"{daemon_rss:5.1f} MiB\n"
                )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
