"""Runtime settings updates (the control API's validation)."""

from __future__ import annotations

from datetime import time

import pytest

from paycore.epx_sim.control import BadRequest, apply_settings
from paycore.epx_sim.model import Settings

pytestmark = pytest.mark.unit


def test_apply_settings() -> None:
    s = Settings()
    apply_settings(
        s,
        {
            "duplicate_mode": "replay",
            "storage_code": "85",
            "batch_cutoff": "17:30",
            "single_capture": True,
            "latency_ms": 5,
            "north_page_cap": 3,
            "rate_limit_rps": 2,
        },
    )
    assert s.duplicate_mode == "replay" and s.storage_code == "85" and s.batch_cutoff == time(17, 30)
    assert s.single_capture and s.latency_ms == 5.0 and s.north_page_cap == 3 and s.rate_limit_rps == 2.0
    apply_settings(s, {"batch_cutoff": None, "rate_limit_rps": None})
    assert s.batch_cutoff is None and s.rate_limit_rps is None


@pytest.mark.parametrize(
    "body",
    [
        {"duplicate_mode": "maybe"},
        {"storage_code": "01"},
        {"strict": "yes"},
        {"auth_lapse_days": -1},
        {"latency_ms": True},
        {"batch_cutoff": "25:99"},
        {"colour": "blue"},
    ],
)
def test_invalid_settings(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        apply_settings(Settings(), body)
