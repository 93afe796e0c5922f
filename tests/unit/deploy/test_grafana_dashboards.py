"""MON-7: Grafana dashboards as JSON: they load, match the dashboard schema paycore relies on, and
query only metrics paycore exports (or records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.deploy.conftest import GRAFANA, PROMETHEUS
from tests.unit.deploy.promql import metric_names

pytestmark = pytest.mark.unit

DASHBOARDS = sorted(GRAFANA.glob("paycore-*.json"))
SCHEMA = json.loads((GRAFANA / "dashboard.schema.json").read_text())


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_the_four_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} == {
        "paycore-executive.json",
        "paycore-slo.json",
        "paycore-operational.json",
        "paycore-runtime.json",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_the_schema(path: Path) -> None:
    jsonschema.validate(_load(path), SCHEMA)


def test_a_broken_dashboard_is_rejected() -> None:
    broken = _load(DASHBOARDS[0])
    broken["panels"][1]["targets"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_ids_unique_and_layout_fits(path: Path) -> None:
    dashboard = _load(path)
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # no two panels overlap
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (area & cells), panel["title"]
        cells |= area


def test_uids_are_unique() -> None:
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_dashboards_cover_business_latency_pool_gateway_and_circuit() -> None:
    exprs = {
        p.name: " ".join(t["expr"] for panel in _panels(_load(p)) for t in panel.get("targets", []))
        for p in DASHBOARDS
    }
    assert "payment_amount_cents_total" in exprs["paycore-executive.json"]
    assert "payment_success_ratio" in exprs["paycore-executive.json"]
    assert "payment_declines_total" in exprs["paycore-executive.json"]
    for name in ("budget_remaining", "burn_rate1h", "burn_rate6h", "burn_rate1d", "burn_rate3d", "p99_5m"):
        assert name in exprs["paycore-slo.json"], name
    for name in (
        "db_pool_acquired_connections",
        "db_pool_acquire_duration_seconds_bucket",
        "gateway_request_duration_seconds_bucket",
        "circuit_breaker_state",
        "http_request_duration_seconds_bucket",
        "webhook_deliveries_total",
    ):
        assert name in exprs["paycore-operational.json"], name
    for name in (
        "process_resident_memory_bytes",
        "event_loop_lag_seconds",
        "python_gc_pause_seconds_bucket",
        "asyncio_tasks",
        "fd_utilization",
    ):
        assert name in exprs["paycore-runtime.json"], name


def test_every_metric_a_panel_queries_is_exported(exported_names: set[str]) -> None:
    recorded = {
        rule["record"]
        for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    known = exported_names | recorded | {"up"}
    unknown: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        dashboard = _load(path)
        queries = [t["expr"] for panel in _panels(dashboard) for t in panel.get("targets", [])]
        queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        for query in queries:
            missing = metric_names(query) - known - {"instance"}
            if missing:
                unknown[f"{path.name}: {query[:60]}"] = missing
    assert unknown == {}
