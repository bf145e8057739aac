"""deploy/prometheus and deploy/grafana stay true to the gateway: the alert rules pass their
promtool unit tests, a live /metrics passes `promtool check metrics`, and every metric the
dashboard and the alerts name is one a running gateway exposes (so neither can drift).
promtool comes from the OS package `prometheus` (.ci/run installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import CLIENT_KEY, GatewayProcess, require

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / "deploy/prometheus"
GRAFANA = REPO / "deploy/grafana"
DASHBOARD = GRAFANA / "dashboards/llm-gateway.json"
COMPOSE = REPO / "deploy/docker-compose.yml"
# Prometheus' own series, not the gateway's.
NOT_OURS = {"up"}
_NAME = re.compile(r"\b(gateway_[a-z0-9_]+|process_[a-z0-9_]+|python_[a-z0-9_]+)\b")
# Grafana's variables, as a query would see them once Grafana filled them in.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}


def promtool() -> str:
    found = shutil.which("promtool")
    require(None if found else "promtool is not installed (apt-get install -y prometheus)")
    assert found is not None
    return found


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exposed_names(metrics: str) -> set[str]:
    """Every series name /metrics can carry: each family's name and its suffixes."""
    names = set()
    for line in metrics.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            elif kind == "counter" and not name.endswith("_total"):
                names |= {name + "_total", name + "_created"}
    return names


@pytest.fixture(scope="module")
def live_metrics(gateway: GatewayProcess) -> str:
    """/metrics of a gateway that has served real traffic: plain, streamed, refused."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "metrics, please"}]
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a stream"}], stream=True
    )
    for _ in stream:
        pass
    refused = httpx.post(gateway.base_url + "/chat/completions", json={}, headers={"api-key": "x"})
    assert refused.status_code == 401
    httpx.get(gateway.url + "/readyz")  # the readiness gauges
    return httpx.get(gateway.url + "/metrics").text


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    tool = promtool()
    checked = run(tool, "check", "rules", "deploy/prometheus/alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    tested = run(tool, "test", "rules", "deploy/prometheus/tests.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = run(tool, "check", "config", "deploy/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_entry() -> None:
    tests = yaml.safe_load((PROMETHEUS / "tests.yml").read_text())["tests"]
    tested: dict[str, set[bool]] = {}
    for case in tests:
        for check in case["alert_rule_test"]:
            tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    operations = (REPO / "docs/OPERATIONS.md").read_text()
    for rule in alert_rules():
        name = rule["alert"]
        # each alert is shown both firing and quiet
        assert tested.get(name) == {True, False}, f"{name}: tests.yml must show it fire and not"
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{name.lower()}"
        assert f"### {name}\n" in operations, f"docs/OPERATIONS.md has no section for {name}"
    wanted = {
        "ProviderDown", "ProviderErrorRateHigh", "BreakerOpen", "LatencyP99High",
        "BudgetWarning", "BudgetExhausted", "RedisErrors", "GatewayNotReady",
    }  # fmt: skip
    assert wanted <= {r["alert"] for r in alert_rules()}


def test_live_metrics_pass_promtool_check_metrics(live_metrics: str) -> None:
    checked = run(promtool(), "check", "metrics", stdin=live_metrics)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_dashboard_and_alerts_name_only_metrics_the_gateway_exposes(live_metrics: str) -> None:
    exposed = exposed_names(live_metrics)
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for name in _NAME.findall(expr):
            used.setdefault(name, set()).add("dashboard")
    for rule in alert_rules():
        for name in _NAME.findall(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    missing = {name: where for name, where in used.items() if name not in exposed - NOT_OURS}
    assert not missing, f"not in a live gateway's /metrics: {missing}"
    # What the dashboard is for (issue 12): each of these is on it.
    on_board = {n for n, where in used.items() if "dashboard" in where}
    assert on_board >= {
        "gateway_requests_total", "gateway_upstream_errors_total",
        "gateway_request_duration_seconds_bucket", "gateway_time_to_first_byte_seconds_bucket",
        "gateway_routing_decisions_total", "gateway_privacy_findings_total",
        "gateway_cache_lookups_total", "gateway_cache_saved_usd_total",
        "gateway_cache_saved_tokens_total", "gateway_spend_usd_total", "gateway_rejections_total",
        "gateway_breaker_state", "gateway_in_flight_requests", "gateway_budget_used_ratio",
    }  # fmt: skip


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule, Grafana's variables filled in."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in _GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"an unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool(), "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_is_provisioned_with_the_dashboard_in_compose() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "llm-gateway"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    (source,) = load(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"]
    assert variables["datasource"]["current"]["value"] == source["uid"]
    (provider,) = load(GRAFANA / "provisioning/dashboards/llm-gateway.yml")["providers"]
    services = load(COMPOSE)["services"]
    grafana = services["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    prometheus = services["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert source["url"] == "http://prometheus:9090"
    scrape = load(PROMETHEUS / "prometheus.yml")
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert job["job_name"] == "llm-gateway"  # the alerts' up{job="llm-gateway"}
    assert services["gateway"]["environment"]["GATEWAY_ADMIN_KEYS"] == "${GATEWAY_ADMIN_KEYS:-}"


def test_kubernetes_service_monitor_and_disruption_budget_select_the_gateway() -> None:
    k8s = REPO / "deploy/kubernetes"
    deployment = load(k8s / "deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = load(k8s / "service.yaml")
    pdb = load(k8s / "pdb.yaml")
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "pdb.yaml" in load(k8s / "kustomization.yaml")["resources"]
    monitor = load(k8s / "monitoring/servicemonitor.example.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The job label the Operator gives is the Service's name: the alerts' up{job=...}.
    assert service["metadata"]["name"] == "llm-gateway"
