"""The container stack, checked statically (no Docker engine runs here): the compose file
and the Dockerfile agree with the code: commands exist, variables are known, ports match."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl.cli import cli
from etl.config import KNOWN_ENV, DaemonSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """The compose file validates against the Compose Specification's JSON schema
    (tests/schemas/compose-spec.json, vendored from compose-spec/compose-spec at commit
    170098ba07d9, Apache-2.0), so no Docker tool is needed to check it; `.ci/run` also runs
    Debian's `docker-compose config -q` on it."""
    import jsonschema

    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_check_can_fail() -> None:
    """The schema check is not vacuous: a misspelt key or a wrong type is refused."""
    import jsonschema

    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    bad = {"services": {"db": {"image": "postgres:16", "restart_policy": "always"}}}
    assert list(validator.iter_errors(bad))
    bad = {"services": {"db": {"image": "postgres:16", "ports": "5432:5432"}}}
    assert list(validator.iter_errors(bad))


def test_services_and_their_order(services: dict[str, Any], compose: dict[str, Any]) -> None:
    """Postgres 16 with a healthcheck and a named volume; migrate once; then the daemon."""
    db = services["db"]
    assert re.match(r"postgres:16(\.\d+)?", db["image"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("daemon", "daemon-sim"):
        depends = services[name]["depends_on"]
        assert depends["db"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert "cmw_password" in services["daemon"]["secrets"]
    assert services["daemon"]["environment"]["CDR_ETL_PASSWORD_FILE"] == "/run/secrets/cmw_password"
    assert services["sim"]["profiles"] == ["sim"]
    assert services["daemon-sim"]["profiles"] == ["sim"]


def test_every_command_is_a_cdr_etl_command(services: dict[str, Any]) -> None:
    """Each service built from our image runs a command the CLI has."""
    for name, service in services.items():
        if service.get("image") != "cdr-etl:latest":
            continue
        command = service["command"]
        assert command[0] in cli.commands, f"{name}: unknown command {command[0]}"


def test_every_variable_is_one_the_code_reads(services: dict[str, Any]) -> None:
    """No CDR_ETL_* variable in the compose file is unknown to the settings."""
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("CDR_ETL_"):
                assert variable in KNOWN_ENV, f"{name}: {variable} is not a setting"


def test_ports_agree(services: dict[str, Any]) -> None:
    """The daemon listens where the compose file publishes and health-checks it, and the
    simulated daemon asks the simulator on the port it serves."""
    default_port = DaemonSettings().port
    for name in ("daemon", "daemon-sim"):
        service = services[name]
        port = int(service["environment"]["CDR_ETL_DAEMON_PORT"])
        assert port == default_port
        assert service["ports"][0].endswith(f":{port}")
        assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["environment"]["CDR_ETL_DAEMON_HOST"] == "0.0.0.0"
    sim_command = services["sim"]["command"]
    sim_port = sim_command[sim_command.index("--port") + 1]
    assert services["daemon-sim"]["environment"]["CDR_ETL_API_URL"] == (
        f"http://sim:{sim_port}/getCdrs.php"
    )


def test_secret_defaults_exist(compose: dict[str, Any]) -> None:
    """The development database password file the compose file defaults to is there."""
    default = re.search(r":-([^}]+)}", compose["secrets"]["db_password"]["file"])
    assert default
    assert (ROOT / default[1]).is_file()


def test_the_grafana_profile(services: dict[str, Any]) -> None:
    """Prometheus scrapes the daemons on their port and loads the alert rules; Grafana is
    provisioned from deploy/grafana and reads the database as a login granted cdr_reader;
    both listen on loopback only."""
    profile = {n for n, s in services.items() if "grafana" in s.get("profiles", [])}
    assert profile == {"prometheus", "grafana", "grafana-login"}
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    port = DaemonSettings().port
    assert job["static_configs"][0]["targets"] == [f"daemon:{port}", f"daemon-sim:{port}"]
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for path in ("deploy/prometheus/alerts.yml", "deploy/grafana/provisioning",
                 "deploy/grafana/dashboards"):  # fmt: skip
        assert f"./{path}:" in mounts
        assert (ROOT / path).exists()
    for name in profile - {"grafana-login"}:
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
    login = services["grafana-login"]["command"][0]
    assert "GRANT cdr_reader TO grafana" in login
    sources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/cdr-etl.yml").read_text()
    )["datasources"]
    assert {s["uid"]: s.get("user") for s in sources} == {
        "prometheus": None,
        "cdr-postgres": "grafana",
    }


def test_dockerfile_is_pinned_slim_non_root_and_runtime_only() -> None:
    """Slim Python base pinned by version, a non-root user, the daemon by default, and
    no development dependencies."""
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases
    assert all(re.fullmatch(r"python:3\.1[1-3]\.\d+-slim-\w+", base) for base in bases)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert user[-1] not in ("root", "0")
    assert '"cdr-etl"' in re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)[1]  # type: ignore[index]
    assert re.search(r'^CMD \["daemon"\]', text, re.MULTILINE)
    assert "--no-dev" in text
    assert "--extra" not in text
    assert f"EXPOSE {DaemonSettings().port}" in text
    assert "/healthz" in text


def test_the_simulated_daemon_keeps_its_own_account(services: dict[str, Any]) -> None:
    """The `sim` profile's daemon reads the mounted deploy/sim/sim.toml: one account,
    not named `default` (the real daemon's, from CDR_ETL_USERNAME), with the simulator's
    password from its environment; so both daemons can share the database unmixed."""
    service = services["daemon-sim"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert not {"CDR_ETL_USERNAME", "CDR_ETL_PASSWORD", "CDR_ETL_PASSWORD_FILE"} & set(env)
    mounts = dict(volume.split(":")[:2] for volume in service["volumes"])
    host = {inside: outside for outside, inside in mounts.items()}[env["CDR_ETL_CONFIG"]]
    settings = load_settings({**env, "CDR_ETL_CONFIG": str(ROOT / host)})
    ((name, account),) = ((a.name, a) for a in settings.accounts)
    assert name == "sim"  # never the real daemon's `default`
    assert account.password_env in env  # the simulator's password, set beside the file
    real = load_settings({"CDR_ETL_USERNAME": "7000001", "CDR_ETL_PASSWORD": "x"})
    assert [a.name for a in real.accounts] == ["default"]


def test_the_documented_compose_commands_name_the_simulated_services() -> None:
    """A bare `up` with the `sim` profile would start the real daemon too: every documented
    command that turns the profile on names the services it wants."""
    texts = {p: p.read_text() for p in (ROOT / "README.md", COMPOSE)}
    demo = ast.parse((ROOT / "etl" / "demo.py").read_text())  # its strings, joined as run
    texts[ROOT / "etl" / "demo.py"] = "\n".join(
        node.value
        for node in ast.walk(demo)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )
    for path, text in texts.items():
        for line in re.findall(r"docker compose --profile sim[^\n`]*", text):
            assert "daemon-sim" in line, f"{path.name}: {line}"
