"""What operators get beside the daemon: alert rules and Grafana dashboards, checked against
the metrics the daemon really exports and the views a migrated database really has."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, insert, text

from etl.backfill import backfill_account
from etl.config import AccountConfig
from etl.db.accounts import upsert_accounts
from etl.db.models import runs
from etl.live import snapshot_live
from etl.metrics import Metrics
from tests.simworld import local, utc, world

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "cdr-etl.yml"
METRIC = re.compile(r"\b(cdr_etl_\w+|up)\b(?=\s*[{\[)]|\s*$|\s*[-+*/<>=])")
START = utc(2024, 6, 5, 22)  # 16:00 in Costa Rica


def exported() -> set[str]:
    """Every series name the daemon's /metrics can carry (counters with `_total`)."""
    names = {"up"}
    for family in Metrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p["targets"] if "expr" in t]


def sql_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["rawSql"]) for p in board["panels"] for t in p["targets"]
            if "rawSql" in t]  # fmt: skip


def test_every_alert_names_exported_metrics_and_explains_itself() -> None:
    """Each rule: an expression over exported metrics only, a summary and a runbook."""
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "CdrEtlDaemonDown", "CdrEtlLagBeyondPasses", "CdrEtlRunsFailing",
        "CdrEtlAuthenticationRefused", "CdrEtlNoSuccessfulSync", "CdrEtlNeverSynced",
        "CdrEtlLivePollingFailing", "CdrEtlRejectsRising",
    }  # fmt: skip
    known = exported()
    for rule in rules:
        names = set(METRIC.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")


def test_dashboards_use_provisioned_sources_and_exported_metrics() -> None:
    """Both dashboards parse, every panel has a query on a provisioned data source, and
    every PromQL expression names exported metrics only."""
    assert {p.name for p in DASHBOARDS} == {"calls.json", "sync-health.json"}
    uids = {s["uid"] for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    known = exported()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"]
        assert board["panels"]
        for panel in board["panels"]:
            assert panel["targets"], (path.name, panel["title"])
            assert panel["datasource"]["uid"] in uids
        for expr in expressions(board):
            names = set(METRIC.findall(expr))
            assert names, (path.name, expr)
            assert names <= known, (path.name, expr, names - known)


def grafana_to_sql(sql: str, account_id: int, start: str, end: str) -> str:
    """Grafana's macros and the $account variable, substituted as Grafana would."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{start}'::timestamptz")
    sql = sql.replace("$__timeTo()", f"'{end}'::timestamptz")
    return sql.replace("$account", str(account_id))


@pytest.fixture
def loaded(engine: Engine) -> int:
    """Two days of a busy simulated account, backfilled, and one live snapshot."""
    with world(engine, now=START, calls_per_hour=300, days=3) as w:
        end = local(START, w.account.timezone).replace(minute=0)
        result = backfill_account(
            engine, w.source(), "main", end - timedelta(days=2), end, timedelta(hours=6), "t"
        )
        assert result.status == "ok", result.error
        live = snapshot_live(engine, w.source(), "main", w.clock(), "t")
        assert live.status == "ok", live.error
        return w.account_id


def test_every_sql_panel_runs_as_the_reader_role_and_returns_rows(
    engine: Engine, loaded: int
) -> None:
    """Each SQL panel of the calls dashboard, macros substituted, runs as cdr_reader on
    simulated data and returns rows."""
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "calls.json").read_text())
    queries = sql_queries(board)
    assert len(queries) >= 8
    start, end = START - timedelta(days=3), START + timedelta(hours=1)
    with engine.connect() as conn:
        for title, sql in queries:
            with conn.begin():
                conn.execute(text("SET LOCAL ROLE cdr_reader"))
                rows = conn.execute(
                    text(grafana_to_sql(sql, loaded, start.isoformat(), end.isoformat()))
                ).all()
                assert rows, title
                assert any(value is not None for value in rows[0]), title


def test_the_calls_dashboard_reads_the_kept_figures_only() -> None:
    """NER, service level and concurrency come from the views' kept columns, and no panel
    re-derives calls from cdrs or v_inbound_calls per refresh (their cost grows with the table)."""
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "calls.json").read_text())
    sql = " ".join(q for _, q in sql_queries(board))
    for needed in (
        "ner",
        "answered_within_sl",
        "abandoned",
        "v_concurrency_minute",
        "peak_concurrent",
    ):
        assert re.search(rf"\b{needed}\b", sql), needed
    for slow in ("cdrs", "v_inbound_calls", "v_call_legs"):
        assert not re.search(rf"\bFROM {slow}\b", sql), slow


def test_a_started_daemon_remembers_the_last_successes(engine: Engine) -> None:
    """The last-success gauge starts from the runs table (the newest ok run per account and
    kind), so a restart does not hide how long an account has gone without a sync; an
    account that never succeeded has none (CdrEtlNeverSynced watches for that)."""
    ids = upsert_accounts(
        engine, [AccountConfig(name=n, username="8569841") for n in ("old", "never", "other")]
    )
    done = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(runs),
            [
                {"run_id": "r1", "account_id": ids["old"], "kind": "sync", "status": "ok",
                 "finished_at": done - timedelta(hours=5)},
                {"run_id": "r2", "account_id": ids["old"], "kind": "sync", "status": "ok",
                 "finished_at": done},
                {"run_id": "r3", "account_id": ids["old"], "kind": "sync", "status": "failed",
                 "finished_at": done + timedelta(hours=1)},
                {"run_id": "r4", "account_id": ids["never"], "kind": "sync", "status": "failed",
                 "finished_at": done},
                {"run_id": "r5", "account_id": ids["other"], "kind": "sync", "status": "ok",
                 "finished_at": done},
            ],
        )  # fmt: skip
    metrics = Metrics()
    metrics.seed_last_success(engine, ["old", "never"])
    value = metrics.registry.get_sample_value
    name = "cdr_etl_last_success_timestamp_seconds"
    assert value(name, {"account": "old", "kind": "sync"}) == done.timestamp()
    assert value(name, {"account": "never", "kind": "sync"}) is None
    assert value(name, {"account": "other", "kind": "sync"}) is None  # not this daemon's
