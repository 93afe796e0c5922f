"""The container image and deployment manifests hold the roadmap's operational rules (QW-11,
RES-10, RES-M2, the sizing rule) and name only settings paycore knows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from paycore.config import variables

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
KNOWN = {name for name, _, _ in variables()}


def k8s_docs():
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "paycore.yaml").read_text()) if d]


def test_image_is_two_stage_non_root_and_utc():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2
    assert re.search(r"^USER 1000$", dockerfile, re.M)
    assert "TZ=UTC" in dockerfile and "PGTZ=UTC" in dockerfile
    assert "gcc" not in dockerfile.split("FROM python:3.11-slim-bookworm\n", 1)[1]  # no compilers at runtime


def test_kubernetes_pods_are_non_root_with_probes_and_a_grace_period():
    deployments = [d for d in k8s_docs() if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"paycore-api", "paycore-worker"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"]
        assert pod["terminationGracePeriodSeconds"] >= 40  # ≥ the 30 s shutdown budget + pre-stop
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    api = next(d for d in deployments if d["metadata"]["name"] == "paycore-api")
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_connection_budget_and_settings_are_known():
    config = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")["data"]
    assert int(config["PAYCORE_WORKERS"]) * int(config["PAYCORE_DB_MAX_CONNS"]) <= int(
        config["PAYCORE_DB_CONN_BUDGET"]
    )
    assert set(config) <= KNOWN
    compose = (ROOT / "deploy" / "compose.yaml").read_text()
    named = set(re.findall(r"\b(PAYCORE_[A-Z0-9_]+|DATABASE_URL)\b", compose))
    assert named <= KNOWN, named - KNOWN
    services = yaml.safe_load(compose)["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
