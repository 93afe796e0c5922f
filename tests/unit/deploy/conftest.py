from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


@pytest.fixture(scope="session")
def exported_names() -> set[str]:
    """Every series name paycore can export: the families registered once the API app, the
    worker and every capability are imported (suffixes `_total`, `_bucket`, ... included)."""
    import paycore.app
    import paycore.worker  # noqa: F401  (both register their families on import)
    from paycore.platform.observability import metrics

    return metrics.family_sample_names()
