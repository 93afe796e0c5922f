"""MON-5, MON-3/MON-8: recording and alert rules as code, checked and unit-tested with promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.conftest import PROMETHEUS, ROOT
from tests.unit.deploy.promql import metric_names

pytestmark = pytest.mark.unit

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing (apt-get install prometheus; .ci/run installs it)"
)
RULE_FILES = [PROMETHEUS / "rules.yml", PROMETHEUS / "alerts.yml"]
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return _rules(PROMETHEUS / "alerts.yml")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_rule_files_pass_promtool_check() -> None:
    if PROMTOOL is None:
        pytest.skip("promtool missing")
    result = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_prometheus_config_loads_the_rules_and_scrapes_both_roles() -> None:
    assert PROMTOOL is not None
    config_path = PROMETHEUS / "prometheus.yml"
    result = subprocess.run(
        [PROMTOOL, "check", "config", config_path.name],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = _load(config_path)
    assert config["rule_files"] == ["rules.yml", "alerts.yml"]
    assert {job["job_name"] for job in config["scrape_configs"]} == {"paycore", "paycore-worker"}


@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_roadmap_alerts_exist_with_severity_tier_and_runbook() -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    roadmap = {
        "GatewayCircuitOpen": "critical",
        "DbPoolCritical": "critical",
        "DbPoolExhausted": "critical",
        "PaymentSuccessRateBelowSLO": "critical",
        "PaymentP99LatencyAboveSLO": "critical",
        "ServiceDown": "critical",
        "ErrorBudgetCriticalBurn": "critical",
        "PaymentsUnknownOutcome": "warning",
        "PaymentLatencyHigh": "warning",
        "ErrorBudgetFastBurn": "warning",
        "GatewayErrorsAboveSLO": "warning",
        "DbPoolHighUtilization": "warning",
        "DbPoolFrequentlyEmpty": "warning",
        "WebhookFailureRateHigh": "warning",
        "AchVerificationFailureRateHigh": "warning",
        "MemoryUsageHigh": "warning",
        "EventLoopLagHigh": "warning",
        "GcPausesLong": "warning",
        "HighFileDescriptorUsage": "warning",
        "TaskLeakSuspected": "warning",
        "HighErrorLogRate": "warning",
        "LogRecordsDropped": "warning",
        "CacheHitRateLow": "info",
        "DbPoolCapacity": "info",
        "HighPaymentVolume": "info",
    }
    missing = sorted(set(roadmap) - set(alerts))
    assert missing == []
    tiers = {"critical": "p0", "warning": "p1", "info": "p2"}
    for name, rule in alerts.items():
        labels, annotations = rule["labels"], rule["annotations"]
        if name in roadmap:
            assert labels["severity"] == roadmap[name], name
        assert labels["tier"] == tiers[labels["severity"]], name
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}", name


def test_burn_rate_alerts_use_a_long_and_a_short_window() -> None:
    alerts = {rule["alert"]: rule["expr"] for rule in _alerts()}
    assert "burn_rate1h > 10" in alerts["ErrorBudgetCriticalBurn"]
    assert "burn_rate5m > 10" in alerts["ErrorBudgetCriticalBurn"]
    assert "burn_rate6h > 5" in alerts["ErrorBudgetFastBurn"]
    assert "burn_rate30m > 5" in alerts["ErrorBudgetFastBurn"]
    assert "slo_latency:burn_rate1h" in alerts["PaymentLatencyBudgetFastBurn"]
    assert "slo_latency:burn_rate5m" in alerts["PaymentLatencyBudgetFastBurn"]


def test_critical_alerts_are_evaluated_every_30_seconds() -> None:
    groups = {g["name"]: g for g in _load(PROMETHEUS / "alerts.yml")["groups"]}
    assert groups["paycore-critical"]["interval"] == "30s"
    assert groups["paycore-warning"]["interval"] == "1m"
    assert groups["paycore-info"]["interval"] == "5m"
    for group in groups.values():
        severities = {rule["labels"]["severity"] for rule in group["rules"]}
        assert len(severities) == 1, group["name"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert sorted(names - firing) == [], "alerts never shown firing"
    assert sorted(names - quiet) == [], "alerts never shown quiet"


def test_every_alert_has_a_runbook_section() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    missing = [rule["alert"] for rule in _alerts() if rule["alert"].lower() not in anchors]
    assert missing == []
    for alert in _alerts():
        section = text.split(f"### {alert['alert']}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Meaning**", "**Confirm**", "**Act**"):
            assert part in section, (alert["alert"], part)


def test_every_metric_in_rules_and_alerts_is_exported(exported_names: set[str]) -> None:
    recorded = {rule["record"] for rule in _rules(PROMETHEUS / "rules.yml")}
    known = exported_names | recorded | {"up", "ALERTS"}
    unknown: dict[str, set[str]] = {}
    for path in RULE_FILES:
        for rule in _rules(path):
            missing = metric_names(rule["expr"]) - known
            if missing:
                unknown[rule.get("record") or rule["alert"]] = missing
    assert unknown == {}


def test_recording_rules_use_the_roadmap_names() -> None:
    recorded = {rule["record"] for rule in _rules(PROMETHEUS / "rules.yml")}
    for window in ("5m", "1h", "6h", "1d", "3d", "30d"):
        assert f"paycore:availability_error_ratio:rate{window}" in recorded
    for window in ("1h", "6h", "1d", "3d"):
        assert f"paycore:slo_availability:burn_rate{window}" in recorded
    for name in (
        "paycore:slo_availability:budget_remaining",
        "paycore:payment_success_ratio:rate5m",
        "paycore:payment_success_ratio:rate1h",
        "paycore:payment_latency:p50_5m",
        "paycore:payment_latency:p99_5m",
        "paycore:gateway_error_ratio:rate1h",
        "paycore:db_pool_utilization:ratio",
        "paycore:cache_hit_ratio:rate30m",
        "paycore:fd_utilization:ratio",
        "paycore:ach_return_rate:max",
    ):
        assert name in recorded, name


def test_alertmanager_routes_by_tier() -> None:
    config = _load(PROMETHEUS / "alertmanager.yml")
    route = config["route"]
    assert route["group_by"] == ["alertname", "severity"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("10s", "5m", "4h")
    by_tier = [(r["matchers"], r["receiver"], r.get("continue", False)) for r in route["routes"]]
    assert by_tier[0] == (['tier="p0"'], "pager", True)
    assert by_tier[1] == (['tier="p0"'], "slack-critical", False)
    assert by_tier[2][:2] == (['tier="p1"'], "slack-warnings")
    assert by_tier[3][:2] == (['tier="p2"'], "email-digest")
    assert route["routes"][3]["group_interval"] == "24h"
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["slack-critical"]["slack_configs"][0]["channel"] == "#alerts-critical"
    assert receivers["slack-warnings"]["slack_configs"][0]["channel"] == "#alerts-warnings"
    secrets = yaml.safe_dump(config)
    assert "_file:" in secrets and "hooks.slack.com" not in secrets  # secrets come from files
    amtool = shutil.which("amtool")
    if amtool is not None:
        result = subprocess.run(
            [amtool, "check-config", str(PROMETHEUS / "alertmanager.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_promql_name_extraction() -> None:
    assert metric_names('sum by (le) (rate(foo_bucket{a="b"}[5m])) / on (x) group_left bar') == {
        "foo_bucket",
        "bar",
    }
    assert metric_names("paycore:x:rate5m > 10 and paycore:y > bool 2") == {"paycore:x:rate5m", "paycore:y"}
    assert metric_names('label_values(up{job="paycore"}, instance)') == {"up", "instance"}
